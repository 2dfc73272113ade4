"""What an evaluation is given, as tensors: images, texts and (inputs, labels) pairs alike.

A TextDataset is encoded with the tokenizer its model was trained with, to the token length the
model was built for; everything else is handed to mtkit.core.batches unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mtkit.core.batches import DEFAULT_MAX_LENGTH, as_inputs, as_labelled


def text_length(model: nn.Module | None) -> int:
    """The token length a text model was built for (its config's, or its encoder's config's
    max_length); DEFAULT_MAX_LENGTH for a model without one (e.g. an image model)."""
    for part in (model, getattr(model, "encoder", None)):
        config = getattr(part, "config", None)
        if hasattr(config, "max_length"):
            return config.max_length
    return DEFAULT_MAX_LENGTH


def unlabelled_inputs(
    data, model: nn.Module, tokenizer=None, max_length: int | None = None
) -> torch.Tensor:
    """The N×... input tensor of `data` (labels are never read); texts are encoded to
    `max_length` tokens, by default `model`'s own (see `text_length`)."""
    return as_inputs(data, tokenizer=tokenizer, max_length=max_length or text_length(model))


def labelled_inputs(
    data, model: nn.Module, tokenizer=None, max_length: int | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """(N×... inputs, (N,) int64 label array) of labelled `data`, encoded as `unlabelled_inputs`
    does; an MtkitError that says so when `data` has no labels."""
    inputs, labels = as_labelled(
        data, tokenizer=tokenizer, max_length=max_length or text_length(model)
    )
    return inputs, labels.numpy()


__all__ = ["labelled_inputs", "text_length", "unlabelled_inputs"]
