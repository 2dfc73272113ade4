"""The method protocol: what every method of `label_efficiency` is, whatever its track.

A *method* has a `name` and four calls, all with the cache as an explicit argument:

    fine_tuned(split, seed, cache) -> FineTuned       train on what the split allows
    predict_proba(fitted, data, cache) -> N×C         class probabilities for a dataset / inputs
    predict(fitted, data, cache) -> (N,)              predicted classes (int64)
    run(split, seed, cache) -> MethodResult           fine_tuned, then predict the test split

`ClassifierMethod` is the shared recipe of every neural method: start from an encoder (pretrained
or not, with its tokenizer for text), put a Classifier on it, attach the method's addition
(mtkit.stages.method), and train with its strategy. A track (images, the small Transformer,
MiniLM) only says how to start, how to turn its data into tensors and its learning rates.
Names are computed from the fields, so `dataclasses.replace(method, addition=LoRA(rank=16))`
is named "... LoRA r=16".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from mtkit.core.utils import MtkitError, seed_everything
from mtkit.data import FewLabelSplit
from mtkit.models import Classifier
from mtkit.stages.finetune import FineTuneResult, count_trainable, predict
from mtkit.stages.method import (
    Addition,
    attach,
    check_method,
    method_label,
    resolve_addition,
    train_method,
)


class PretrainCache:
    """Pretrained encoders (and anything costly), built once per key within one experiment.

    `remember(key, build)` returns (build(), seconds it took) and calls build only on the first
    call with that hashable key; `seconds_spent` adds up the time of those first calls, which
    label_efficiency leaves out of a method's own seconds.
    folder: None keeps everything in memory, for this experiment only. A folder (or True for
        $MTKIT_CACHE / ~/.cache/mtkit) also keeps pretrained image encoders on disk, keyed by
        their spec, seed and images, so a rerun or the next notebook reads them in seconds.
    """

    def __init__(self, folder=None):
        self._store: dict = {}
        self.seconds_spent = 0.0
        self.folder = None if folder is None or folder is False else folder
        if self.folder is True:
            from mtkit.core.cache import cache_dir

            self.folder = cache_dir()

    def remember(self, key, build) -> tuple[Any, float]:
        """(build(), seconds it took), built on the first call with this hashable key only."""
        if key not in self._store:
            started = time.perf_counter()
            value = build()
            seconds = time.perf_counter() - started
            self.seconds_spent += seconds
            self._store[key] = (value, seconds)
        return self._store[key]


@dataclass
class MethodResult:
    """What `run` returns for one split.

    predictions: int64 (len(split.test),) predicted class of each test example.
    trainable_parameters: parameter values fitted with the labels (a frozen encoder's don't
        count; a pretrained encoder's are fitted without labels).
    pretrain_seconds: time the pretraining it started from took (0 without pretraining), whether
        or not it came from the cache.
    """

    predictions: torch.Tensor
    trainable_parameters: int
    pretrain_seconds: float = 0.0


@dataclass
class FineTuned:
    """What `fine_tuned` returns, on every track.

    model: the trained Classifier (or, for a scikit-learn baseline, its fitted estimator).
    tokenizer: the tokenizer its inputs need (None for images).
    result: the FineTuneResult of the last training (None for scikit-learn baselines).
    pretrain_seconds: what the pretraining it started from cost (0 without).
    trainable_parameters: parameter values fitted with labels (None: count model's trainable).
    """

    model: Any
    tokenizer: Any = None
    result: FineTuneResult | None = None
    pretrain_seconds: float = 0.0
    trainable_parameters: int | None = None

    def count_trainable(self) -> int:
        if self.trainable_parameters is not None:
            return self.trainable_parameters
        return count_trainable(self.model)


class Method:
    """The protocol. Subclasses define `name`, `fine_tuned` and `predict_proba`."""

    name: str

    def fine_tuned(self, split: FewLabelSplit, seed: int, cache: PretrainCache) -> FineTuned:
        raise NotImplementedError

    def predict_proba(self, fitted: FineTuned, data, cache: PretrainCache | None = None):
        """N×num_classes class probabilities (CPU) for a dataset or its inputs."""
        raise NotImplementedError

    def predict(self, fitted: FineTuned, data, cache: PretrainCache | None = None):
        """(N,) int64 predicted classes for a dataset or its inputs."""
        return torch.as_tensor(self.predict_proba(fitted, data, cache)).argmax(dim=1)

    def run(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        """Train on `split` (its test labels are hidden), predict its test examples; returns a
        MethodResult. label_efficiency always passes its cache; alone, a fresh one is used."""
        cache = PretrainCache() if cache is None else cache
        fitted = self.fine_tuned(split, seed, cache)
        predictions = self.predict(fitted, split.test, cache)
        return MethodResult(predictions, fitted.count_trainable(), fitted.pretrain_seconds)


def check_options(options: dict, owner: str) -> dict:
    """A method's extra fine_tune options: a dict, without what the method sets itself."""
    if not isinstance(options, dict):
        raise MtkitError(f"{owner} options must be a dict of keyword arguments")
    reserved = {"strategy", "validation", "augment"} & set(options)
    if reserved:
        raise MtkitError(f"{owner} sets {sorted(reserved)} itself; remove them from options")
    return options


@dataclass
class ClassifierMethod(Method):
    """A Classifier on a track's encoder, trained with `strategy` and `addition`.

    strategy: what the encoder's own weights do (finetune.STRATEGIES); None: the track's
        DEFAULT_STRATEGY, or "linear_probe" with an adapter (adapters keep the encoder frozen).
    addition: None, a registered name ("lora", "bottleneck", "prompt", "mlp_head", built with the
        track's ADDITION_DEFAULTS) or an Addition such as LoRA(rank=16).
    options: more keyword arguments for fine_tune, over the track's FINE_TUNE and LR.
    title: a name for tables instead of the computed one.
    """

    strategy: str | None = None
    addition: str | Addition | None = field(default=None, kw_only=True)
    options: dict = field(default_factory=dict, kw_only=True)
    title: str = field(default="", kw_only=True)

    DEFAULT_STRATEGY: ClassVar[str] = "full"
    LR: ClassVar[dict[str, float]] = {}
    FINE_TUNE: ClassVar[dict] = {}
    ADDITION_DEFAULTS: ClassVar[dict[str, dict]] = {}
    TRACK: ClassVar[str] = "pretrained"  # the first words of a computed name
    SCRATCH_NAME: ClassVar[str] = "same classifier from scratch"
    STRATEGY_LABELS: ClassVar[dict[str, str]] = {}  # e.g. {"full": "full fine-tuning"}

    def __post_init__(self):
        check_options(self.options, type(self).__name__)
        check_method(self.chosen_strategy, self.chosen_addition)

    @property
    def chosen_addition(self) -> Addition | None:
        return resolve_addition(self.addition, self.ADDITION_DEFAULTS)

    @property
    def chosen_strategy(self) -> str:
        if self.strategy is not None:
            return self.strategy
        addition = self.chosen_addition
        return "linear_probe" if addition and addition.is_adapter else self.DEFAULT_STRATEGY

    @property
    def name(self) -> str:
        if self.title:
            return self.title
        if self.chosen_strategy == "scratch":
            return self.SCRATCH_NAME
        strategy = self.STRATEGY_LABELS.get(self.chosen_strategy, self.chosen_strategy)
        return f"{self.TRACK} + {method_label(strategy, self.chosen_addition)}"

    def learning_rate(self) -> float | None:
        """The track's learning rate for this method: by adapter, else by strategy (a strategy
        the track never tuned takes its DEFAULT_STRATEGY's rate)."""
        addition = self.chosen_addition
        key = addition.kind if addition and addition.is_adapter else self.chosen_strategy
        return self.LR.get(key, self.LR.get(self.DEFAULT_STRATEGY))

    # What a track defines. -------------------------------------------------------------------

    def start(self, split: FewLabelSplit, seed: int, cache: PretrainCache):
        """(a fresh encoder to fine-tune, its tokenizer or None, pretraining seconds)."""
        raise NotImplementedError

    def prepare(self, classifier: Classifier, split: FewLabelSplit, cache: PretrainCache):
        """Anything before the addition and training (e.g. feature standardisation)."""

    def training_data(self, dataset, tokenizer):
        """A labelled dataset → what fine_tune takes (the dataset, or (inputs, labels))."""
        return dataset

    def inputs(self, data, tokenizer) -> torch.Tensor:
        """A dataset (or its raw inputs: images, a list of texts) → the N×... input tensor."""
        raise NotImplementedError

    def training_options(self, seed: int) -> dict:
        """Keyword arguments for fine_tune: the track's FINE_TUNE, LR, then `options`."""
        lr = self.learning_rate()
        return {**self.FINE_TUNE, **({"lr": lr} if lr else {}), "progress": False,
                **self.options}  # fmt: skip

    # The shared recipe. ----------------------------------------------------------------------

    def new_classifier(self, split: FewLabelSplit, seed: int, cache) -> FineTuned:
        """A Classifier on the start encoder, prepared, with the addition attached (untrained)."""
        encoder, tokenizer, seconds = self.start(split, seed, cache)
        seed_everything(seed)
        classifier = Classifier(encoder, split.labelled.num_classes)
        fitted = FineTuned(classifier, tokenizer, None, seconds)
        self.prepare(classifier, split, cache)
        attach(fitted.model, self.chosen_addition, head="keep")
        return fitted

    def fine_tuned(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        cache = PretrainCache() if cache is None else cache
        fitted = self.new_classifier(split, seed, cache)
        fitted.result = train_method(
            fitted.model,
            self.training_data(split.labelled, fitted.tokenizer),
            self.chosen_strategy,
            self.chosen_addition,
            validation=self.training_data(split.validation, fitted.tokenizer),
            **self.training_options(seed),
        )
        return fitted

    def predict_proba(self, fitted: FineTuned, data, cache: PretrainCache | None = None):
        return predict(fitted.model, self.inputs(data, fitted.tokenizer))


def check_methods(methods) -> list:
    """The methods as a list, each following the protocol, with unique names."""
    methods = list(methods)
    if not methods:
        raise MtkitError("give at least one method")
    for method in methods:
        if isinstance(method, type):
            raise MtkitError(f"methods must be instances: {method.__name__}(), not the class")
        if not isinstance(getattr(method, "name", None), str) or not callable(
            getattr(method, "run", None)
        ):
            raise MtkitError(
                f"a method needs a `name` and a `run(split, seed, cache)` method, got {method!r}"
            )
    names = [method.name for method in methods]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise MtkitError(f"method names must be unique (they label the rows): {duplicates}")
    return methods
