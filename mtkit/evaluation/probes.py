"""Representation quality: how good are a frozen encoder's features?

Measured the way papers do it: freeze the encoder, embed the data, and see how well a simple
classifier (k nearest neighbours, or a logistic regression "linear probe") does on those
features with the few labels we have. Better features → higher probe accuracy.

    codes = embed(encoder, split.test)                          # N×feature_size array
    knn_accuracy(encoder, split.labelled, split.test)           # in [0, 1]
    linear_probe_accuracy(encoder, split.labelled, split.test)  # in [0, 1]
    nearest_neighbours(codes, codes[[0]], count=3)              # the most similar rows
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from mtkit.core.batches import forward_in_batches
from mtkit.core.checks import check_at_most, check_finite, check_model, shown
from mtkit.core.utils import MtkitError, check_positive
from mtkit.evaluation.inputs import labelled_inputs, text_length, unlabelled_inputs


def embed(
    encoder: nn.Module, inputs, batch_size: int = 1024, *, tokenizer=None, max_length=None
) -> np.ndarray:
    """Run a frozen encoder over every input: N×... → N×feature_size NumPy array.

    inputs: a tensor, an (inputs, labels) tuple, an image dataset, or a TextDataset with
    `tokenizer` (labels are never used). Runs in eval mode; the encoder's mode is kept.
    """
    check_model("encoder", encoder)
    check_positive("batch_size", batch_size, integer=True)
    tensor = unlabelled_inputs(inputs, encoder, tokenizer, max_length)
    return forward_in_batches(encoder, tensor, batch_size=batch_size).numpy()


def _standardised(train_codes: np.ndarray, test_codes: np.ndarray):
    """Both N×D code arrays scaled with the *train* codes' mean and std, so the test set does
    not leak into the probe."""
    scaler = StandardScaler().fit(train_codes)
    return scaler.transform(train_codes), scaler.transform(test_codes)


def _probe_data(encoder, train, test, tokenizer):
    """(train codes N×D, train labels (N,), test codes M×D, test labels (M,)), the codes
    standardised."""
    max_length = text_length(encoder)
    train_codes, test_codes = _standardised(
        embed(encoder, train, tokenizer=tokenizer, max_length=max_length),
        embed(encoder, test, tokenizer=tokenizer, max_length=max_length),
    )
    train_labels = labelled_inputs(train, encoder, tokenizer, max_length)[1]
    test_labels = labelled_inputs(test, encoder, tokenizer, max_length)[1]
    check_finite("the encoder's features (codes)", train_codes)
    check_finite("the encoder's features (codes)", test_codes)
    if len(np.unique(train_labels)) < 2:
        raise MtkitError(
            f"a probe needs training examples of at least 2 classes, got only class "
            f"{int(train_labels[0])} in {len(train_labels)} examples"
        )
    return train_codes, train_labels, test_codes, test_labels


def knn_accuracy(encoder: nn.Module, train, test, neighbours: int = 5, *, tokenizer=None) -> float:
    """Accuracy of k-nearest-neighbours on the encoder's standardised features.

    train, test: labelled datasets (TextDatasets with `tokenizer`) or (inputs, labels) tuples.
    Returns a float in [0, 1].
    """
    check_positive("neighbours", neighbours, integer=True)
    train_codes, train_labels, test_codes, test_labels = _probe_data(
        encoder, train, test, tokenizer
    )
    # More neighbours than examples would vote with every example: the majority class, always.
    check_at_most("neighbours", neighbours, len(train_codes), "training examples")
    model = KNeighborsClassifier(n_neighbors=neighbours).fit(train_codes, train_labels)
    return float(model.score(test_codes, test_labels))


def linear_probe_accuracy(
    encoder: nn.Module, train, test, regularisation: float = 1.0, *, tokenizer=None
) -> float:
    """Accuracy of a logistic regression trained on the frozen encoder's standardised features.

    regularisation: scikit-learn's C (smaller = stronger L2 penalty). Returns a float in [0, 1].
    """
    check_positive("regularisation", regularisation)
    train_codes, train_labels, test_codes, test_labels = _probe_data(
        encoder, train, test, tokenizer
    )
    model = LogisticRegression(C=regularisation, max_iter=2000)
    model.fit(train_codes, train_labels)
    return float(model.score(test_codes, test_labels))


def nearest_neighbours(codes: np.ndarray, queries: np.ndarray, count: int = 3) -> np.ndarray:
    """Indices of the `count` rows of `codes` (N×D) most similar (cosine) to each query (Q×D).

    Returns a Q×count integer array, most similar first.
    """
    codes, queries = _code_matrix("codes", codes), _code_matrix("queries", queries)
    if codes.shape[1] != queries.shape[1]:
        raise MtkitError(
            f"codes (N×D) and queries (Q×D) must have the same D, got {codes.shape} and "
            f"{queries.shape}"
        )
    check_positive("count", count, integer=True)
    check_at_most("count", count, len(codes), "codes to choose from")
    codes = codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    return np.argsort(-(queries @ codes.T), axis=1)[:, :count]


def _code_matrix(name: str, values) -> np.ndarray:
    """A non-empty, finite N×D float array of codes (from an array, tensor or nested list)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise MtkitError(f"{name} must be an N×D array of numbers, got {shown(values)}") from None
    if array.ndim != 2 or array.size == 0:
        raise MtkitError(f"{name} must be a non-empty N×D array, got shape {array.shape}")
    return check_finite(name, array)


__all__ = ["embed", "knn_accuracy", "linear_probe_accuracy", "nearest_neighbours"]
