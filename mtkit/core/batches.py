"""Running a model over many inputs, and turning what a user passes into tensors.

Two chores every stage and every evaluation has, written once:

    forward_in_batches   model(inputs) in eval mode without gradients, batch by batch, the
                         outputs gathered on the CPU in the inputs' order; the model's training
                         mode is restored afterwards
    as_inputs            a tensor, an (inputs, labels) pair or a dataset → the input tensor
    as_labelled          the same → (inputs, int64 labels), with a clear error when there are
                         no labels (the unlabelled pool hides its labels on purpose)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mtkit.core.utils import MtkitError, check_positive

DEFAULT_MAX_LENGTH = 48  # TextDataset.tensors_for's default


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def forward_in_batches(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    batch_size: int = 1024,
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    order: torch.Tensor | None = None,
) -> torch.Tensor:
    """fn(batch) for every batch of N×... `inputs`, in eval mode: N×... outputs on the CPU.

    fn: what to compute for a batch already on the model's device (default: model(batch)),
        e.g. `model.encoder` or a reconstruction error per row; it must return one row per input.
    order: an optional permutation (N,) of the rows to run them in (e.g. texts sorted by
        length, so each batch carries little padding); the result is in the inputs' order.
    The model's training mode is put back afterwards, also after an error.
    """
    check_positive("batch_size", batch_size, integer=True)
    if len(inputs) == 0:
        raise MtkitError("nothing to run the model on: the inputs are empty")
    fn = model if fn is None else fn
    device = model_device(model)
    rows = torch.arange(len(inputs)) if order is None else torch.as_tensor(order)
    was_training = model.training
    model.eval()
    try:
        chunks = [fn(inputs[batch].to(device)).cpu() for batch in rows.split(batch_size)]
    finally:
        model.train(was_training)
    outputs = torch.cat(chunks)
    if order is None:
        return outputs
    in_order = torch.empty_like(outputs)
    in_order[rows] = outputs  # back to the caller's order
    return in_order


def _encoded(data, tokenizer, max_length) -> tuple:
    if tokenizer is None:
        raise MtkitError(
            "texts need the tokenizer their model was trained with: pass tokenizer=... "
            "(e.g. pretrained.tokenizer)"
        )
    return tuple(data.tensors_for(tokenizer, max_length=max_length or DEFAULT_MAX_LENGTH))


def _parts(data, tokenizer, max_length) -> tuple:
    """(inputs, labels or None) of a tensor, array, tuple or dataset, without checking them."""
    if isinstance(data, torch.Tensor):
        return data, None
    if isinstance(data, np.ndarray):
        return torch.as_tensor(data), None
    if hasattr(data, "texts"):
        encoded = _encoded(data, tokenizer, max_length)
        return encoded[0], (encoded[1] if len(encoded) > 1 else None)
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], np.ndarray):
        return torch.as_tensor(data[0]), (torch.as_tensor(data[1]) if len(data) > 1 else None)
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], torch.Tensor):
        return data[0], (data[1] if len(data) > 1 else None)
    if hasattr(data, "tensors"):
        tensors = tuple(data.tensors)
        return tensors[0], (tensors[1] if len(tensors) > 1 else None)
    raise MtkitError(
        f"expected a tensor, an (inputs, labels) tuple or a dataset, got {type(data).__name__}"
        " (encode texts first: dataset.tensors_for(tokenizer), or pass a TextDataset and"
        " tokenizer=...)"
    )


def as_inputs(data, *, tokenizer=None, max_length: int | None = None) -> torch.Tensor:
    """The N×... input tensor of a tensor, a NumPy array, an (inputs, labels) tuple, an image
    dataset, or a TextDataset (encoded with `tokenizer` to N×max_length token ids). Labels are
    never read."""
    return _parts(data, tokenizer, max_length)[0]


def as_labelled(
    data, *, tokenizer=None, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N×... inputs, (N,) int64 labels) of a labelled dataset or an (inputs, labels) pair."""
    inputs, labels = _parts(data, tokenizer, max_length)
    if labels is None:
        raise MtkitError(
            "this needs labelled data: a dataset with labels or an (inputs, labels) pair; "
            "the unlabelled pool has its labels hidden on purpose"
        )
    labels = torch.as_tensor(labels)
    if labels.dtype != torch.long or labels.dim() != 1 or len(labels) != len(inputs):
        raise MtkitError(f"labels must be a 1-D int64 tensor of length {len(inputs)}")
    if len(labels) == 0:
        raise MtkitError("the labelled data is empty")
    return inputs, labels
