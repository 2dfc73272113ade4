"""Drift: noticing that new data differs from the data a model learned from.

Noticing needs no labels:
    detect_drift(reference, new, encoder)
        1. a two-sample test on the encoder's embeddings: the maximum mean discrepancy (MMD)
           between the two sets, with a permutation p-value (how often a random relabelling of
           the pooled examples into "reference" and "new" gives an MMD at least as large);
        2. with an autoencoder, each example's reconstruction error as a shift score: an
           autoencoder rebuilds what looks like its training data well, and the rest badly.
Adapting to a shift needs a few labels from the new domain: mtkit.stages.shift.
A shifted domain to practise on: shifted_split(split, "rotate") or "invert" (digits).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.batches import forward_in_batches
from mtkit.core.checks import as_tensor, check_finite, check_images, check_model, check_number
from mtkit.core.utils import MtkitError, check_choice, check_positive
from mtkit.evaluation.probes import embed

SHIFTS = ("rotate", "invert")

# ---------------------------------------------------------------------------------------------
# Detecting drift.


def mmd_permutation_test(
    reference: torch.Tensor, new: torch.Tensor, permutations: int = 500, seed: int = 0
) -> tuple[float, float]:
    """Is `new` drawn from the same distribution as `reference`? Returns (MMD², p-value).

    reference: N×D, new: M×D (e.g. embeddings). MMD² is the squared distance between the two
    sets' mean feature maps under a Gaussian kernel exp(−‖a − b‖² / h), h the median squared
    distance between the pooled points (the usual "median heuristic"):
        MMD² = mean k(reference, reference) + mean k(new, new) − 2 · mean k(reference, new)
    (the biased estimate; the permutation test does not need an unbiased one). p-value: the
    share of `permutations` random splits of the pooled points into sets of sizes N and M whose
    MMD² is at least the observed one, counting the observed split itself:
    (1 + #{permuted ≥ observed}) / (1 + permutations). A small p-value says "different".
    """
    check_positive("permutations", permutations, integer=True)
    reference = as_tensor("reference", reference, "an N×D tensor or array of embeddings")
    new = as_tensor("new", new, "an M×D tensor or array of embeddings")
    if reference.dim() != 2 or new.dim() != 2 or reference.shape[1] != new.shape[1]:
        raise MtkitError(
            f"expected N×D and M×D embeddings, got {tuple(reference.shape)}, {tuple(new.shape)}"
        )
    if len(reference) < 2 or len(new) < 2:
        raise MtkitError("each set needs at least 2 examples for a two-sample test")
    check_finite("the reference embeddings", reference)
    check_finite("the new embeddings", new)
    pooled = torch.cat([reference, new]).double()
    squared = torch.cdist(pooled, pooled).pow(2)
    positive = squared[squared > 0]  # none when every point is the same: then MMD² is 0
    bandwidth = positive.median().clamp_min(1e-12) if len(positive) else squared.new_tensor(1.0)
    kernel = torch.exp(-squared / bandwidth)  # computed once, reused by every permutation

    count, first = len(pooled), len(reference)

    def mmd_squared(members: torch.Tensor) -> torch.Tensor:
        """members: P×count bool, True for the "reference" side. Returns P values of MMD²."""
        # w = 1/N on the reference side, −1/M on the other: MMD² = wᵀ K w.
        weights = torch.where(members, 1.0 / first, -1.0 / (count - first)).double()
        return ((weights @ kernel) * weights).sum(dim=1)

    observed = mmd_squared((torch.arange(count) < first)[None])[0]
    generator = torch.Generator().manual_seed(seed)
    exceed = 0
    for start in range(0, permutations, 100):  # in chunks: memory stays 100 × count
        size = min(100, permutations - start)
        order = torch.rand(size, count, generator=generator).argsort(dim=1)
        exceed += int((mmd_squared(order < first) >= observed).sum())
    return float(observed), (1 + exceed) / (1 + permutations)


def reconstruction_scores(autoencoder: nn.Module, images, batch_size: int = 512) -> np.ndarray:
    """Each image's mean squared reconstruction error, in eval mode: N×C×H×W images (or an
    ImageDataset) → an (N,) float32 array. High = unfamiliar."""

    def errors(batch: torch.Tensor) -> torch.Tensor:
        error = F.mse_loss(autoencoder(batch), batch, reduction="none")
        return error.flatten(start_dim=1).mean(dim=1)

    check_model("autoencoder", autoencoder)
    tensor = check_images("images", images)
    return forward_in_batches(autoencoder, tensor, batch_size=batch_size, fn=errors).numpy()


@dataclass
class DriftReport:
    """What detect_drift found.

    mmd: MMD² between the embeddings; p_value: its permutation p-value; drifted: p < alpha.
    reference_scores, new_scores: per-example reconstruction errors (None without an
        autoencoder). threshold: the `quantile` of the reference scores; flagged: the share of
        new examples above it (about 1 − quantile when nothing changed).
    """

    mmd: float
    p_value: float
    alpha: float
    permutations: int
    reference_size: int
    new_size: int
    reference_scores: np.ndarray | None = None
    new_scores: np.ndarray | None = None
    threshold: float | None = None
    flagged: float | None = None

    @property
    def drifted(self) -> bool:
        return self.p_value < self.alpha

    def summary(self) -> str:
        verdict = "drift" if self.drifted else "no evidence of drift"
        text = (
            f"MMD² {self.mmd:.4f}, p = {self.p_value:.3f} ({self.permutations} permutations, "
            f"{self.reference_size} vs {self.new_size} examples): {verdict} at α = {self.alpha}"
        )
        if self.flagged is not None:
            text += (
                f"; {self.flagged:.0%} of the new examples rebuild worse than "
                f"{self.threshold:.4f}, the reference's {self.quantile_percent}th percentile"
            )
        return text

    @property
    def quantile_percent(self) -> int | None:
        if self.reference_scores is None:
            return None
        share = float(np.mean(self.reference_scores <= self.threshold))
        return round(100 * share)

    def plot(self, ax=None, labels=("reference", "new")):
        """Histograms of both sets' reconstruction scores (as densities: the sets' sizes may
        differ) and the threshold. Returns the Axes."""
        import matplotlib.pyplot as plt

        if self.reference_scores is None:
            raise MtkitError("no reconstruction scores: pass an autoencoder to detect_drift")
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        both = np.concatenate([self.reference_scores, self.new_scores])
        bins = np.linspace(both.min(), both.max(), 40)
        for scores, label in zip((self.reference_scores, self.new_scores), labels, strict=True):
            ax.hist(scores, bins=bins, alpha=0.6, label=label, density=True)
        ax.axvline(self.threshold, color="black", linestyle="--", linewidth=1, label="threshold")
        ax.set_xlabel("reconstruction error per image")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        return ax


def detect_drift(
    reference,
    new,
    encoder: nn.Module,
    *,
    autoencoder: nn.Module | None = None,
    permutations: int = 500,
    alpha: float = 0.05,
    quantile: float = 0.95,
    max_examples: int = 500,
    seed: int = 0,
) -> DriftReport:
    """Compare `new` inputs with `reference` inputs through `encoder`; returns a DriftReport.

    reference, new: N×C×H×W tensors or image datasets (labels are not used). The reference
        should be data the model did not train on (e.g. validation images): training images
        rebuild unusually well and would make everything else look shifted.
    encoder: embeds the inputs for the MMD test. An autoencoder may be passed here: its
        `.encoder` embeds and its reconstruction error scores each example.
    autoencoder: scores each example by reconstruction error (default: `encoder`, if it is one).
    max_examples: at most this many of each set (drawn with `seed`) go into the MMD test,
        whose cost grows with the square of the number of examples. Scores use all of them.
    """
    check_number("alpha", alpha, low=0, high=1, low_open=True, high_open=True)
    check_number("quantile", quantile, low=0, high=1, low_open=True, high_open=True)
    check_positive("max_examples", max_examples, integer=True)
    check_positive("permutations", permutations, integer=True)
    check_positive("seed", seed, integer=True, allow_zero=True)
    check_model("encoder", encoder)
    if autoencoder is not None:
        check_model("autoencoder", autoencoder)
    if autoencoder is None and hasattr(encoder, "encoder") and hasattr(encoder, "decoder"):
        autoencoder, encoder = encoder, encoder.encoder
    reference, new = check_images("reference", reference), check_images("new", new)
    generator = torch.Generator().manual_seed(seed)

    def sample(images: torch.Tensor) -> torch.Tensor:
        if len(images) <= max_examples:
            return images
        return images[torch.randperm(len(images), generator=generator)[:max_examples]]

    reference_codes = torch.as_tensor(embed(encoder, sample(reference)))
    new_codes = torch.as_tensor(embed(encoder, sample(new)))
    mmd, p_value = mmd_permutation_test(reference_codes, new_codes, permutations, seed)
    report = DriftReport(mmd, p_value, alpha, permutations, len(reference_codes), len(new_codes))
    if autoencoder is not None:
        report.reference_scores = reconstruction_scores(autoencoder, reference)
        report.new_scores = reconstruction_scores(autoencoder, new)
        report.threshold = float(np.quantile(report.reference_scores, quantile))
        report.flagged = float(np.mean(report.new_scores > report.threshold))
    return report


# ---------------------------------------------------------------------------------------------
# A shifted domain to practise on.


def shift_images(images: torch.Tensor, kind: str = "rotate", angle: float = 45.0) -> torch.Tensor:
    """N×C×H×W images in [0, 1] → a new tensor: inverted (1 − x), or rotated about the centre
    by `angle` degrees (as plotted, 90 turns a digit a quarter clockwise; corners fill with 0)."""
    from mtkit.stages.finetune import shift_rotate

    check_choice("shift", kind, SHIFTS)
    images = check_images("images", images)
    check_number("angle", angle)
    if kind == "invert":
        return 1.0 - images
    angles = torch.full((len(images),), float(angle))
    return shift_rotate(images, angles, torch.zeros(len(images), 2)).clamp(0.0, 1.0)


def shifted_split(split, kind: str = "rotate", angle: float = 45.0):
    """A copy of a FewLabelSplit of images with every part's images shifted (labels kept)."""
    if not all(hasattr(getattr(split, part, None), "images") for part in ("labelled", "test")):
        raise MtkitError(f"split must be a FewLabelSplit of images, got {type(split).__name__}")
    parts = {
        name: dataclasses.replace(
            getattr(split, name), images=shift_images(getattr(split, name).images, kind, angle)
        )
        for name in ("labelled", "validation", "unlabelled", "test")
    }
    return dataclasses.replace(split, **parts)


_MOVED = {
    "ShiftAdaptation": "mtkit.stages.shift",
    "adapt_to_shift": "mtkit.stages.shift",
    "ADAPTATION_METHODS": "mtkit.stages.shift",
    "plot_adaptations": "mtkit.plots.experiments",
}


def __getattr__(name: str):
    """Adapting to a shift moved to mtkit.stages.shift (its figure to mtkit.plots); the old
    names still answer here, with a DeprecationWarning."""
    import importlib

    from mtkit import _moved

    if name not in _MOVED:
        raise AttributeError(f"module 'mtkit.evaluation.drift' has no attribute {name!r}")
    new = "SHIFT_METHODS" if name == "ADAPTATION_METHODS" else name
    _moved.warn_moved(f"mtkit.drift.{name}", f"{_MOVED[name]}.{new}")
    return getattr(importlib.import_module(_MOVED[name]), new)
