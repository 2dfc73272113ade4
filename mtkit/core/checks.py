"""The checks every public function runs on what it is given, written once.

Each checker takes the argument's name (as the caller wrote it) and its value, and either
returns the value (sometimes converted: a NumPy array becomes a tensor) or raises MtkitError
with a message that names the argument, says what was given and what is expected:

    check_number        a finite real number, optionally an integer, within bounds
    check_instance      an object of a given type (a model, an Evaluation, ...)
    check_string        a non-empty string
    check_names         a list of distinct names (class names)
    check_int_list      a list of non-negative integers (seeds, labels per class), distinct
    check_finite        a tensor or array without NaN or ±inf
    check_images        a non-empty, finite N×C×H×W float image batch (or an ImageDataset's)
    as_tensor           a tensor, or a NumPy array turned into one (arrays_as_tensors: pairs)
    check_model_inputs  a batch a model can take: finite, and float if it is N×C×H×W images
    check_class_labels  1-D integer class indices in [0, num_classes)
    check_at_most       a count that must not exceed how many there are

check_positive and check_choice live in mtkit.core.utils and are re-exported here, so a module
imports every checker from one place.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from mtkit.core.utils import MtkitError, check_choice, check_positive


def shown(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: error messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounds_text(low, high, low_open: bool, high_open: bool) -> str:
    """ "in [0, 1)", "> 0", "<= 5", or "" for no bounds."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def check_number(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
):
    """Raise MtkitError unless `value` is a finite real number (an integer when `integer`; never
    a bool or a string) within the bounds; returns it (NumPy scalars as Python numbers)."""
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, (bool, np.bool_))
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        what = "an integer" if integer else "a finite number"
        bounds = _bounds_text(low, high, low_open, high_open)
        raise MtkitError(f"{name} must be {what}{bounds}, got {shown(value)}")
    return int(value) if integer else float(value) if isinstance(value, np.floating) else value


def check_instance(name: str, value, types, expected: str):
    """Raise MtkitError unless `value` is an instance of `types` (described as `expected`, e.g.
    "a torch nn.Module (the model)"); returns it. A class passed instead of an instance of it
    gets told to call it."""
    if isinstance(value, types):
        return value
    hint = ""
    if isinstance(value, type):
        hint = f" (the class itself: create one, e.g. {value.__name__}())"
    raise MtkitError(f"{name} must be {expected}, got {type(value).__name__}{hint}")


def check_model(name: str, value) -> nn.Module:
    """Raise MtkitError unless `value` is a torch nn.Module; returns it."""
    return check_instance(name, value, nn.Module, "a torch nn.Module (a model)")


def check_string(name: str, value) -> str:
    """Raise MtkitError unless `value` is a non-empty string; returns it."""
    if not isinstance(value, str) or not value:
        raise MtkitError(f"{name} must be a non-empty string, got {shown(value)}")
    return value


def check_names(name: str, values) -> list[str]:
    """A list of distinct names: strings, or numbers (turned into strings). A single string
    is refused ("ab" would become two names); returns the list of strings."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)):
        raise MtkitError(f"{name} must be a list of names, got {shown(values)}")
    for value in values:
        if not isinstance(value, (str, numbers.Integral)) or isinstance(value, bool):
            raise MtkitError(f"{name} must hold strings, got {shown(value)} in {shown(values)}")
    names = [str(value) for value in values]
    check_unique(name, names)
    return names


def check_unique(name: str, values) -> None:
    """Raise MtkitError naming the repeated entries when `values` holds one twice."""
    seen, repeated = set(), []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    if repeated:
        raise MtkitError(f"{name} must be distinct, but {repeated} appear more than once")


def check_int_list(name: str, values, *, allow_zero: bool = True, example: str = "[0, 1, 2]"):
    """A non-empty list of distinct non-negative (or positive) integers, from any iterable that
    is not a string or a single number; returns the list. A repeated value would count one run
    twice, so it is an error."""
    if isinstance(values, (str, bytes, numbers.Number)) or not hasattr(values, "__iter__"):
        raise MtkitError(
            f"{name} must be a list of integers such as {example}, got {shown(values)}"
        )
    values = list(values)
    if not values:
        raise MtkitError(f"{name} is empty: give at least one value, such as {example}")
    low = 0 if allow_zero else 1
    for value in values:
        check_number(f"each of {name}", value, integer=True, low=low)
    values = [int(value) for value in values]
    check_unique(name, values)
    return values


def check_at_most(name: str, value: int, available: int, what: str) -> int:
    """Raise MtkitError unless value ≤ available, e.g. "neighbours=100 is more than the 50
    training examples"; returns value."""
    if value > available:
        raise MtkitError(
            f"{name}={value} is more than the {available} {what}; use at most {available}"
        )
    return value


def as_tensor(name: str, data, expected: str = "a tensor or a NumPy array") -> torch.Tensor:
    """`data` as a tensor: a tensor as it is, a NumPy array of numbers converted; anything else
    (a list, a string, an array of objects) is an MtkitError naming `expected`."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray) and (data.dtype.kind in "biuf"):
        return torch.as_tensor(data)
    raise MtkitError(f"{name} must be {expected}, got {type(data).__name__}")


def arrays_as_tensors(data):
    """A NumPy array, or an (inputs, labels) pair of NumPy arrays, as tensors (what a PyTorch
    user would pass); anything else unchanged, for the caller to read or refuse."""
    if isinstance(data, np.ndarray):
        return as_tensor("data", data)
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], np.ndarray):
        return tuple(as_tensor("data", np.asarray(part)) for part in data)
    return data


def check_encoded(name: str, data):
    """Raise MtkitError for raw texts (a TextDataset) where token ids are needed, with the fix;
    returns `data`."""
    if hasattr(data, "texts"):
        raise MtkitError(
            f"{name} holds raw texts: encode them with the tokenizer the model was trained "
            "with first, e.g. dataset.tensors_for(tokenizer)"
        )
    return data


def check_finite(name: str, values):
    """Raise MtkitError when a float tensor or array holds NaN or ±inf, with how many of each;
    returns `values` unchanged. Integer data is always finite."""
    if isinstance(values, torch.Tensor):
        if not (values.is_floating_point() or values.is_complex()):
            return values
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return values
        nan, bad = int(torch.isnan(values).sum()), int((~finite).sum())
    else:
        array = np.asarray(values)
        if array.dtype.kind not in "fc":
            return values
        finite = np.isfinite(array)
        if finite.all():
            return values
        nan, bad = int(np.isnan(array).sum()), int((~finite).sum())
    raise MtkitError(
        f"{name} must be finite, but {nan} value(s) are NaN and {bad - nan} infinite (look for "
        "missing values or a failed normalisation upstream)"
    )


def check_images(name: str, images) -> torch.Tensor:
    """The N×C×H×W float tensor of an image tensor, a NumPy array or an ImageDataset (anything
    with `.images`; labels unused), checked to be non-empty and finite."""
    if hasattr(images, "images"):
        images = images.images
    tensor = as_tensor(name, images, "an N×C×H×W image tensor or an ImageDataset")
    if tensor.dim() != 4 or len(tensor) == 0 or not tensor.is_floating_point():
        raise MtkitError(
            f"{name} must be a non-empty float N×C×H×W image tensor or an ImageDataset, "
            f"got {tensor.dtype} of shape {tuple(tensor.shape)}"
        )
    return check_finite(name, tensor)


def check_model_inputs(name: str, inputs) -> torch.Tensor:
    """`inputs` as a tensor a model can take: finite, and an N×C×H×W image batch must be float
    (integer pixel values are refused, with the fix; N×L integer token ids are fine). Returns
    the tensor; the rest of the shape is the model's own check (it names what it expects)."""
    inputs = as_tensor(name, inputs, "a tensor (N×C×H×W images or N×L token ids)")
    if inputs.dim() == 4 and not inputs.is_floating_point():
        raise MtkitError(
            f"{name} must be float images N×C×H×W with values in [0, 1], got {inputs.dtype} of "
            f"shape {tuple(inputs.shape)}: divide 0..255 pixel values by 255 (or build an "
            "ImageDataset with ImageDataset.from_tensors, which does)"
        )
    return check_finite(name, inputs)


def check_class_labels(name: str, labels, *, length: int | None = None, num_classes=None):
    """1-D integer class indices, ≥ 0 (and < num_classes when given), as an int64 array.

    Floats (even 1.0), bools, strings and NaN are refused: labels are class indices; map class
    names to indices first. `length`, when given, is how many there must be.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, (str, bytes)) or np.ndim(labels) == 0:
        raise MtkitError(f"{name} must be a 1-D sequence of class indices, got {shown(labels)}")
    array = np.asarray(labels)
    if array.ndim != 1:
        raise MtkitError(f"{name} must be 1-D with shape (N,), got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise MtkitError(
            f"{name} must be integers (class indices 0..K−1), got dtype {array.dtype}"
            + (" (convert with .astype(int))" if array.dtype.kind == "f" else "")
        )
    if length is not None and len(array) != length:
        raise MtkitError(f"expected {length} {name} (one per example), got {len(array)}")
    if array.size and array.min() < 0:
        raise MtkitError(f"{name} must be >= 0, got a label of {int(array.min())}")
    if array.size and num_classes is not None and array.max() >= num_classes:
        raise MtkitError(
            f"{name} must be in [0, {num_classes}) for {num_classes} classes, "
            f"got a label of {int(array.max())}"
        )
    return array.astype(np.int64)


__all__ = [
    "MtkitError",
    "arrays_as_tensors",
    "as_tensor",
    "check_at_most",
    "check_choice",
    "check_class_labels",
    "check_encoded",
    "check_finite",
    "check_images",
    "check_instance",
    "check_int_list",
    "check_model",
    "check_model_inputs",
    "check_names",
    "check_number",
    "check_positive",
    "check_string",
    "check_unique",
    "shown",
]
