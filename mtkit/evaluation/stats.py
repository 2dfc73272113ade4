"""Statistics for honest comparisons: spread over seeds, bootstrap intervals, paired differences.

Every number a notebook reports comes from one training run on one split, and both are luck:
another seed (initial weights, which examples got labels) or another test sample would give a
different number. Three tools say how much:

    mean_and_spread(values)           mean ± sample standard deviation over seeds
    bootstrap_ci(values)              an interval for the mean: resample the values, recompute
    paired_comparison(method, base)   is method − baseline, seed by seed, larger than the noise?

The paired comparison is the sharpest of the three. When two methods ran on the same seeds and
splits, a hard split is hard for both; subtracting seed by seed cancels that shared luck, and
what remains is the difference the method makes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mtkit.core.checks import MtkitError, check_choice, check_number, check_positive

BOOTSTRAP_METHODS = ("percentile", "BCa")
MIN_RESAMPLES = 1000  # Efron & Tibshirani's minimum: fewer, and the interval's ends are luck


def _check_values(values, name: str = "values", minimum: int = 1) -> np.ndarray:
    """A 1-D float64 array of finite numbers with at least `minimum` entries, or MtkitError."""
    if isinstance(values, (str, bytes, Mapping)):
        raise MtkitError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise MtkitError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if array.ndim != 1:
        raise MtkitError(f"{name} must be one-dimensional, got shape {array.shape}")
    if len(array) < minimum:
        raise MtkitError(f"{name} needs at least {minimum} value(s), got {len(array)}")
    if not np.all(np.isfinite(array)):
        raise MtkitError(f"{name} must be finite numbers; got NaN or infinity in {values!r}")
    return array


def _check_confidence(confidence) -> float:
    number = isinstance(confidence, (int, float)) and not isinstance(confidence, bool)
    if not number or not 0 < confidence < 1:
        raise MtkitError(f"confidence must lie in (0, 1), e.g. 0.95; got {confidence!r}")
    return float(confidence)


# --- Mean and spread over seeds -------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Summary of one method's scores over seeds. std is the sample standard deviation (n − 1),
    0 for a single value: how much one more run would typically differ from the mean."""

    mean: float
    std: float
    count: int
    minimum: float
    maximum: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f} (n={self.count})"


def mean_and_spread(values) -> Spread:
    """Mean, sample standard deviation, count, min and max of a sequence of scores."""
    array = _check_values(values)
    std = float(np.std(array, ddof=1)) if len(array) > 1 else 0.0
    return Spread(float(np.mean(array)), std, len(array), float(array.min()), float(array.max()))


# --- Bootstrap confidence intervals ---------------------------------------------------------------


@dataclass(frozen=True)
class ConfidenceInterval:
    """An interval [low, high] for a mean `estimate`, at the given confidence (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    confidence: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        percent = f"{100 * self.confidence:.0f}%"
        return f"{self.estimate:.3f} ({percent} CI {self.low:.3f} to {self.high:.3f})"


def bootstrap_ci(
    values,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
    method: str = "percentile",
) -> ConfidenceInterval:
    """A bootstrap confidence interval for the mean of `values` (scipy.stats.bootstrap).

    The bootstrap pretends the values are the whole population: it draws `resamples` new
    samples of the same size with replacement, takes each one's mean, and keeps the middle
    `confidence` share of those means (method="percentile"; "BCa" corrects for skew and bias).
    Use it for per-example scores (1/0 for right/wrong on each test example: an interval for
    accuracy) or per-seed scores. With very few values (3 seeds) every bootstrap interval is too
    narrow: it cannot see variation the sample does not contain. Deterministic for a given seed.

    values: 1-D, at least 2 finite numbers; resamples ≥ MIN_RESAMPLES. Returns a ConfidenceInterval.
    """
    from scipy.stats import bootstrap

    array = _check_values(values, minimum=2)
    confidence = _check_confidence(confidence)
    check_number("resamples", resamples, integer=True, low=MIN_RESAMPLES)
    check_positive("seed", seed, integer=True, allow_zero=True)
    check_choice("bootstrap method", method, BOOTSTRAP_METHODS)
    estimate = float(np.mean(array))
    if np.all(array == array[0]):  # every resample is the same sample: no spread to find
        return ConfidenceInterval(estimate, estimate, estimate, confidence)
    # batch: resamples drawn per step. All at once, 10,000 resamples of 5,000 test examples
    # would hold 400 MB; 1,000 at a time is as fast and holds a tenth.
    result = bootstrap(
        (array,),
        np.mean,
        n_resamples=resamples,
        batch=1000,
        confidence_level=confidence,
        method=method,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return ConfidenceInterval(estimate, float(interval.low), float(interval.high), confidence)


# --- Paired comparison of two methods over the same seeds / splits --------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """`method` minus `baseline`, one difference per shared seed or split.

    differences: the per-pair differences, in pair order.
    confidence: the level of `interval` and of the verdict (0.95: a two-sided paired t-test at
        the 5% level).
    """

    differences: tuple[float, ...]
    confidence: float = 0.95

    @property
    def count(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return float(np.mean(self.differences))

    @property
    def std(self) -> float:
        """Sample standard deviation of the differences (0 for a single pair)."""
        return mean_and_spread(self.differences).std

    @property
    def standard_error(self) -> float:
        """How far the mean difference would typically move with other seeds; inf for 1 pair."""
        return self.std / math.sqrt(self.count) if self.count > 1 else math.inf

    @property
    def wins(self) -> int:
        """Pairs where the method beat the baseline."""
        return sum(difference > 0 for difference in self.differences)

    @property
    def losses(self) -> int:
        return sum(difference < 0 for difference in self.differences)

    @property
    def interval(self) -> tuple[float, float]:
        """Student-t confidence interval of the mean difference: the range of true differences
        these pairs are compatible with. Uses t, not 2·SE: with 5 seeds the multiplier is 2.78."""
        from scipy.stats import t

        if self.count < 2:
            return (-math.inf, math.inf)
        if self.standard_error == 0:  # identical differences: nothing varies
            return (self.mean, self.mean)
        margin = float(t.ppf(0.5 + self.confidence / 2, df=self.count - 1)) * self.standard_error
        return (self.mean - margin, self.mean + margin)

    @property
    def p_value(self) -> float:
        """Two-sided paired t-test: how often differences this far from 0 would appear if the
        two methods were equally good. NaN for a single pair."""
        from scipy.stats import ttest_1samp

        if self.count < 2:
            return math.nan
        if self.standard_error == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(ttest_1samp(self.differences, 0.0).pvalue)

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0: the difference is larger than the seed noise."""
        low, high = self.interval
        return low > 0 or high < 0

    def verdict(self) -> str:
        """ "clearly above", "clearly below" or "level with" (no difference the pairs can show).
        Reads as a sentence: f"{method} is {verdict} {baseline}"."""
        if not self.significant:
            return "level with"
        return "clearly above" if self.mean > 0 else "clearly below"

    def __str__(self) -> str:
        low, high = self.interval
        return (
            f"{self.verdict()}: mean difference {self.mean:+.4f} "
            f"({100 * self.confidence:.0f}% CI {low:+.4f} to {high:+.4f}, p = {self.p_value:.3f}), "
            f"better on {self.wins} of {self.count}"
        )


def paired_comparison(method, baseline, confidence: float = 0.95) -> PairedComparison:
    """Compare two methods run on the same seeds/splits, pair by pair.

    method, baseline: per-run scores, either two sequences of equal length (paired by position:
        entry i of both came from seed/split i) or two mappings with the same keys (e.g.
        {seed: accuracy}; paired by key).
    Returns a PairedComparison of method − baseline; its `verdict()` says whether the difference
    is larger than the noise between pairs. Two identical methods give "level with".
    """
    confidence = _check_confidence(confidence)
    if isinstance(method, Mapping) or isinstance(baseline, Mapping):
        if not (isinstance(method, Mapping) and isinstance(baseline, Mapping)):
            raise MtkitError(
                "give both methods' scores as mappings {seed: score}, or both as lists"
            )
        if set(method) != set(baseline):
            only = sorted(map(repr, set(method) ^ set(baseline)))
            raise MtkitError(
                f"a paired comparison needs scores for the same seeds/splits; not in both: {only}"
            )
        method, baseline = list(method.values()), [baseline[key] for key in method]
    method_values = _check_values(method, "method scores")
    baseline_values = _check_values(baseline, "baseline scores")
    if len(method_values) != len(baseline_values):
        raise MtkitError(
            f"paired scores must come in pairs: {len(method_values)} method scores, "
            f"{len(baseline_values)} baseline scores"
        )
    differences = method_values - baseline_values
    return PairedComparison(tuple(float(d) for d in differences), confidence)


# --- Comparing methods over seeds -----------------------------------------------------------------


@dataclass
class ComparisonRow:
    """One method: its spread over runs and, unless it is the baseline, the paired comparison
    with the baseline (method − baseline, run by run)."""

    method: str
    spread: Spread
    versus_baseline: PairedComparison | None


@dataclass
class Comparison:
    """The result of `compare`: one row per method, the baseline first.

    scores: {method: [score per run]}, every list in the baseline's run order (for plots).
    metric: what the scores are; confidence: the level of the paired intervals.
    """

    rows: list[ComparisonRow]
    baseline: str
    metric: str
    confidence: float
    scores: dict[str, list[float]]

    def _table(self) -> list[list[str]]:
        """Header and one row of cells per method."""
        header = ["method", "runs", f"{self.metric} mean ± std", "min–max"]
        header += [f"− {self.baseline} [{100 * self.confidence:.0f}% CI]", "wins", "verdict"]
        table = [header]
        for row in self.rows:
            spread, paired = row.spread, row.versus_baseline
            cells = [row.method, str(spread.count), f"{spread.mean:.3f} ± {spread.std:.3f}"]
            cells.append(f"{spread.minimum:.3f}–{spread.maximum:.3f}")
            if paired is None:
                cells += ["(baseline)", "", ""]
            else:
                low, high = paired.interval
                cells.append(f"{paired.mean:+.3f} [{low:+.3f}, {high:+.3f}]")
                cells += [f"{paired.wins}/{paired.count}", paired.verdict()]
            table.append(cells)
        return table

    def to_markdown(self) -> str:
        """A markdown table, one row per method."""
        header, *rows = self._table()
        lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * 5 + "|---|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        table = self._table()
        widths = [max(len(cells[column]) for cells in table) for column in range(len(table[0]))]
        text_columns = (0, len(widths) - 1)  # names and verdicts read left-aligned
        return "\n".join(
            "  ".join(
                cell.ljust(width) if column in text_columns else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
            for cells in table
        )


def _score(value, metric: str) -> float:
    """A number as it is; anything else (an Evaluation) by its attribute `metric`."""
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return float(value)
    if not hasattr(value, metric):
        raise MtkitError(
            f"scores must be numbers or objects with a {metric!r} attribute (an Evaluation), "
            f"got {type(value).__name__}"
        )
    return float(getattr(value, metric))


def _runs(name: str, runs, metric: str) -> dict:
    """{run key: score}: a list's positions become its keys, a dict keeps its own."""
    if isinstance(runs, (list, tuple, np.ndarray)):
        runs = dict(enumerate(runs))
    if not isinstance(runs, dict):
        raise MtkitError(
            f"the scores of {name!r} must be a list (one per run) or a dict {{seed: score}}"
        )
    return {key: _score(value, metric) for key, value in runs.items()}


def compare(
    results: dict, baseline: str | None = None, *, metric: str = "accuracy", confidence=0.95
) -> Comparison:
    """One tidy table (print it, or `.to_markdown()`) for several methods run over the same
    seeds/splits; draw it with `mtkit.plots.evaluation.plot_comparison(comparison)`.

    results: {method name: per-run scores}, the scores a list (run i of every method used seed
        or split i) or a dict {seed: score}; a score is a number or an Evaluation, whose
        attribute `metric` is read ("accuracy", "macro_f1", "expected_calibration_error",
        "negative_log_likelihood").
    baseline: the method the others are compared with, pair by pair (default: the first).
    Returns a Comparison: mean ± sample std over runs per method, and for every other method the
    paired difference to the baseline with its confidence interval and verdict.
    """
    if not isinstance(metric, str) or not metric:
        raise MtkitError(f"metric must be the name of the score, got {metric!r}")
    confidence = _check_confidence(confidence)
    if not isinstance(results, dict) or not results:
        raise MtkitError("results must be a non-empty dict {method name: per-run scores}")
    baseline = next(iter(results)) if baseline is None else baseline
    if baseline not in results:
        raise MtkitError(f"baseline {baseline!r} is not among the methods {list(results)}")
    scores = {name: _runs(name, runs, metric) for name, runs in results.items()}
    rows = []
    for name in [baseline, *(name for name in scores if name != baseline)]:
        paired = None
        if name != baseline:
            paired = paired_comparison(scores[name], scores[baseline], confidence)
        rows.append(ComparisonRow(name, mean_and_spread(list(scores[name].values())), paired))
    in_order = {row.method: [scores[row.method][key] for key in scores[baseline]] for row in rows}
    return Comparison(rows, baseline, metric, confidence, in_order)


__all__ = [
    "Comparison",
    "ComparisonRow",
    "ConfidenceInterval",
    "PairedComparison",
    "Spread",
    "bootstrap_ci",
    "compare",
    "mean_and_spread",
    "paired_comparison",
]
