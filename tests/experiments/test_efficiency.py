"""label_efficiency: the table's shape, honesty (no test images or labels), summary, plot."""

from __future__ import annotations

import dataclasses
import inspect
import statistics

import matplotlib
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mtkit.core.utils import MtkitError
from mtkit.data import ImageDataset, few_labels
from mtkit.experiments import (
    EfficiencyRow,
    FineTuneMethod,
    LabelEfficiencyTable,
    LogisticRegressionBaseline,
    MethodResult,
    PCALogisticBaseline,
    PretrainCache,
    PretrainSpec,
    SelfTrainMethod,
    default_methods,
    label_efficiency,
    summarize,
)
from mtkit.plots.experiments import plot_label_efficiency
from mtkit.stages.selftrain import self_train

matplotlib.use("Agg")

TINY = PretrainSpec(hidden_sizes=(16,), latent_size=6, epochs=2, batch_size=64)


def numbered_dataset(count: int = 120, classes: int = 3) -> ImageDataset:
    """1×8×8 images whose first pixel encodes their index (i / count), so any image can be
    traced back; the class sets the brightness of the rest."""
    labels = torch.arange(count) % classes
    generator = torch.Generator().manual_seed(0)
    images = 0.2 * torch.rand(count, 1, 8, 8, generator=generator)
    images += 0.6 * labels[:, None, None, None] / classes
    images[:, 0, 0, 0] = torch.arange(count) / count
    return ImageDataset.from_tensors(images, labels)


def image_ids(images: torch.Tensor, count: int = 120) -> set[int]:
    return set(torch.round(images[:, 0, 0, 0] * count).long().tolist())


class Spy:
    """A method that records what it was given and predicts class 0."""

    name = "spy"

    def __init__(self):
        self.splits = []

    def run(self, split, seed, cache):
        self.splits.append(split)
        return MethodResult(torch.zeros(len(split.test), dtype=torch.long), 0)


def test_one_row_per_method_labels_and_seed_with_sane_fields():
    methods = [
        LogisticRegressionBaseline(),
        FineTuneMethod("linear_probe", pretrain=TINY, options={"epochs": 2}),
        FineTuneMethod("scratch", pretrain=TINY, options={"epochs": 2}),
    ]
    table = label_efficiency(
        numbered_dataset(), methods, labels_per_class=(2, 4), seeds=(0, 1), test_size=30
    )
    assert len(table) == 3 * 2 * 2
    keys = {(row.method, row.labels_per_class, row.seed) for row in table}
    assert len(keys) == 12
    assert table.methods() == [m.name for m in methods]
    assert table.labels_per_class() == [2, 4]
    for row in table:
        assert 0 <= row.accuracy <= 1 and 0 <= row.macro_f1 <= 1
        assert row.seconds >= 0 and row.trainable_parameters > 0
    probe = [row for row in table if row.method == "pretrained + linear_probe"]
    assert {row.trainable_parameters for row in probe} == {6 * 3 + 3}  # the head only
    assert all(row.pretrain_seconds > 0 for row in probe)
    scratch = [row for row in table if row.method == "same classifier from scratch"]
    assert all(row.pretrain_seconds == 0 for row in scratch)


def test_pretraining_runs_once_per_seed_and_never_sees_test_images(monkeypatch):
    seen = []
    original = PretrainSpec.pretrain

    def recording(self, images, seed):
        seen.append((seed, image_ids(images)))
        return original(self, images, seed)

    monkeypatch.setattr(PretrainSpec, "pretrain", recording)
    dataset = numbered_dataset()
    methods = [
        FineTuneMethod("linear_probe", pretrain=TINY, options={"epochs": 1}),
        FineTuneMethod("full", pretrain=TINY, options={"epochs": 1}),
    ]
    label_efficiency(dataset, methods, labels_per_class=(2, 4), seeds=(0, 1), test_size=30)
    assert [seed for seed, _ in seen] == [0, 1]  # cached across labels_per_class and methods
    test_ids = set(few_labels(dataset, 2, test_size=30, test_seed=0).test_indices.tolist())
    for _, ids in seen:
        assert ids.isdisjoint(test_ids)
        assert len(ids) == 120 - 30  # every other image: labelled, validation and pool


def test_methods_never_get_test_labels():
    spy = Spy()
    table = label_efficiency(
        numbered_dataset(), [spy], labels_per_class=(2,), seeds=(0,), test_size=30
    )
    assert spy.splits[0].test.labels is None
    assert len(spy.splits[0].test) == 30
    with pytest.raises(MtkitError, match="pool labels were removed"):
        spy.splits[0].unlabelled_labels_for_evaluation()
    assert table.rows[0].accuracy == pytest.approx(10 / 30)  # class 0 is a third of the test set


class _Refuse:
    """Stands in for a part of the split the baselines must not touch."""

    def __getattr__(self, name):
        raise AssertionError(f"a scikit-learn baseline read {name!r} of a non-labelled part")


@pytest.mark.parametrize("baseline", [LogisticRegressionBaseline(), PCALogisticBaseline(5)])
def test_sklearn_baselines_train_on_the_labelled_images_only(baseline):
    split = few_labels(numbered_dataset(), 4, test_size=30, seed=0)
    guarded = dataclasses.replace(
        split, unlabelled=_Refuse(), validation=_Refuse(), test=split.test.without_labels()
    )
    result = baseline.run(guarded, seed=0, cache=PretrainCache())
    assert result.predictions.shape == (30,)
    if isinstance(baseline, LogisticRegressionBaseline):  # the same as fitting it by hand
        x = split.labelled.images.reshape(len(split.labelled), -1).numpy()
        model = LogisticRegression(max_iter=5000).fit(x, split.labelled.labels.numpy())
        expected = model.predict(split.test.images.reshape(30, -1).numpy())
        assert result.predictions.tolist() == expected.tolist()
        assert result.trainable_parameters == 64 * 3 + 3


def test_summarize_gives_mean_and_sample_std_per_method_and_labels():
    rows = [
        EfficiencyRow("b", 5, 0, 0.5, 0.4, 1.0, 10),
        EfficiencyRow("a", 5, 0, 0.8, 0.7, 2.0, 20),
        EfficiencyRow("a", 5, 1, 0.9, 0.8, 4.0, 20),
        EfficiencyRow("a", 5, 2, 0.7, 0.6, 3.0, 20),
        EfficiencyRow("a", 10, 0, 0.95, 0.9, 1.0, 20),
    ]
    summary = summarize(LabelEfficiencyTable(rows))
    assert [(s.method, s.labels_per_class) for s in summary] == [("b", 5), ("a", 5), ("a", 10)]
    a5 = summary[1]
    assert a5.seeds == 3
    assert a5.accuracy_mean == pytest.approx(0.8)
    assert a5.accuracy_std == pytest.approx(statistics.stdev([0.8, 0.9, 0.7]))
    assert a5.accuracy_std == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
    assert a5.macro_f1_mean == pytest.approx(0.7) and a5.seconds_mean == pytest.approx(3.0)
    assert summary[0].accuracy_std == 0.0  # a single seed has no spread
    assert summarize(rows) == summary  # a plain list of rows works too


def test_markdown_and_plot_show_every_method():
    rows = [
        EfficiencyRow(method, k, seed, 0.5 + 0.01 * k + 0.01 * seed, 0.5, 1.0, 10)
        for method in ("first", "second")
        for k in (5, 10)
        for seed in (0, 1)
    ]
    table = LabelEfficiencyTable(rows)
    markdown = table.to_markdown()
    assert markdown.splitlines()[0].startswith("| method | 5 labels/class | 10 labels/class")
    assert "| first | 55.5 ± 0.7 [55.0, 56.0] | 60.5 ± 0.7 [60.0, 61.0] |" in markdown
    figure = plot_label_efficiency(table)
    axis = figure.axes[0]
    assert [line.get_label() for line in axis.get_lines()] == ["first", "second"]
    assert len(axis.collections) == 2  # one ±std band per method
    assert list(axis.get_lines()[0].get_ydata()) == pytest.approx([55.5, 60.5])


def test_bad_arguments_fail_before_any_training():
    spy = Spy()
    with pytest.raises(MtkitError, match="were asked for"):  # labels_per_class too large
        label_efficiency(
            numbered_dataset(), [spy], labels_per_class=(2, 100), seeds=(0,), test_size=30
        )
    assert spy.splits == []
    with pytest.raises(MtkitError, match="unique"):
        label_efficiency(numbered_dataset(), [Spy(), Spy()], labels_per_class=(2,), seeds=(0,))
    with pytest.raises(MtkitError, match="labels_per_class"):
        label_efficiency(numbered_dataset(), [spy], labels_per_class=(0,), seeds=(0,))
    with pytest.raises(MtkitError, match="name"):
        label_efficiency(numbered_dataset(), [object()], labels_per_class=(2,), seeds=(0,))
    with pytest.raises(MtkitError, match="noise_level"):
        PretrainSpec(noise_level=-0.1)
    with pytest.raises(MtkitError, match="unknown strategy"):
        FineTuneMethod("frozen")
    with pytest.raises(MtkitError, match="threshold"):
        SelfTrainMethod(threshold=1.2)
    with pytest.raises(MtkitError, match="itself"):
        FineTuneMethod("full", options={"strategy": "full"})


def test_self_train_method_defaults_follow_self_train():
    defaults = inspect.signature(self_train).parameters
    method = SelfTrainMethod()
    for name in ("rounds", "threshold", "smoothing", "strategy"):
        assert getattr(method, name) == defaults[name].default


def test_self_train_method_runs_on_a_split():
    method = SelfTrainMethod(
        FineTuneMethod("linear_probe", pretrain=TINY, options={"epochs": 2}),
        rounds=1,
        options={"epochs": 1},
    )
    table = label_efficiency(
        numbered_dataset(), [method], labels_per_class=(3,), seeds=(0,), test_size=30
    )
    assert table.rows[0].method == "pretrained + linear_probe + self-training"
    assert 0 <= table.rows[0].accuracy <= 1


def test_the_default_line_up():
    names = [method.name for method in default_methods(TINY)]
    assert names[:3] == [
        "logistic regression on pixels",
        "PCA + logistic regression",
        "same classifier from scratch",
    ]
    assert "pretrained + gradual_unfreeze" in names and "contrastive + linear_probe" in names
    assert names[-2].endswith("self-training") and names[-1].endswith("consistency")
    assert len(set(names)) == len(names)


def test_paired_difference_compares_seed_by_seed():
    from mtkit.experiments.efficiency import EfficiencyRow, LabelEfficiencyTable, paired_difference

    def row(method, seed, accuracy):
        return EfficiencyRow(method, 10, seed, accuracy, accuracy, 0.0, 1)

    # B is always 1 point better than A on the same seed, while seeds vary by 10 points.
    table = LabelEfficiencyTable(
        [row("A", s, 0.5 + 0.1 * s) for s in range(4)]
        + [row("B", s, 0.51 + 0.1 * s) for s in range(4)]
    )
    difference = paired_difference(table, "B", "A", 10)
    assert difference.mean == pytest.approx(0.01)
    assert difference.wins == 4
    assert difference.verdict() == "clearly above"
    assert difference.interval[0] > 0  # the t-interval of the mean difference excludes 0
    assert paired_difference(table, "A", "A", 10).verdict() == "level with"
    with pytest.raises(MtkitError, match="same seeds"):
        paired_difference(table, "B", "C", 10)


def test_summary_reports_a_bootstrap_interval_around_the_mean():
    rows = [EfficiencyRow("A", 10, s, a, a, 0.0, 1) for s, a in enumerate([0.80, 0.84, 0.88])]
    (summary,) = summarize(rows)
    assert summary.accuracy_low < summary.accuracy_mean < summary.accuracy_high
    assert 0.80 <= summary.accuracy_low and summary.accuracy_high <= 0.88
    assert "84.0 ± 4.0 [" in LabelEfficiencyTable(rows).to_markdown()
    (single,) = summarize(rows[:1])
    assert single.accuracy_low == single.accuracy_high == 0.80


def test_pretrained_autoencoder_names_its_arguments_when_given_the_wrong_ones():
    from mtkit.experiments import pretrained_autoencoder

    split = few_labels(numbered_dataset(), 2, test_size=30, seed=0)
    with pytest.raises(MtkitError, match="PretrainCache and a PretrainSpec"):
        pretrained_autoencoder(TINY, PretrainCache(), split, 0)  # arguments swapped
    autoencoder, seconds = pretrained_autoencoder(PretrainCache(), TINY, split, 0)
    assert seconds > 0 and autoencoder.encoder.output_size == TINY.latent_size
