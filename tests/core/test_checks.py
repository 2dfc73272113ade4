"""The shared checkers: each returns what it was given (converted where it says so) or raises an
MtkitError that names the argument, what was given and what was expected."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mtkit.core.checks import (
    arrays_as_tensors,
    as_tensor,
    check_at_most,
    check_class_labels,
    check_encoded,
    check_finite,
    check_instance,
    check_int_list,
    check_model,
    check_model_inputs,
    check_names,
    check_number,
    check_string,
    check_unique,
)
from mtkit.core.utils import MtkitError


@pytest.mark.parametrize(
    "value, options, message",
    [
        (math.nan, {}, "x must be a finite number, got nan"),
        (math.inf, {"low": 0}, "x must be a finite number >= 0, got inf"),
        ("0.5", {}, "x must be a finite number, got '0.5'"),
        (True, {}, "x must be a finite number, got True"),
        (None, {}, "x must be a finite number, got None"),
        (0, {"low": 0, "high": 1, "low_open": True}, r"x must be a finite number in \(0, 1\]"),
        (1, {"low": 0, "high": 1, "high_open": True}, r"in \[0, 1\), got 1"),
        (2.5, {"integer": True}, "x must be an integer, got 2.5"),
        (5, {"integer": True, "high": 3}, "x must be an integer <= 3, got 5"),
    ],
)
def test_check_number_refuses_what_is_not_a_number_in_range(value, options, message):
    with pytest.raises(MtkitError, match=message):
        check_number("x", value, **options)


def test_check_number_returns_python_numbers():
    assert check_number("x", np.float64(0.5), low=0, high=1) == 0.5
    assert type(check_number("x", np.float64(0.5))) is float
    assert check_number("x", np.int64(3), integer=True) == 3
    assert type(check_number("x", np.int64(3), integer=True)) is int


def test_check_finite_counts_nan_and_infinite_values():
    values = torch.tensor([1.0, math.nan, math.inf, -math.inf])
    with pytest.raises(
        MtkitError, match=r"data must be finite, but 1 value\(s\) are NaN and 2 inf"
    ):
        check_finite("data", values)
    with pytest.raises(MtkitError, match="are NaN and 1 infinite"):
        check_finite("data", np.array([[0.0, -np.inf]]))
    finite = torch.ones(3)
    assert check_finite("data", finite) is finite
    assert check_finite("ids", torch.ones(3, dtype=torch.long)) is not None  # ints: always


def test_check_class_labels_wants_integer_indices_in_range():
    assert check_class_labels("labels", torch.tensor([0, 2]), num_classes=3).tolist() == [0, 2]
    assert check_class_labels("labels", [1, 0]).dtype == np.int64
    for bad, message in [
        ([0.0, 1.0], r"labels must be integers .*astype\(int\)"),
        ([0, math.nan], "labels must be integers"),
        (["a", "b"], "labels must be integers"),
        ([True, False], "labels must be integers"),
        ([0, -2], "labels must be >= 0, got a label of -2"),
        ([0, 3], r"labels must be in \[0, 3\) for 3 classes, got a label of 3"),
        (5, "labels must be a 1-D sequence"),
        ([[0, 1]], r"labels must be 1-D with shape \(N,\)"),
    ]:
        with pytest.raises(MtkitError, match=message):
            check_class_labels("labels", bad, num_classes=3)
    with pytest.raises(MtkitError, match="expected 4 labels"):
        check_class_labels("labels", [0, 1], length=4)


def test_lists_names_and_uniqueness():
    assert check_int_list("seeds", range(3)) == [0, 1, 2]
    assert check_int_list("seeds", (np.int64(4),)) == [4]
    for bad, message in [
        (3, r"seeds must be a list of integers such as \[0, 1, 2\], got 3"),
        ("012", "seeds must be a list of integers"),
        ([], "seeds is empty"),
        ([0, 0], r"seeds must be distinct, but \[0\] appear more than once"),
        ([0, -1], "each of seeds must be an integer >= 0"),
        ([0.5], "each of seeds must be an integer"),
    ]:
        with pytest.raises(MtkitError, match=message):
            check_int_list("seeds", bad)
    with pytest.raises(MtkitError, match="each of k must be an integer >= 1"):
        check_int_list("k", [0], allow_zero=False)
    assert check_names("class_names", ["a", 1]) == ["a", "1"]
    with pytest.raises(MtkitError, match="must be a list of names"):
        check_names("class_names", "ab")
    with pytest.raises(MtkitError, match="must hold strings"):
        check_names("class_names", ["a", None])
    check_unique("x", [1, 2, 3])
    with pytest.raises(MtkitError, match=r"x must be distinct, but \[2\]"):
        check_unique("x", [2, 1, 2, 2])


def test_types_models_and_strings():
    model = nn.Linear(2, 2)
    assert check_model("model", model) is model
    with pytest.raises(MtkitError, match="model must be a torch nn.Module .*got str"):
        check_model("model", "model.pt")
    with pytest.raises(
        MtkitError, match=r"got type \(the class itself: create one, e.g. Linear\(\)"
    ):
        check_model("model", nn.Linear)
    with pytest.raises(MtkitError, match="x must be a dict, got list"):
        check_instance("x", [], dict, "a dict")
    assert check_string("name", "run") == "run"
    with pytest.raises(MtkitError, match="name must be a non-empty string, got ''"):
        check_string("name", "")
    with pytest.raises(MtkitError, match="k=9 is more than the 8 examples; use at most 8"):
        check_at_most("k", 9, 8, "examples")


def test_tensors_from_arrays_and_model_inputs():
    array = np.zeros((2, 3), dtype=np.float32)
    assert isinstance(as_tensor("x", array), torch.Tensor)
    with pytest.raises(MtkitError, match="x must be a tensor or a NumPy array, got list"):
        as_tensor("x", [[0.0]])
    with pytest.raises(MtkitError, match="got ndarray"):
        as_tensor("x", np.array(["a"], dtype=object))
    pair = arrays_as_tensors((array, np.array([0, 1])))
    assert all(isinstance(part, torch.Tensor) for part in pair)
    assert arrays_as_tensors("unchanged") == "unchanged"

    ids = torch.ones(2, 3, dtype=torch.long)  # N×L token ids: integers are right
    assert check_model_inputs("x", ids) is ids
    with pytest.raises(MtkitError, match="x must be float images N×C×H×W .*divide 0..255"):
        check_model_inputs("x", torch.ones(2, 1, 3, 3, dtype=torch.uint8))
    with pytest.raises(MtkitError, match="x must be finite"):
        check_model_inputs("x", torch.tensor([[math.nan, 0.0, 0.0]]))


def test_check_encoded_refuses_raw_texts():
    class Texts:
        texts = ["a"]

    with pytest.raises(MtkitError, match=r"data holds raw texts: .*tensors_for\(tokenizer\)"):
        check_encoded("data", Texts())
    assert check_encoded("data", (1, 2)) == (1, 2)
