"""forward_in_batches and the input coercers: the one batched inference every stage uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mtkit.core.batches import as_inputs, as_labelled, forward_in_batches
from mtkit.core.utils import MtkitError
from mtkit.data import ImageDataset


def test_batches_in_eval_mode_in_any_order_come_back_in_the_inputs_order():
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))  # dropout would show in train mode
    inputs = torch.randn(10, 3)
    expected = model[0](inputs).detach()
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    for kwargs in ({}, {"order": order}, {"batch_size": 3}, {"batch_size": 4, "order": order}):
        assert torch.allclose(forward_in_batches(model, inputs, **kwargs), expected)
    assert model.training  # put back


def test_the_training_mode_comes_back_after_an_error_and_bad_calls_are_refused():
    model = nn.Linear(3, 2)

    def broken(batch):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        forward_in_batches(model, torch.randn(4, 3), fn=broken)
    assert model.training
    with pytest.raises(MtkitError, match="empty"):
        forward_in_batches(model, torch.randn(0, 3))
    with pytest.raises(MtkitError, match="batch_size"):
        forward_in_batches(model, torch.randn(4, 3), batch_size=0)


def test_inputs_and_labels_from_tensors_arrays_tuples_and_datasets():
    images, labels = torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 0, 1, 0, 1])
    dataset = ImageDataset.from_tensors(images, labels)
    assert torch.equal(as_inputs(images), images)
    assert torch.equal(as_inputs(images.numpy()), images)
    assert torch.equal(as_inputs(dataset), images)
    pairs = zip(as_labelled(dataset), (images, labels), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert torch.equal(as_labelled((images, labels))[1], labels)
    with pytest.raises(MtkitError, match="labelled data"):
        as_labelled(images)
    with pytest.raises(MtkitError, match="int64"):
        as_labelled((images, labels.float()))
    with pytest.raises(MtkitError, match="expected a tensor"):
        as_inputs("not data")
    with pytest.raises(MtkitError, match="tokenizer"):
        as_inputs(type("Texts", (), {"texts": ["a"]})())
    assert isinstance(as_inputs(np.zeros((2, 3), dtype=np.float32)), torch.Tensor)
