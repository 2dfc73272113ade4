"""Every figure of the series, so notebooks stay short: images and training (figures.py),
evaluation (evaluation.py)."""

from mtkit.plots.figures import (
    plot_accuracy_vs_trainable,
    plot_embedding_map,
    plot_file_sizes,
    plot_label_counts,
    plot_mean_with_spread,
    plot_reconstructions,
    show_images,
)

__all__ = [
    "plot_accuracy_vs_trainable",
    "plot_embedding_map",
    "plot_file_sizes",
    "plot_label_counts",
    "plot_mean_with_spread",
    "plot_reconstructions",
    "show_images",
]

from mtkit.plots import evaluation  # noqa: E402, F401
