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

    inputs: a tensor, or a dataset (its first tensor is used; labels are never needed).
    """
    check_positive("batch_size", batch_size, integer=True)
    tensor = inputs if isinstance(inputs, torch.Tensor) else inputs.tensors[0]
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

    train, test: labelled datasets. Returns a float in [0, 1].
    """
    neighbours = min(check_positive("neighbours", neighbours, integer=True), len(train))
    train_codes, test_codes = _standardised(embed(encoder, train), embed(encoder, test))
    model = KNeighborsClassifier(n_neighbors=neighbours).fit(train_codes, _labels(train))
    return float(model.score(test_codes, _labels(test)))


def linear_probe_accuracy(encoder: nn.Module, train, test, regularisation: float = 1.0) -> float:
    """Accuracy of a logistic regression trained on the frozen encoder's standardised features.

    regularisation: scikit-learn's C (smaller = stronger L2 penalty). Returns a float in [0, 1].
    """
    check_positive("regularisation", regularisation)
    train_codes, test_codes = _standardised(embed(encoder, train), embed(encoder, test))
    model = LogisticRegression(C=regularisation, max_iter=2000)
    model.fit(train_codes, _labels(train))
    return float(model.score(test_codes, _labels(test)))


def _standardised(train_codes: np.ndarray, test_codes: np.ndarray):
    scaler = StandardScaler().fit(train_codes)
    return scaler.transform(train_codes), scaler.transform(test_codes)


def _labels(dataset) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise MtkitError("this needs a labelled dataset; the unlabelled pool has no labels")
    return np.asarray(labels)
