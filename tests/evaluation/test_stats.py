import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest

from mtkit.core.utils import MtkitError
from mtkit.evaluation.stats import bootstrap_ci, compare, mean_and_spread, paired_comparison
from mtkit.plots.evaluation import plot_comparison


def test_mean_and_spread_uses_the_sample_standard_deviation():
    spread = mean_and_spread([0.8, 0.9, 1.0])
    assert spread.mean == pytest.approx(0.9)
    assert spread.std == pytest.approx(np.std([0.8, 0.9, 1.0], ddof=1))
    assert (spread.count, spread.minimum, spread.maximum) == (3, 0.8, 1.0)
    assert mean_and_spread([0.7]).std == 0.0


def test_bootstrap_intervals_cover_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    true_mean, simulations = 0.7, 200
    covered = [
        bootstrap_ci(rng.normal(true_mean, 0.1, size=40), 0.9, resamples=1000, seed=i).contains(
            true_mean
        )
        for i in range(simulations)
    ]
    # 90% nominal; the percentile bootstrap runs slightly short with 40 values.
    assert 0.82 <= np.mean(covered) <= 0.96


def test_bootstrap_interval_shrinks_like_one_over_root_n_and_is_reproducible():
    rng = np.random.default_rng(1)
    small, large = rng.normal(size=25), rng.normal(size=400)
    ratio = bootstrap_ci(small).width / bootstrap_ci(large).width
    assert 2.5 < ratio < 6  # sqrt(400 / 25) = 4
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    interval = bootstrap_ci(small, method="BCa")
    assert interval.low < np.mean(small) < interval.high


def test_bootstrap_of_identical_values_is_a_point():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no degenerate-distribution warning from scipy
        interval = bootstrap_ci([1.0, 1.0, 1.0])
    assert (interval.low, interval.estimate, interval.high) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: bootstrap_ci([0.5]), "at least 2"),
        (lambda: bootstrap_ci([0.5, math.nan]), "finite"),
        (lambda: bootstrap_ci([0.5, 0.6], confidence=95), r"\(0, 1\)"),
        (lambda: bootstrap_ci([0.5, 0.6], resamples=0), "resamples"),
        (lambda: bootstrap_ci([0.5, 0.6], method="bca"), "bootstrap method"),
        (lambda: bootstrap_ci("0.5 0.6"), "sequence of numbers"),
    ],
)
def test_bootstrap_rejects_bad_arguments(call, message):
    with pytest.raises(MtkitError, match=message):
        call()


def test_two_identical_methods_show_no_difference():
    scores = [0.81, 0.86, 0.79, 0.90, 0.84]
    same = paired_comparison(scores, list(scores))
    assert same.mean == 0.0 and same.p_value == 1.0
    assert not same.significant and same.verdict() == "level with"
    assert same.wins == same.losses == 0


def test_pairing_sees_a_small_steady_gain_that_seed_noise_hides():
    baseline = [0.5 + 0.1 * seed for seed in range(5)]  # seeds differ by 10 points
    method = [score + 0.01 for score in baseline]  # always 1 point better
    result = paired_comparison(method, baseline)
    assert result.verdict() == "clearly above" and result.wins == 5
    low, high = result.interval
    assert low > 0 and result.mean == pytest.approx(0.01)
    assert paired_comparison(baseline, method).verdict() == "clearly below"
    # Unpaired, the two means lie well within one standard deviation of each other.
    assert (
        mean_and_spread(method).mean - mean_and_spread(baseline).mean
        < mean_and_spread(baseline).std
    )


def test_paired_comparison_of_pure_noise_is_rarely_significant():
    rng = np.random.default_rng(0)
    verdicts = [
        paired_comparison(rng.normal(size=5), rng.normal(size=5)).significant for _ in range(400)
    ]
    assert 0.02 <= np.mean(verdicts) <= 0.09  # 5% at confidence 0.95


def test_paired_comparison_pairs_mappings_by_key_and_handles_one_pair():
    method, baseline = {2: 0.9, 0: 0.7, 1: 0.8}, {0: 0.6, 1: 0.7, 2: 0.8}
    assert paired_comparison(method, baseline).differences == pytest.approx((0.1, 0.1, 0.1))
    single = paired_comparison([0.9], [0.8])
    assert single.interval == (-math.inf, math.inf) and single.verdict() == "level with"


@pytest.mark.parametrize(
    "method, baseline, message",
    [
        ([0.9, 0.8], [0.9], "pairs"),
        ({0: 0.9, 1: 0.8}, {0: 0.9, 2: 0.8}, "same seeds"),
        ({0: 0.9}, [0.9], "both"),
        ([], [], "at least 1"),
        ([0.9, math.inf], [0.9, 0.8], "finite"),
    ],
)
def test_paired_comparison_rejects_unpaired_scores(method, baseline, message):
    with pytest.raises(MtkitError, match=message):
        paired_comparison(method, baseline)


def test_compare_puts_the_baseline_first_and_judges_each_method_against_it():
    results = {
        "steady": [0.61, 0.71, 0.81, 0.91],
        "base": [0.60, 0.70, 0.80, 0.90],
        "noisy": [0.65, 0.66, 0.84, 0.87],
    }
    comparison = compare(results, baseline="base")
    assert [row.method for row in comparison.rows] == ["base", "steady", "noisy"]
    assert comparison.rows[0].versus_baseline is None
    assert comparison.rows[1].versus_baseline.verdict() == "clearly above"
    assert comparison.rows[2].versus_baseline.verdict() == "level with"
    text = str(comparison)
    assert "clearly above" in text and "(baseline)" in text
    assert comparison.to_markdown().count("\n") == 2 + len(results)
    figure = plot_comparison(comparison)
    assert len(figure.axes[0].lines) >= len(results["base"])  # one grey line per run
    plt.close(figure)


def test_compare_reads_a_metric_from_result_objects_and_checks_its_input():
    class Result:
        def __init__(self, accuracy):
            self.accuracy = accuracy

    comparison = compare({"a": {0: Result(0.5), 1: Result(0.7)}, "b": {1: 0.8, 0: 0.6}})
    assert comparison.scores == {"a": [0.5, 0.7], "b": [0.6, 0.8]}
    with pytest.raises(MtkitError, match="baseline"):
        compare({"a": [0.5, 0.6]}, baseline="z")
    with pytest.raises(MtkitError, match="macro_f1"):
        compare({"a": [Result(0.5)]}, metric="macro_f1")
    with pytest.raises(MtkitError, match="non-empty dict"):
        compare([0.5, 0.6])
