"""Evaluation: how good is a model, and how good are an encoder's features?

Representation quality is measured the way papers do it: freeze the encoder, embed the data, and
see how well a simple classifier (k nearest neighbours, or a logistic regression "linear probe")
does on those features with the few labels we have. Better features → higher probe accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from mtkit.utils import MtkitError, check_positive


@torch.no_grad()
def embed(encoder: nn.Module, inputs, batch_size: int = 1024) -> np.ndarray:
    """Run a frozen encoder over every input: N×... → N×feature_size NumPy array.

    inputs: a tensor, an (inputs, labels) tuple, or an image dataset (labels are never used).
    """
    check_positive("batch_size", batch_size, integer=True)
    tensor = _inputs_and_labels(inputs, need_labels=False)[0]
    if len(tensor) == 0:
        raise MtkitError("nothing to embed: the inputs are empty")
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    chunks = [
        encoder(tensor[start : start + batch_size].to(device)).cpu()
        for start in range(0, len(tensor), batch_size)
    ]
    encoder.train(was_training)
    return torch.cat(chunks).numpy()


def knn_accuracy(encoder: nn.Module, train, test, neighbours: int = 5) -> float:
    """Accuracy of k-nearest-neighbours on the encoder's standardised features.

    train, test: labelled datasets or (inputs, labels) tuples. Returns a float in [0, 1].
    """
    neighbours = min(check_positive("neighbours", neighbours, integer=True), len(train))
    train_codes, test_codes = _standardised(embed(encoder, train), embed(encoder, test))
    model = KNeighborsClassifier(n_neighbors=neighbours).fit(
        train_codes, _inputs_and_labels(train)[1]
    )
    return float(model.score(test_codes, _inputs_and_labels(test)[1]))


def linear_probe_accuracy(encoder: nn.Module, train, test, regularisation: float = 1.0) -> float:
    """Accuracy of a logistic regression trained on the frozen encoder's standardised features.

    regularisation: scikit-learn's C (smaller = stronger L2 penalty). Returns a float in [0, 1].
    """
    check_positive("regularisation", regularisation)
    train_codes, test_codes = _standardised(embed(encoder, train), embed(encoder, test))
    model = LogisticRegression(C=regularisation, max_iter=2000)
    model.fit(train_codes, _inputs_and_labels(train)[1])
    return float(model.score(test_codes, _inputs_and_labels(test)[1]))


def _standardised(train_codes: np.ndarray, test_codes: np.ndarray):
    scaler = StandardScaler().fit(train_codes)
    return scaler.transform(train_codes), scaler.transform(test_codes)


def nearest_neighbours(codes: np.ndarray, queries: np.ndarray, count: int = 3) -> np.ndarray:
    """Indices of the `count` rows of `codes` (N×D) most similar (cosine) to each query (Q×D).

    Returns a Q×count integer array, most similar first.
    """
    check_positive("count", count, integer=True)
    codes = codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    return np.argsort(-(queries @ codes.T), axis=1)[:, :count]


def _inputs_and_labels(data, need_labels: bool = True):
    """(inputs tensor, labels array or None) from a tensor, a tuple, or a dataset."""
    inputs = labels = None
    if isinstance(data, torch.Tensor):
        inputs = data
    elif isinstance(data, (tuple, list)) and data:
        inputs, labels = data[0], (data[1] if len(data) > 1 else None)
    elif hasattr(data, "tensors"):
        inputs, labels = data.tensors[0], getattr(data, "labels", None)
    if not isinstance(inputs, torch.Tensor):
        raise MtkitError(
            f"expected a tensor, an (inputs, labels) tuple or a dataset, got {type(data).__name__}"
            " (encode texts first: dataset.tensors_for(tokenizer))"
        )
    if need_labels and labels is None:
        raise MtkitError("this needs a labelled dataset; the unlabelled pool has no labels")
    return inputs, None if labels is None else np.asarray(labels)
