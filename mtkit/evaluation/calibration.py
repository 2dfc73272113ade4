"""Calibration: does 80% confidence mean 80% right?

    curve = reliability_curve(probabilities, labels)     # accuracy vs confidence per bin
    expected_calibration_error(probabilities, labels)   # one number: 0 is perfect
    temperature = fit_temperature(evaluate(classifier, split.validation))
    calibrated = TemperatureScaled(classifier, temperature)

scikit-learn has neither a multi-class ECE nor temperature scaling, so both are written out
here, after Guo et al. (2017), "On calibration of modern neural networks".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mtkit.core.checks import check_class_labels, check_finite, check_model, shown
from mtkit.core.utils import MtkitError, check_positive

DEFAULT_BINS = 15  # reliability bins, as in Guo et al. (2017)
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass
class ReliabilityCurve:
    """Predictions grouped by confidence into equal-width bins over [0, 1].

    edges: (bins + 1,) bin edges; bin k holds confidences in (edges[k], edges[k + 1]].
    confidence, accuracy: (bins,) mean confidence and accuracy in each bin (NaN where empty).
    counts: (bins,) predictions per bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: Σ_bins (count / N) · |accuracy − confidence|."""
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.counts[filled] * gaps) / self.counts.sum())


def _check_probabilities(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """(N×C float64 probabilities, (N,) integer labels), or an MtkitError saying what is off."""
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().cpu().numpy()
    try:
        probabilities = np.asarray(probabilities, dtype=np.float64)
    except (TypeError, ValueError):
        raise MtkitError(
            f"probabilities must be an N×C array of numbers, got {shown(probabilities)}"
        ) from None
    labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2 or len(probabilities) == 0:
        raise MtkitError(
            f"probabilities must be an N×C array with C ≥ 2, got {probabilities.shape}"
        )
    if labels.shape != (len(probabilities),):
        raise MtkitError(f"labels must have shape ({len(probabilities)},), got {labels.shape}")
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < 0:
        raise MtkitError("probabilities must be finite and non-negative")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise MtkitError("each row of probabilities must sum to 1 (pass softmax outputs)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise MtkitError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise MtkitError(f"labels must lie in [0, {probabilities.shape[1]})")
    return probabilities, labels


def reliability_curve(probabilities, labels, bins: int = DEFAULT_BINS) -> ReliabilityCurve:
    """Bin predictions by confidence (the top probability) and compare each bin's accuracy with
    its mean confidence. A calibrated model has accuracy ≈ confidence in every bin.

    probabilities: N×C (rows sum to 1); labels: N class indices. Returns a ReliabilityCurve.
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    check_positive("bins", bins, integer=True)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin k holds (edges[k], edges[k + 1]]; searching the edges themselves keeps a confidence
    # of exactly 0.6 in the bin that ends at 0.6, whatever the rounding of 0.6 × bins.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins become NaN on purpose
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    return ReliabilityCurve(edges, mean_confidence, accuracy, counts)


def expected_calibration_error(probabilities, labels, bins: int = DEFAULT_BINS) -> float:
    """ECE: the average gap between confidence and accuracy, weighted by how many predictions
    fall in each confidence bin. 0 is perfect; an over-confident model scores high."""
    return reliability_curve(probabilities, labels, bins).ece


def fit_temperature(validation) -> float:
    """The temperature T that makes softmax(logits / T) best match the labels of *validation*
    data (lowest negative log-likelihood). Never fit it on the test data you report.

    validation: the Evaluation of validation data (`evaluate(model, split.validation)`); its
        N×C `logits` and (N,) `labels` are read.
    T > 1 softens over-confident probabilities, T < 1 sharpens timid ones; predictions do not
    change. The NLL is convex in 1/T, so a bounded 1-D search over log T finds the optimum
    within TEMPERATURE_RANGE. Apply it with `evaluation.with_temperature(T)`,
    `evaluate(..., temperature=T)` or `TemperatureScaled(model, T)`. Returns T as a float.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    # Read by attribute, not isinstance: the Evaluation class sits above this module.
    if not (hasattr(validation, "logits") and hasattr(validation, "labels")):
        raise MtkitError(
            "fit_temperature takes the Evaluation of validation data: "
            "fit_temperature(evaluate(model, split.validation))"
        )
    logits = check_finite("validation.logits", np.asarray(validation.logits, dtype=np.float64))
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise MtkitError(f"validation.logits must be N×C with C ≥ 2, got shape {logits.shape}")
    labels = check_class_labels(
        "validation.labels", validation.labels, length=len(logits), num_classes=logits.shape[1]
    )
    rows = np.arange(len(labels))

    def nll(log_temperature: float) -> float:
        return float(-log_softmax(logits / math.exp(log_temperature), axis=1)[rows, labels].mean())

    low, high = (math.log(bound) for bound in TEMPERATURE_RANGE)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


class TemperatureScaled(nn.Module):
    """model(x) / temperature: a calibrated model to use like the original (`mt.predict`, save).

    forward(inputs) returns N×C logits whose softmax is the calibrated probabilities.
    """

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        check_model("model", model)
        check_positive("temperature", temperature)
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs) / self.temperature


__all__ = [
    "DEFAULT_BINS",
    "ReliabilityCurve",
    "TemperatureScaled",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_curve",
]
