"""What an evaluation is given, as tensors: images, texts and (inputs, labels) pairs alike;
and labels with predictions, as class indices.

A TextDataset is encoded with the tokenizer its model was trained with, to the token length the
model was built for; everything else is handed to mtkit.core.batches unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mtkit.core.batches import DEFAULT_MAX_LENGTH, as_inputs, as_labelled
from mtkit.core.checks import (
    arrays_as_tensors,
    check_class_labels,
    check_model,
    check_model_inputs,
    check_names,
    shown,
)
from mtkit.core.utils import MtkitError


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
    `max_length` tokens, by default `model`'s own (see `text_length`). Checked for `model`:
    finite, and float if they are N×C×H×W images (see check_model_inputs)."""
    check_model("model", model)
    inputs = as_inputs(
        arrays_as_tensors(data), tokenizer=tokenizer, max_length=max_length or text_length(model)
    )
    return check_model_inputs("inputs", inputs)


def labelled_inputs(
    data, model: nn.Module, tokenizer=None, max_length: int | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """(N×... inputs, (N,) int64 label array) of labelled `data`, encoded and checked as
    `unlabelled_inputs` does; an MtkitError that says so when `data` has no labels."""
    check_model("model", model)
    inputs, labels = as_labelled(
        arrays_as_tensors(data), tokenizer=tokenizer, max_length=max_length or text_length(model)
    )
    return check_model_inputs("inputs", inputs), labels.numpy()


def _one_dimensional(name: str, values) -> np.ndarray:
    """`values` (a list, array or tensor) as a 1-D NumPy array, or an MtkitError."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, (str, bytes)) or np.ndim(values) != 1:
        raise MtkitError(f"{name} must be a 1-D sequence of classes, got {shown(values)}")
    if isinstance(values, (list, tuple)) and any(isinstance(v, str) for v in values):
        if not all(isinstance(v, str) for v in values):
            raise MtkitError(f"{name} must be all class indices (int) or all names (str)")
    return np.asarray(values)


def class_indices(labels, predictions, class_names=None):
    """(labels, predictions) as int64 (N,) class indices, and the class names.

    Both may be class indices 0..K−1 or both class names (strings, looked up in `class_names`,
    by default the sorted names that occur). Floats, NaN, negative indices and indices past
    `class_names` are MtkitErrors: they are not classes.
    """
    labels = _one_dimensional("labels", labels)
    predictions = _one_dimensional("predictions", predictions)
    if labels.shape != predictions.shape or len(labels) == 0:
        raise MtkitError(
            f"labels and predictions must be two 1-D arrays of the same, non-zero length; "
            f"got {len(labels)} labels and {len(predictions)} predictions"
        )
    if class_names is not None:
        class_names = check_names("class_names", class_names)
    if labels.dtype.kind in "US" or predictions.dtype.kind in "US":
        names = class_names or sorted(set(labels.tolist()) | set(predictions.tolist()))
        index_of = {name: i for i, name in enumerate(names)}
        for name, values in (("labels", labels), ("predictions", predictions)):
            unknown = sorted(set(values.tolist()) - set(index_of))
            if unknown:
                raise MtkitError(f"{name} {unknown[:5]} are not among class_names {names}")
        labels = np.array([index_of[v] for v in labels.tolist()])
        predictions = np.array([index_of[v] for v in predictions.tolist()])
        class_names = names
    known = None if class_names is None else len(class_names)
    labels = check_class_labels("labels", labels, num_classes=known)
    predictions = check_class_labels("predictions", predictions, num_classes=known)
    if class_names is None:
        class_names = [str(c) for c in range(int(max(labels.max(), predictions.max())) + 1)]
    return labels, predictions, class_names


__all__ = ["class_indices", "labelled_inputs", "text_length", "unlabelled_inputs"]
