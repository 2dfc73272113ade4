"""Figures for mtkit.evaluation (metrics, calibration, probes and stats). Every function
returns the Figure.

Plots depend on evaluation, never the reverse: a figure of an evaluation result lives here,
e.g. `plot_comparison(compare(results))`, not in a method of the result.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from mtkit.core.utils import MtkitError, check_positive
from mtkit.evaluation.calibration import DEFAULT_BINS, reliability_curve
from mtkit.evaluation.inputs import labelled_inputs
from mtkit.evaluation.metrics import Evaluation, Mistake, class_errors
from mtkit.evaluation.probes import embed
from mtkit.evaluation.stats import Comparison
from mtkit.plots.figures import _as_picture, plot_embedding_map


def _axis(ax, figsize):
    if ax is None:
        figure, ax = plt.subplots(figsize=figsize)
        return figure, ax
    return ax.figure, ax


def plot_confusion_matrix(evaluation: Evaluation, normalize: bool = False, ax=None, title=None):
    """The confusion matrix (rows: true class, columns: predicted), drawn by scikit-learn's
    ConfusionMatrixDisplay. normalize=True shows each row as fractions of that class."""
    from sklearn.metrics import ConfusionMatrixDisplay

    confusion = evaluation.report.confusion.astype(float)
    if normalize:
        confusion = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = 0.45 * len(evaluation.class_names) + 2
    figure, ax = _axis(ax, (size + 0.4, size))
    display = ConfusionMatrixDisplay(confusion, display_labels=evaluation.class_names)
    display.plot(ax=ax, cmap="Blues", colorbar=False, values_format=".2f" if normalize else ".0f")
    ax.set_title(title or f"accuracy {evaluation.accuracy:.3f}", fontsize=10)
    figure.tight_layout()
    return figure


def plot_class_errors(evaluation: Evaluation, ax=None, title=None):
    """Bars of the error rate per class, each labelled with the class it is most often
    mistaken for."""
    rows = class_errors(evaluation)
    figure, ax = _axis(ax, (max(4.0, 0.55 * len(rows) + 1.5), 2.8))
    rates = [100 * row.error_rate for row in rows]
    ax.bar([row.name for row in rows], rates, color="#C44E52", alpha=0.85)
    for position, row in enumerate(rows):
        if row.most_confused_with is not None:
            ax.annotate(
                f"→{row.most_confused_with}",
                (position, rates[position]),
                textcoords="offset points",
                xytext=(0, 2),
                ha="center",
                fontsize=7,
            )
    ax.set_ylabel("error rate (%)")
    ax.set_ylim(0, max(rates + [1.0]) * 1.2)
    ax.set_title(title or "errors per class (→ most common wrong answer)", fontsize=10)
    figure.tight_layout()
    return figure


def plot_mistakes(mistakes: list[Mistake], columns: int = 6, title: str | None = None):
    """A gallery of image mistakes, each titled "true → predicted" and the confidence."""
    check_positive("columns", columns, integer=True)
    if not mistakes:
        raise MtkitError("no mistakes to show")
    if any(getattr(m.example, "dim", lambda: 0)() != 3 for m in mistakes):
        raise MtkitError(
            "plot_mistakes shows images (C×H×W); for texts print mistakes_table(mistakes)"
        )
    columns = min(columns, len(mistakes))
    rows = -(-len(mistakes) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.45 * columns, 1.6 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, mistake in zip(axes.flat, mistakes, strict=False):
        axis.imshow(_as_picture(mistake.example), cmap="gray_r", vmin=0, vmax=1)
        axis.set_title(
            f"{mistake.true_class}→{mistake.predicted_class}\n{mistake.confidence:.2f}",
            fontsize=8,
        )
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_reliability_diagram(
    evaluation: Evaluation, bins: int = DEFAULT_BINS, ax=None, title: str | None = None
):
    """Accuracy against confidence per bin, with the diagonal a calibrated model would follow.

    Bars below the diagonal: over-confident (it says 90%, it is right 70% of the time); above:
    under-confident. Bar shading shows how many predictions each bin holds.
    """
    curve = reliability_curve(evaluation.probabilities, evaluation.labels, bins)
    figure, ax = _axis(ax, (3.6, 3.4))
    width = curve.edges[1] - curve.edges[0]
    filled = curve.counts > 0
    share = curve.counts / curve.counts.sum()
    colours = plt.cm.Blues(0.35 + 0.65 * share / share.max())
    ax.bar(
        curve.edges[:-1][filled],
        curve.accuracy[filled],
        width=width,
        align="edge",
        color=colours[filled],
        edgecolor="white",
        label="accuracy in bin",
    )
    ax.bar(
        curve.edges[:-1][filled],
        (curve.confidence - curve.accuracy)[filled],
        bottom=curve.accuracy[filled],
        width=width,
        align="edge",
        color="#C44E52",
        alpha=0.35,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    ece = curve.ece
    ax.set_title(title or f"ECE {ece:.3f}", fontsize=10)
    figure.tight_layout()
    return figure


def plot_embedding_maps(
    encoder,
    data,
    *,
    tokenizer=None,
    methods=("pca", "tsne"),
    max_points: int = 1000,
    seed: int = 0,
    title: str | None = None,
):
    """The encoder's codes for labelled `data` in 2-D, one panel per method ("pca", "tsne"),
    coloured by class (labels colour the points, they never shape the map).

    data: a labelled ImageDataset, a TextDataset with `tokenizer`, or an (inputs, labels) tuple.
    At most `max_points` examples, drawn at random with `seed` (t-SNE is slow on many points).
    """
    check_positive("max_points", max_points, integer=True)
    inputs, labels = labelled_inputs(data, encoder, tokenizer)
    if len(inputs) > max_points:  # sample before embedding: only the shown points are encoded
        shown = np.sort(np.random.default_rng(seed).choice(len(inputs), max_points, replace=False))
        inputs, labels = inputs[shown], labels[shown]
    codes = embed(encoder, inputs)
    figure, axes = plt.subplots(1, len(methods), figsize=(4.3 * len(methods), 3.9), squeeze=False)
    for axis, method in zip(axes[0], methods, strict=True):
        plot_embedding_map(codes, labels, getattr(data, "class_names", None), method, ax=axis)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def plot_comparison(comparison: Comparison, ax=None, title: str | None = None):
    """Each method's per-run scores (dots), the same run joined across methods by a grey line,
    and mean ± std (black). Lines that all slope the same way are what a paired comparison sees.

    comparison: a mtkit.evaluation.stats.Comparison (from `compare`). Replaces the former
        `comparison.plot()`.
    """
    names = list(comparison.scores)
    figure, ax = _axis(ax, (1.6 * len(names) + 2, 3.2))
    runs = np.array([comparison.scores[name] for name in names])  # methods × runs
    positions = np.arange(len(names))
    for run in runs.T:
        ax.plot(positions, run, color="grey", alpha=0.5, linewidth=1, zorder=1)
    ax.scatter(np.repeat(positions, runs.shape[1]), runs.ravel(), s=14, color="#4C72B0", zorder=2)
    for position, row in zip(positions, comparison.rows, strict=True):
        ax.errorbar(
            position + 0.12,
            row.spread.mean,
            yerr=row.spread.std,
            fmt="o",
            color="black",
            capsize=4,
            markersize=5,
            zorder=3,
        )
    ax.set_xticks(positions, names)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel(comparison.metric.replace("_", " "))
    ax.grid(axis="y", alpha=0.3)
    runs_word = f"{runs.shape[1]} run{'s' if runs.shape[1] != 1 else ''}"
    ax.set_title(title or f"{runs_word} per method; grey lines join the same run", fontsize=10)
    figure.tight_layout()
    return figure


__all__ = [
    "plot_class_errors",
    "plot_comparison",
    "plot_confusion_matrix",
    "plot_embedding_maps",
    "plot_mistakes",
    "plot_reliability_diagram",
]
