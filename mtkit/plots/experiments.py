"""Figures of experiments: label-efficiency curves, adaptation to a shifted domain."""

from __future__ import annotations

import numpy as np

from mtkit.core.utils import check_choice
from mtkit.evaluation.stats import mean_and_spread
from mtkit.experiments.efficiency import summarize


def plot_label_efficiency(table, metric: str = "accuracy", ax=None, title: str | None = None):
    """Mean `metric` (percent) against labels per class, one line per method, with a band of
    ± one standard deviation over seeds. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt  # here, so importing mtkit.experiments.efficiency stays fast

    check_choice("metric", metric, ("accuracy", "macro_f1"))
    summary = summarize(table)
    if ax is None:
        figure, ax = plt.subplots(figsize=(8.5, 4))
    else:
        figure = ax.figure
    methods = list(dict.fromkeys(s.method for s in summary))
    for method in methods:
        rows = [s for s in summary if s.method == method]
        x = np.array([s.labels_per_class for s in rows])
        mean = 100 * np.array([getattr(s, f"{metric}_mean") for s in rows])
        std = 100 * np.array([getattr(s, f"{metric}_std") for s in rows])
        (line,) = ax.plot(x, mean, marker="o", label=method)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    labels = sorted({s.labels_per_class for s in summary})
    ax.set_xscale("log")
    ax.set_xticks(labels, [str(k) for k in labels])
    ax.minorticks_off()
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel(f"test {metric.replace('_', '-')} (%)")
    seeds = max(s.seeds for s in summary)
    ax.set_title(title or f"mean ± std over {seeds} seed{'s' if seeds != 1 else ''}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    return figure


def plot_adaptations(results: list, ax=None, title: str | None = None):
    """Bars per method (mean ± sample std over seeds of ShiftAdaptation results): accuracy on
    the new and on the old domain, with the accuracies before adapting as lines."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    methods = list(dict.fromkeys(r.method for r in results))

    def mean_std(method, name):
        spread = mean_and_spread([getattr(r, name) for r in results if r.method == method])
        return spread.mean, spread.std

    positions = np.arange(len(methods))
    for offset, name, label in (
        (-0.2, "new_accuracy", "new domain"),
        (0.2, "old_accuracy", "old domain"),
    ):
        stats = [mean_std(m, name) for m in methods]
        ax.bar(
            positions + offset, [s[0] for s in stats], 0.4, yerr=[s[1] for s in stats], label=label
        )
    ax.axhline(np.mean([r.old_before for r in results]), color="tab:orange", linestyle="--",
               linewidth=1, label="old domain, before")  # fmt: skip
    ax.axhline(np.mean([r.new_before for r in results]), color="tab:blue", linestyle=":",
               linewidth=1, label="new domain, before")  # fmt: skip
    ax.set_xticks(positions, methods)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    if title:
        ax.set_title(title)
    return ax
