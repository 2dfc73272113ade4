"""Figures, so that notebooks stay short. Every function returns the matplotlib Figure."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from mtkit.core.batches import forward_in_batches
from mtkit.core.utils import MtkitError
from mtkit.evaluation.stats import mean_and_spread


def show_images(images, labels=None, class_names=None, columns: int = 10, title: str | None = None):
    """A grid of images.

    images: N×C×H×W tensor in [0, 1] (C is 1 or 3) or an ImageDataset (its labels are used).
    labels: optional N integer labels written above each image.
    """
    if hasattr(images, "images"):
        dataset = images
        images = dataset.images
        labels = dataset.labels if labels is None else labels
        class_names = class_names or dataset.class_names
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4) or len(images) == 0:
        raise MtkitError(
            "show_images needs an ImageDataset or a non-empty N×C×H×W image tensor, got "
            f"{type(images).__name__}"
        )
    count = len(images)
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.25 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(_as_picture(images[index]), cmap="gray_r", vmin=0, vmax=1)
        if labels is not None:
            label = int(labels[index])
            axis.set_title(class_names[label] if class_names else str(label), fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_reconstructions(model, images, count: int = 10, title: str | None = None):
    """Originals (top row) above the model's reconstructions (bottom row), the model run in
    eval mode.

    images: N×C×H×W tensor or an ImageDataset; the first `count` are shown.
    """
    images = images.images if hasattr(images, "images") else images
    originals = images[:count]
    rebuilt = forward_in_batches(model, originals)
    figure, axes = plt.subplots(2, len(originals), figsize=(1.1 * len(originals), 2.5))
    axes = np.atleast_2d(axes).reshape(2, -1)
    for column in range(len(originals)):
        for row, picture in enumerate((originals[column], rebuilt[column])):
            axes[row, column].imshow(_as_picture(picture), cmap="gray_r", vmin=0, vmax=1)
            axes[row, column].axis("off")
    axes[0, 0].set_title("original", fontsize=8, loc="left")
    axes[1, 0].set_title("rebuilt", fontsize=8, loc="left")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_label_counts(dataset, title: str | None = None):
    """Bar chart of how many examples each class has (shows class imbalance at a glance)."""
    counts = np.bincount(np.asarray(dataset.labels), minlength=dataset.num_classes)
    figure, axis = plt.subplots(figsize=(max(3.0, 0.5 * len(counts) + 1), 2.6))
    axis.bar(range(len(counts)), counts, color="#4C72B0")
    axis.set_xticks(range(len(counts)), dataset.class_names)
    axis.set_ylabel("examples")
    axis.set_title(title or f"{dataset.name}: {len(dataset)} examples")
    figure.tight_layout()
    return figure


def _as_picture(image: torch.Tensor) -> np.ndarray:
    """C×H×W tensor → H×W (grey) or H×W×3 (colour) array for imshow."""
    array = image.detach().cpu().numpy()
    return array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))


def plot_embedding_map(codes, labels, class_names=None, method: str = "pca", ax=None, title=None):
    """Scatter the codes in 2-D (PCA or t-SNE), coloured by class.

    codes: N×D array of features; labels: N integers (used only for colour, never for the map).
    Returns the Figure.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    codes = np.asarray(codes)
    if len(codes) != len(labels):
        raise MtkitError(f"{len(codes)} codes but {len(labels)} labels: give one label per code")
    if method == "pca":
        points = PCA(n_components=2, random_state=0).fit_transform(codes)
    elif method == "tsne":
        perplexity = min(30.0, (len(codes) - 1) / 3)
        points = TSNE(n_components=2, perplexity=perplexity, random_state=0).fit_transform(codes)
    else:
        raise ValueError(f"unknown method {method!r}; choose 'pca' or 'tsne'")
    if ax is None:
        figure, ax = plt.subplots(figsize=(4.2, 3.8))
    else:
        figure = ax.figure
    labels = np.asarray(labels)
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=8, alpha=0.8)
    if class_names is not None and len(class_names) <= 10:
        handles = scatter.legend_elements()[0]
        names = [class_names[i] for i in np.unique(labels)]
        ax.legend(handles, names, fontsize=7, markerscale=0.7, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or method.upper(), fontsize=10)
    return figure


def plot_mean_with_spread(results: dict, ylabel: str, title: str | None = None, ax=None):
    """Bars of the mean with error bars of the sample standard deviation (n − 1, as
    `mtkit.evaluation.stats.mean_and_spread`; 0 for a single value), one bar per entry, and
    the values themselves as dots.

    results: {name: list of values (one per seed)}. Returns the Figure.
    """
    names = list(results)
    summaries = [mean_and_spread(results[name]) for name in names]
    means = [summary.mean for summary in summaries]
    spreads = [summary.std for summary in summaries]
    if ax is None:
        figure, ax = plt.subplots(figsize=(1.3 * len(names) + 1.5, 2.8))
    else:
        figure = ax.figure
    ax.bar(names, means, yerr=spreads, capsize=4, color="#4C72B0", alpha=0.85)
    for index, values in enumerate(results.values()):
        ax.scatter([index] * len(values), values, color="black", s=10, zorder=3)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


# --- adapters ---


def plot_accuracy_vs_trainable(summaries, ax=None, title: str | None = None):
    """Test accuracy against the percentage of trainable parameters, one point per method.

    summaries: mtkit.stages.adapters.MethodSummary items (from summarize_runs): LoRA ranks and
    bottleneck sizes are joined by lines and labelled with their size; error bars are the
    standard deviation over seeds. The x axis is logarithmic. Returns the Figure.
    """
    if ax is None:
        figure, ax = plt.subplots(figsize=(8.5, 4))
    else:
        figure = ax.figure
    styles = {
        "linear_probe": ("linear probe", "#4C72B0", "s"),
        "mlp_head": ("frozen encoder + MLP head", "#8172B2", "D"),
        "lora": ("LoRA (rank)", "#DD8452", "o"),
        "bottleneck": ("bottleneck adapter (size)", "#55A868", "^"),
        "full": ("full fine-tuning", "#C44E52", "*"),
    }
    for method, (name, color, marker) in styles.items():
        points = [s for s in summaries if s.method == method]
        if not points:
            continue
        x = [s.percent for s in points]
        y = [100 * s.mean for s in points]
        spread = [100 * s.std for s in points]
        line = "-" if len(points) > 1 else "none"
        ax.errorbar(
            x,
            y,
            yerr=spread,
            color=color,
            marker=marker,
            linestyle=line,
            capsize=3,
            markersize=9 if marker == "*" else 6,
            label=name,
        )
        if method in ("lora", "bottleneck", "mlp_head"):
            for point, height in zip(points, y, strict=True):
                ax.annotate(
                    str(point.size),
                    (point.percent, height),
                    textcoords="offset points",
                    xytext=(4, 5),
                    fontsize=7,
                    color=color,
                )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (% of those the model uses)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_file_sizes(sizes: dict, ax=None, title: str | None = None):
    """Horizontal bars of file sizes: sizes maps a name to a size in bytes. Returns the Figure."""
    names = list(sizes)
    kilobytes = [sizes[name] / 1024 for name in names]
    if ax is None:
        figure, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1))
    else:
        figure = ax.figure
    ax.barh(names, kilobytes, color="#4C72B0")
    for row, value in enumerate(kilobytes):
        ax.text(value, row, f" {value:,.1f} KB", va="center", fontsize=8)
    ax.invert_yaxis()  # the first entry on top, as in the dict
    ax.set_xlabel("size on disk (KB)")
    ax.set_xlim(0, max(kilobytes) * 1.3)
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure
