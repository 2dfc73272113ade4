"""Every figure of the series, so notebooks stay short: images and training (figures.py),
evaluation (evaluation.py), experiments (experiments.py: label efficiency, domain shift)."""

from mtkit.plots.experiments import plot_adaptations, plot_label_efficiency
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
    "plot_adaptations",
    "plot_label_efficiency",
    "plot_accuracy_vs_trainable",
    "plot_embedding_map",
    "plot_file_sizes",
    "plot_label_counts",
    "plot_mean_with_spread",
    "plot_reconstructions",
    "show_images",
]

from mtkit.plots import evaluation  # noqa: E402, F401
