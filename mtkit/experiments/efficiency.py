"""Label efficiency: how test accuracy grows with the number of labels, per method, over seeds.

    table = label_efficiency(digits, [LogisticRegressionBaseline(), FineTuneMethod("linear_probe")])
    print(table.to_markdown())        # mean ± std over seeds, per method × labels per class
    plot_label_efficiency(table)      # accuracy against labels per class, with the spread

A *method* is a small object with a `name` and `run(split, seed) -> MethodResult`: it gets a
`FewLabelSplit` whose test labels are removed, trains on what it is allowed to, and predicts the
test images. A `run` that also takes `cache=` gets the call's PretrainCache, so pretrained
encoders are shared between methods and labels per class. The methods here are what a user
would weigh against each other: scikit-learn baselines on pixels, the same classifier from
scratch, a pretrained encoder with each fine-tuning strategy, and pretrained + self-training.

What each method may see (this is what makes the comparison honest):
  labels      only `split.labelled`; `split.validation` for early stopping and model selection.
  images      pretraining and feature standardisation use every image that is not a test image
              (unlabelled pool + labelled + validation images, their labels ignored): those
              are images we really would have before knowing any test image. Test images are
              never used for anything but the final predictions.
  test labels never: `label_efficiency` strips them before calling a method and scores the
              predictions itself.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mtkit.core.utils import MtkitError, check_choice, check_positive, seed_everything
from mtkit.data import FewLabelSplit, few_labels
from mtkit.evaluation.stats import bootstrap_ci, paired_comparison
from mtkit.models import Classifier, DenseAutoencoder
from mtkit.stages.finetune import STRATEGIES, count_trainable, fine_tune, predict
from mtkit.stages.pretrain import NOISE_TYPES, pretrain_autoencoder
from mtkit.stages.selftrain import self_train

# ---------------------------------------------------------------------------------------------
# Pretraining, shared by every method that starts from a pretrained encoder.


@dataclass(frozen=True)
class PretrainSpec:
    """How to pretrain the dense denoising autoencoder whose encoder gets fine-tuned.

    The defaults were chosen on digits with held-out splits that exclude the benchmark's test
    images: 256 hidden units and a 64-number code (wider than 128/32: better with 5 labels per
    class), Gaussian noise 0.4 (denoising beats plain reconstruction by a wide margin), and
    batches of 128 with a cosine-decayed lr of 1e-2 for 400 epochs (~5 s on 2 CPU cores).
    Frozen, so it can be a key of the PretrainCache.
    """

    hidden_sizes: tuple[int, ...] = (256,)
    latent_size: int = 64
    noise: str = "gaussian"
    noise_level: float = 0.4
    epochs: int = 400
    batch_size: int = 128
    lr: float = 1e-2
    schedule: str | None = "cosine"

    def __post_init__(self):
        check_choice("noise", self.noise, NOISE_TYPES)
        check_positive("noise_level", self.noise_level, allow_zero=True)
        check_positive("epochs", self.epochs, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("lr", self.lr)
        # A list would make the spec unhashable, so normalise it here.
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    def build(self, image_shape: tuple[int, int, int]) -> DenseAutoencoder:
        """A new, untrained autoencoder of this shape for C×H×W images."""
        return DenseAutoencoder(
            input_shape=image_shape, hidden_sizes=self.hidden_sizes, latent_size=self.latent_size
        )

    def pretrain(self, images: torch.Tensor, seed: int) -> DenseAutoencoder:
        """A new autoencoder trained to denoise `images` (N×C×H×W), seeded by `seed`."""
        seed_everything(seed)
        autoencoder = self.build(tuple(images.shape[1:]))
        pretrain_autoencoder(
            autoencoder,
            images,
            noise=self.noise,
            noise_level=self.noise_level,
            epochs=self.epochs,
            batch_size=min(self.batch_size, len(images)),
            lr=self.lr,
            schedule=self.schedule,
            progress=False,
        )
        return autoencoder.cpu()  # Classifier and its buffers start on the CPU; fit moves them


def non_test_images(split: FewLabelSplit) -> torch.Tensor:
    """Every image of the split except the test images: labelled, validation and pool (N×C×H×W).

    Their labels are not part of the result; these are the images pretraining may use.
    """
    return torch.cat([split.labelled.images, split.validation.images, split.unlabelled.images])


class PretrainCache:
    """Pretrained autoencoders, kept so one `label_efficiency` call trains each only once.

    The key is (spec, seed, the images' bytes): splits of one dataset with the same test
    images but different labels per class share their non-test images, so they share the
    autoencoder. `seconds_spent` adds up the time spent pretraining (on misses).
    """

    def __init__(self):
        self._store: dict = {}
        self.seconds_spent = 0.0

    def autoencoder(
        self, spec: PretrainSpec, split: FewLabelSplit, seed: int
    ) -> tuple[DenseAutoencoder, float]:
        """(the pretrained autoencoder, seconds its pretraining took). Do not modify it."""
        # In dataset order, so every split with these non-test images gives the same tensor.
        positions = np.concatenate(
            [split.labelled_indices, split.validation_indices, split.unlabelled_indices]
        )
        images = non_test_images(split)[torch.as_tensor(np.argsort(positions))]
        key = (spec, seed, hashlib.sha1(images.numpy().tobytes()).hexdigest())
        return self.remember(key, lambda: spec.pretrain(images, seed))

    def remember(self, key, build) -> tuple[object, float]:
        """(build(), seconds it took), built on the first call with this hashable key only.

        The time counts into `seconds_spent`, which label_efficiency leaves out of a method's
        own seconds. The text methods keep their pretrained encoders here too.
        """
        if key not in self._store:
            started = time.perf_counter()
            value = build()
            seconds = time.perf_counter() - started
            self.seconds_spent += seconds
            self._store[key] = (value, seconds)
        return self._store[key]


# ---------------------------------------------------------------------------------------------
# Methods.


@dataclass
class MethodResult:
    """What a method returns for one split.

    predictions: int64 (len(split.test),) predicted class of each test image.
    trainable_parameters: parameter values fitted with the labels (a frozen encoder's don't
        count; the autoencoder's are fitted without labels).
    pretrain_seconds: time the pretraining it started from took (0 without pretraining), whether
        or not it came from the cache.
    """

    predictions: torch.Tensor
    trainable_parameters: int
    pretrain_seconds: float = 0.0


def _flat_pixels(images: torch.Tensor) -> np.ndarray:
    return images.reshape(len(images), -1).numpy()


@dataclass
class LogisticRegressionBaseline:
    """scikit-learn's LogisticRegression on raw pixels, fitted on the labelled images only."""

    C: float = 1.0
    name: str = "logistic regression on pixels"

    def run(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=self.C, max_iter=5000, random_state=seed)
        model.fit(_flat_pixels(split.labelled.images), split.labelled.labels.numpy())
        predictions = model.predict(_flat_pixels(split.test.images))
        return MethodResult(torch.as_tensor(predictions), model.coef_.size + model.intercept_.size)


@dataclass
class PCALogisticBaseline:
    """PCA to `components` dimensions, then LogisticRegression; both fitted on the labelled images
    only (what a scikit-learn Pipeline would do). The components keep their natural scale:
    whitening them hurts with 5 labels per class. Fewer labelled images than `components` means
    as many components as there are labelled images."""

    components: int = 30
    C: float = 1.0
    name: str = "PCA + logistic regression"

    def __post_init__(self):
        check_positive("components", self.components, integer=True)

    def run(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        pixels = _flat_pixels(split.labelled.images)
        components = min(self.components, *pixels.shape)
        model = make_pipeline(
            PCA(components, random_state=seed),
            LogisticRegression(C=self.C, max_iter=5000, random_state=seed),
        )
        model.fit(pixels, split.labelled.labels.numpy())
        predictions = model.predict(_flat_pixels(split.test.images))
        head = model[-1]
        return MethodResult(torch.as_tensor(predictions), head.coef_.size + head.intercept_.size)


def _check_options(options: dict, owner: str) -> dict:
    if not isinstance(options, dict):
        raise MtkitError(f"{owner} options must be a dict of keyword arguments")
    reserved = {"strategy", "validation", "augment"} & set(options)
    if reserved:
        raise MtkitError(f"{owner} sets {sorted(reserved)} itself; remove them from options")
    return options


@dataclass
class FineTuneMethod:
    """A Classifier on a pretrained encoder, fine-tuned with `strategy` on the labelled images.

    strategy: one of finetune.STRATEGIES. "scratch" skips pretraining and trains the same
        architecture from random weights: the baseline a pretrained encoder has to beat.
    pretrain: how the encoder is pretrained (on all non-test images, see the module docstring).
    augment: random small shifts and rotations of the labelled images during fine-tuning.
    options: further keyword arguments for `fine_tune` (lr, epochs, dropout, l2_sp, ...).
    Early stopping and the choice of the best epoch use `split.validation`.
    """

    strategy: str = "linear_probe"
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    augment: bool = True
    options: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        check_choice("strategy", self.strategy, STRATEGIES)
        _check_options(self.options, "FineTuneMethod")
        if not self.name:
            scratch = self.strategy == "scratch"
            self.name = (
                "same classifier from scratch" if scratch else f"pretrained + {self.strategy}"
            )

    def fine_tuned(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        """(fine-tuned Classifier, FineTuneResult, pretrain seconds) for this split and seed."""
        cache = PretrainCache() if cache is None else cache
        images = non_test_images(split)
        if self.strategy == "scratch":
            seed_everything(seed)
            autoencoder, pretrain_seconds = self.pretrain.build(tuple(images.shape[1:])), 0.0
        else:
            autoencoder, pretrain_seconds = cache.autoencoder(self.pretrain, split, seed)
        seed_everything(seed)
        classifier = Classifier(copy.deepcopy(autoencoder.encoder), split.labelled.num_classes)
        if self.strategy != "scratch":  # scratch resets the standardisation anyway
            classifier.standardize_features(images)
        result = fine_tune(
            classifier,
            split.labelled,
            strategy=self.strategy,
            validation=split.validation,
            augment=self.augment,
            **{"progress": False, **self.options},
        )
        return classifier, result, pretrain_seconds

    def run(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        classifier, result, pretrain_seconds = self.fine_tuned(split, seed, cache)
        predictions = predict(classifier, split.test.images).argmax(dim=1)
        return MethodResult(predictions, result.trainable_parameters, pretrain_seconds)


@dataclass
class SelfTrainMethod:
    """`start` (a FineTuneMethod), then `self_train` on the unlabelled pool.

    The pool is used a second time: pretraining learnt features from its images, self-training
    learns from the classifier's confident guesses on them. Only `split.unlabelled.images` are
    read; validation picks the best round. rounds, threshold, smoothing, strategy: as in
    `self_train` (same defaults); augmentation follows `start.augment`. options: more keyword
    arguments for `self_train` (and through it `fine_tune`), e.g. {"epochs": 100}.
    The default start, a linear probe, had the best validation accuracy of the strategies at
    10 labels per class on the held-out digits splits used to pick defaults.
    """

    start: FineTuneMethod = field(default_factory=lambda: FineTuneMethod("linear_probe"))
    rounds: int = 8
    threshold: float = 0.7
    smoothing: float = 0.8
    strategy: str = "full"
    options: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        check_positive("rounds", self.rounds, integer=True)
        if not 0 <= self.threshold < 1:
            raise MtkitError(f"threshold is a probability in [0, 1), got {self.threshold}")
        if not 0 <= self.smoothing < 1:
            raise MtkitError(f"smoothing must be in [0, 1), got {self.smoothing}")
        check_choice("strategy", self.strategy, STRATEGIES)
        _check_options(self.options, "SelfTrainMethod")
        if not self.name:
            self.name = f"{self.start.name} + self-training"

    def run(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        classifier, _, pretrain_seconds = self.start.fine_tuned(split, seed, cache)
        self_train(
            classifier,
            split.labelled,
            split.unlabelled,
            validation=split.validation,
            rounds=self.rounds,
            threshold=self.threshold,
            smoothing=self.smoothing,
            strategy=self.strategy,
            augment=self.start.augment,
            **{"progress": False, **self.options},
        )
        predictions = predict(classifier, split.test.images).argmax(dim=1)
        return MethodResult(predictions, count_trainable(classifier), pretrain_seconds)


def default_methods(pretrain: PretrainSpec | None = None) -> list:
    """The benchmark's line-up: two scikit-learn baselines, scratch, every pretrained strategy,
    and pretrained + self-training."""
    pretrain = pretrain or PretrainSpec()
    methods = [LogisticRegressionBaseline(), PCALogisticBaseline()]
    methods += [FineTuneMethod(strategy, pretrain) for strategy in STRATEGIES]
    methods.append(SelfTrainMethod(FineTuneMethod("linear_probe", pretrain)))
    return methods


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
    rows = table.rows if isinstance(table, LabelEfficiencyTable) else list(table)
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
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

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


def _check_methods(methods) -> list:
    methods = list(methods)
    if not methods:
        raise MtkitError("give at least one method")
    for method in methods:
        if not isinstance(getattr(method, "name", None), str) or not callable(
            getattr(method, "run", None)
        ):
            raise MtkitError(
                f"a method needs a `name` and a `run(split, seed)` method, got {method!r}"
            )
    names = [method.name for method in methods]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise MtkitError(f"method names must be unique (they label the rows): {duplicates}")
    return methods


def label_efficiency(
    dataset,
    methods: Sequence,
    labels_per_class: Iterable[int] = (5, 10, 20),
    seeds: Iterable[int] = range(5),
    *,
    test_size: float | int = 500,
    test_seed: int = 0,
    validation_per_class: int | None = None,
    cache: PretrainCache | None = None,
    log=None,
) -> LabelEfficiencyTable:
    """Run every method on `few_labels(dataset, k, seed=s, test_size=..., test_seed=...)` for
    each k in labels_per_class and s in seeds; score each on the test images.

    The test images are the same for every k and seed (chosen by test_seed only), so the
    numbers are comparable; pretrained autoencoders are cached per seed (see PretrainCache).
    Methods get the split with the test labels removed.
    cache: a PretrainCache to use (and fill), e.g. to reuse the autoencoders afterwards.
    log: optional callable taking one line of progress text (e.g. print).
    Returns a LabelEfficiencyTable with one row per method × labels_per_class × seed.
    """
    from sklearn.metrics import f1_score

    methods = _check_methods(methods)
    labels_per_class = [
        check_positive("labels_per_class", k, integer=True) for k in labels_per_class
    ]
    seeds = [check_positive("seed", s, integer=True, allow_zero=True) for s in seeds]
    if not labels_per_class or not seeds:
        raise MtkitError("give at least one labels_per_class and one seed")
    # Every split first: a labels_per_class too large for the data fails before any training.
    splits = {
        (k, s): few_labels(
            dataset,
            k,
            validation_per_class=validation_per_class,
            test_size=test_size,
            seed=s,
            test_seed=test_seed,
        )
        for s in seeds
        for k in labels_per_class
    }
    cache = PretrainCache() if cache is None else cache
    table = LabelEfficiencyTable()
    for s in seeds:
        for k in labels_per_class:
            split = splits[(k, s)]
            truth = split.test.labels.numpy()
            # What a method gets: no test labels, and no way to the pool's hidden labels.
            blind = dataclasses.replace(
                split, test=split.test.without_labels(), _unlabelled_labels=None
            )
            for method in methods:
                spent, started = cache.seconds_spent, time.perf_counter()
                if "cache" in inspect.signature(method.run).parameters:
                    result = method.run(blind, s, cache=cache)
                else:
                    result = method.run(blind, s)
                seconds = time.perf_counter() - started - (cache.seconds_spent - spent)
                predicted = torch.as_tensor(result.predictions).reshape(-1).cpu().numpy()
                if predicted.shape != truth.shape:
                    raise MtkitError(
                        f"{method.name} returned {predicted.shape[0]} predictions for "
                        f"{truth.shape[0]} test images"
                    )
                row = EfficiencyRow(
                    method=method.name,
                    labels_per_class=k,
                    seed=s,
                    accuracy=float(np.mean(predicted == truth)),
                    macro_f1=float(f1_score(truth, predicted, average="macro", zero_division=0)),
                    seconds=seconds,
                    trainable_parameters=int(result.trainable_parameters),
                    pretrain_seconds=float(result.pretrain_seconds),
                )
                table.rows.append(row)
                if log is not None:
                    log(
                        f"seed {s} labels/class {k:>3}  {method.name:<40} "
                        f"accuracy {100 * row.accuracy:5.1f}%  {seconds:6.2f}s"
                    )
    return table


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


__all__ = [
    "EfficiencyRow",
    "FineTuneMethod",
    "LabelEfficiencyTable",
    "LogisticRegressionBaseline",
    "MethodResult",
    "PCALogisticBaseline",
    "PretrainCache",
    "PretrainSpec",
    "SelfTrainMethod",
    "SummaryRow",
    "default_methods",
    "label_efficiency",
    "non_test_images",
    "paired_difference",
    "plot_label_efficiency",
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
