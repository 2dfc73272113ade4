"""Figures that summarise runs use the same spread as the statistics: the sample std."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from mtkit.evaluation.stats import mean_and_spread
from mtkit.plots.figures import plot_mean_with_spread, plot_reconstructions


def _error_bar_half_height(figure) -> list[float]:
    """Half the height of each error bar drawn on the figure's first axes."""
    (bars,) = [c for c in figure.axes[0].containers if hasattr(c, "errorbar")]
    segments = bars.errorbar.lines[2][0].get_segments()
    return [float(abs(segment[1][1] - segment[0][1]) / 2) for segment in segments]


def test_plot_mean_with_spread_shows_the_sample_standard_deviation():
    results = {"a": [0.8, 0.9, 1.0], "b": [0.5]}
    figure = plot_mean_with_spread(results, "accuracy")
    half_heights = _error_bar_half_height(figure)
    assert half_heights == pytest.approx([mean_and_spread(results["a"]).std, 0.0])
    assert half_heights[0] == pytest.approx(float(np.std(results["a"], ddof=1)))
    plt.close(figure)


def test_plot_reconstructions_keeps_the_models_mode():
    class Halve(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor(0.5))
            self.modes = []

        def forward(self, images):
            self.modes.append(self.training)
            return images * self.weight

    model = Halve()
    figure = plot_reconstructions(model, torch.rand(3, 1, 4, 4), count=2)
    assert model.modes == [False] and model.training
    assert len(figure.axes) == 4
    plt.close(figure)
