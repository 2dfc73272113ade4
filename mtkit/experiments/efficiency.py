"""Label efficiency: how test accuracy grows with the number of labels, per method, over seeds.

    table = label_efficiency(digits, [LogisticRegressionBaseline(), FineTuneMethod("linear_probe")])
    print(table.to_markdown())        # mean ± std over seeds, per method × labels per class
    plot_label_efficiency(table)      # accuracy against labels per class, with the spread

Every method follows one protocol (mtkit.experiments.protocol): `run(split, seed, cache)` gets a
`FewLabelSplit` whose test labels are removed, trains on what it is allowed to, and predicts the
test examples; the cache shares pretrained encoders between methods, labels per class and seeds.
The methods are what a user would weigh against each other: scikit-learn baselines
(experiments/baselines.py), the same classifier from scratch, a pretrained encoder with each
strategy and addition (experiments/images.py, text.py, pretrained.py), and self-training.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mtkit.core.checks import check_int_list
from mtkit.core.utils import MtkitError, check_choice
from mtkit.data import few_labels
from mtkit.evaluation.stats import bootstrap_ci, mean_and_spread, paired_comparison
from mtkit.experiments.protocol import PretrainCache, check_methods

# ---------------------------------------------------------------------------------------------
# The experiment and its table.


@dataclass
class EfficiencyRow:
    """One method on one split: accuracy and macro-F1 on the test images, in [0, 1]."""

    method: str
    labels_per_class: int
    seed: int
    accuracy: float
    macro_f1: float
    seconds: float  # training + prediction, without pretraining (see pretrain_seconds)
    trainable_parameters: int
    pretrain_seconds: float = 0.0


@dataclass
class SummaryRow:
    """Mean and sample standard deviation (n − 1) over seeds of one method × labels per class."""

    method: str
    labels_per_class: int
    seeds: int
    accuracy_mean: float
    accuracy_std: float
    macro_f1_mean: float
    macro_f1_std: float
    seconds_mean: float
    trainable_parameters: int
    # 95% bootstrap interval of the mean over seeds (evaluation.stats.bootstrap_ci); with 3-5 seeds
    # it is narrower than the truth, so read it beside the spread, not instead of it.
    accuracy_low: float = float("nan")
    accuracy_high: float = float("nan")
    macro_f1_low: float = float("nan")
    macro_f1_high: float = float("nan")


@dataclass
class LabelEfficiencyTable:
    """The tidy result of `label_efficiency`: one EfficiencyRow per method × labels × seed."""

    rows: list[EfficiencyRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def methods(self) -> list[str]:
        """Method names in the order they were run."""
        return list(dict.fromkeys(row.method for row in self.rows))

    def labels_per_class(self) -> list[int]:
        """The labels-per-class values in the table, increasing."""
        return sorted({row.labels_per_class for row in self.rows})

    def summarize(self) -> list[SummaryRow]:
        return summarize(self)

    def to_markdown(self, metric: str = "accuracy") -> str:
        """A markdown table: a row per method, a column per labels_per_class with the metric in
        percent as mean ± std over seeds [95% bootstrap interval of the mean], then trainable
        parameters and mean seconds per run."""
        check_choice("metric", metric, ("accuracy", "macro_f1"))
        summary = {(s.method, s.labels_per_class): s for s in summarize(self)}
        labels = self.labels_per_class()
        header = ["method", *(f"{k} labels/class" for k in labels), "trainable params", "s/run"]
        lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        for method in self.methods():
            cells = [method]
            for k in labels:
                s = summary.get((method, k))
                if s is None:
                    cells.append("")
                    continue
                mean, std = getattr(s, f"{metric}_mean"), getattr(s, f"{metric}_std")
                low, high = getattr(s, f"{metric}_low"), getattr(s, f"{metric}_high")
                cell = f"{100 * mean:.1f} ± {100 * std:.1f}"
                if s.seeds > 1:
                    cell += f" [{100 * low:.1f}, {100 * high:.1f}]"
                cells.append(cell)
            runs = [s for (name, _), s in summary.items() if name == method]
            parameters = sorted({s.trainable_parameters for s in runs})
            cells.append(
                "–".join(f"{p:,}" for p in (parameters[0], parameters[-1]))
                if len(parameters) > 1
                else f"{parameters[0]:,}"
            )
            cells.append(f"{statistics.mean(s.seconds_mean for s in runs):.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_dicts(self) -> list[dict]:
        """The rows as plain dicts (for json.dump or a DataFrame)."""
        return [dataclasses.asdict(row) for row in self.rows]


def _rows(table) -> list[EfficiencyRow]:
    if isinstance(table, LabelEfficiencyTable):
        rows = table.rows
    elif isinstance(table, (list, tuple)):
        rows = list(table)
    else:
        raise MtkitError(f"expected a LabelEfficiencyTable, got {type(table).__name__}")
    if not rows:
        raise MtkitError("the table is empty")
    if not all(isinstance(row, EfficiencyRow) for row in rows):
        raise MtkitError("expected a LabelEfficiencyTable or a list of EfficiencyRow")
    return rows


def summarize(table) -> list[SummaryRow]:
    """Mean ± sample std over seeds per method × labels_per_class, in the order methods were run
    and by increasing labels per class. One seed gives std 0."""
    rows = _rows(table)
    groups: dict[tuple[str, int], list[EfficiencyRow]] = {}
    for row in rows:
        groups.setdefault((row.method, row.labels_per_class), []).append(row)
    order = list(dict.fromkeys(row.method for row in rows))

    def mean_std(values: list[float]) -> tuple[float, float]:
        spread = mean_and_spread(values)
        return spread.mean, spread.std

    def interval(values: list[float]) -> tuple[float, float]:
        if len(values) < 2:
            return values[0], values[0]
        ci = bootstrap_ci(values, confidence=0.95, resamples=2000, seed=0)
        return ci.low, ci.high

    summary = []
    for (method, labels), members in sorted(
        groups.items(), key=lambda item: (order.index(item[0][0]), item[0][1])
    ):
        accuracy = mean_std([r.accuracy for r in members])
        macro_f1 = mean_std([r.macro_f1 for r in members])
        parameters = round(statistics.median(r.trainable_parameters for r in members))
        seconds = statistics.mean(r.seconds for r in members)
        accuracies, f1s = [r.accuracy for r in members], [r.macro_f1 for r in members]
        summary.append(
            SummaryRow(
                method,
                labels,
                len(members),
                *accuracy,
                *macro_f1,
                seconds,
                parameters,
                *interval(accuracies),
                *interval(f1s),
            )
        )
    return summary


def label_efficiency(
    dataset,
    methods: Sequence,
    labels_per_class: Iterable[int] = (5, 10, 20),
    seeds: Iterable[int] = range(5),
    *,
    test_size: float | int = 500,
    test_seed: int = 0,
    test_indices=None,
    validation_per_class: int | None = None,
    cache: PretrainCache | None = None,
    log=None,
) -> LabelEfficiencyTable:
    """Run every method on `few_labels(dataset, k, seed=s, test_size=..., test_seed=...)` for
    each k in labels_per_class and s in seeds; score each on the test images.

    The test images are the same for every k and seed (chosen by test_seed only), so the
    numbers are comparable; pretrained autoencoders are cached per seed (see PretrainCache).
    Methods get the split with the test labels removed.
    test_indices: fixed test examples instead of a draw of test_size (see few_labels).
    cache: a PretrainCache to use (and fill), e.g. to reuse the autoencoders afterwards.
    log: optional callable taking one line of progress text (e.g. print).
    Returns a LabelEfficiencyTable with one row per method × labels_per_class × seed.
    """
    methods = check_methods(_method_list(methods))
    # A repeated value would run (and count) the same split twice: distinct, by check_int_list.
    labels_per_class = check_int_list(
        "labels_per_class", labels_per_class, allow_zero=False, example="[5, 10, 20]"
    )
    seeds = check_int_list("seeds", seeds, example="[0, 1, 2]")
    # Every split first: a labels_per_class too large for the data fails before any training.
    splits = {
        (k, s): few_labels(
            dataset,
            k,
            validation_per_class=validation_per_class,
            test_size=test_size,
            seed=s,
            test_seed=test_seed,
            test_indices=test_indices,
        )
        for s in seeds
        for k in labels_per_class
    }
    cache = PretrainCache() if cache is None else cache
    table = LabelEfficiencyTable()
    for s in seeds:
        for k, method in ((k, method) for k in labels_per_class for method in methods):
            row = _score(method, splits[(k, s)], k, s, cache)
            table.rows.append(row)
            if log is not None:
                log(
                    f"seed {s} labels/class {k:>3}  {method.name:<40} "
                    f"accuracy {100 * row.accuracy:5.1f}%  {row.seconds:6.2f}s"
                )
    return table


def _method_list(methods) -> list:
    """`methods` as a list, refusing a single method and method classes (not instances)."""
    if not isinstance(methods, (list, tuple)):
        raise MtkitError(f"methods must be a list of methods, got {type(methods).__name__}")
    for method in methods:
        if isinstance(method, type):
            raise MtkitError(f"methods must be instances: {method.__name__}(), not the class")
    return list(methods)


def _score(method, split, labels_per_class: int, seed: int, cache: PretrainCache) -> EfficiencyRow:
    """Run one method on one split with its test labels hidden, and score its predictions."""
    from sklearn.metrics import f1_score

    truth = split.test.labels.numpy()
    # What a method gets: no test labels, and no way to the pool's hidden labels.
    blind = dataclasses.replace(split, test=split.test.without_labels(), _unlabelled_labels=None)
    spent, started = cache.seconds_spent, time.perf_counter()
    result = method.run(blind, seed, cache)
    seconds = time.perf_counter() - started - (cache.seconds_spent - spent)
    predicted = torch.as_tensor(result.predictions).reshape(-1).cpu().numpy()
    if predicted.shape != truth.shape:
        raise MtkitError(
            f"{method.name} returned {predicted.shape[0]} predictions for "
            f"{truth.shape[0]} test examples"
        )
    return EfficiencyRow(
        method=method.name,
        labels_per_class=labels_per_class,
        seed=seed,
        accuracy=float(np.mean(predicted == truth)),
        macro_f1=float(f1_score(truth, predicted, average="macro", zero_division=0)),
        seconds=seconds,
        trainable_parameters=int(result.trainable_parameters),
        pretrain_seconds=float(result.pretrain_seconds),
    )


__all__ = [
    "EfficiencyRow",
    "LabelEfficiencyTable",
    "SummaryRow",
    "label_efficiency",
    "paired_difference",
    "summarize",
]


def paired_difference(table, method: str, baseline: str, labels_per_class: int):
    """Compare two methods seed by seed: both saw the same split for a given seed, so the split's
    luck cancels out and the comparison is much sharper than two means with their spreads.

    Returns a `mtkit.evaluation.stats.PairedComparison` of the accuracies (method − baseline
    per seed):
    .mean, .wins, .interval (Student-t), .p_value and .verdict() ("clearly above", "clearly
    below" or "level with").
    """
    rows = {
        (r.method, r.seed): r.accuracy
        for r in _rows(table)
        if r.labels_per_class == labels_per_class
    }
    seeds = sorted(seed for name, seed in rows if name == method)
    missing = [seed for seed in seeds if (baseline, seed) not in rows]
    if not seeds or missing:
        raise MtkitError(f"need rows of {method!r} and {baseline!r} for the same seeds")
    return paired_comparison(
        {seed: rows[(method, seed)] for seed in seeds},
        {seed: rows[(baseline, seed)] for seed in seeds},
    )
