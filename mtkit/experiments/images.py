"""The image track: a dense denoising autoencoder pretrained on every non-test image, then a
Classifier on its encoder with any strategy × addition, and self-training on top.

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
from dataclasses import dataclass, field
from typing import ClassVar

from mtkit.core.batches import as_inputs
from mtkit.core.utils import MtkitError, check_choice, check_positive, seed_everything
from mtkit.experiments.image_pretraining import (  # noqa: F401  (also importable from here)
    ContrastiveSpec,
    PretrainSpec,
    non_test_images,
    pretrained_autoencoder,
)
from mtkit.experiments.protocol import (
    ClassifierMethod,
    FineTuned,
    Method,
    check_options,
)
from mtkit.stages.consistency import consistency_train
from mtkit.stages.finetune import DEFAULT_LR, STRATEGIES
from mtkit.stages.selftrain import self_train

# The image track's learning rates: fine_tune's per strategy (chosen on held-out digits splits,
# bench/label_efficiency.py), and per adapter (bench/adapters.py --tune).
IMAGE_LR = {**DEFAULT_LR, "lora": 3e-3, "bottleneck": 1e-2}


@dataclass
class FineTuneMethod(ClassifierMethod):
    """A Classifier on the pretrained autoencoder's encoder, trained on the labelled images.

    strategy: "scratch" skips pretraining and trains the same architecture from random weights:
        the baseline a pretrained encoder has to beat.
    pretrain: how the encoder is pretrained (on all non-test images, see the module docstring).
    augment: random small shifts and rotations of the labelled images during fine-tuning.
    Early stopping and the choice of the best epoch use `split.validation`.
    """

    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    augment: bool = field(default=True, kw_only=True)

    DEFAULT_STRATEGY: ClassVar[str] = "linear_probe"
    LR: ClassVar[dict] = IMAGE_LR

    def start(self, split, seed, cache):
        if self.chosen_strategy == "scratch":
            seed_everything(seed)
            shape = tuple(split.labelled.images.shape[1:])
            return self.pretrain.build(shape).encoder, None, 0.0
        autoencoder, seconds = pretrained_autoencoder(cache, self.pretrain, split, seed)
        return copy.deepcopy(autoencoder.encoder), None, seconds

    def prepare(self, classifier, split, cache):
        if self.chosen_strategy != "scratch":  # scratch resets the standardisation anyway
            classifier.standardize_features(non_test_images(split))

    def inputs(self, data, tokenizer):
        return data.images if hasattr(data, "images") else as_inputs(data)

    def training_options(self, seed):
        return {"augment": self.augment, **super().training_options(seed)}


@dataclass
class _PoolStage(Method):
    """What the semi-supervised methods share: `start` (a FineTuneMethod) fine-tunes first, then
    a stage that also learns from the unlabelled pool's images trains the same classifier
    further, with `strategy`; `options` go to that stage; `title` names it in tables."""

    start: FineTuneMethod = field(default_factory=lambda: FineTuneMethod("linear_probe"))
    strategy: str = field(default="full", kw_only=True)
    options: dict = field(default_factory=dict, kw_only=True)
    title: str = field(default="", kw_only=True)
    STAGE_NAME: ClassVar[str] = ""

    def __post_init__(self):
        check_choice("strategy", self.strategy, STRATEGIES)
        check_options(self.options, type(self).__name__)

    @property
    def name(self) -> str:
        return self.title or f"{self.start.name} + {self.STAGE_NAME}"

    def predict_proba(self, fitted, data, cache=None):
        return self.start.predict_proba(fitted, data, cache)


@dataclass
class SelfTrainMethod(_PoolStage):
    """`start` (a FineTuneMethod), then `self_train` on the unlabelled pool.

    The pool is used a second time: pretraining learnt features from its images, self-training
    learns from the classifier's confident guesses on them. Only `split.unlabelled.images` are
    read; validation picks the best round. rounds, threshold, smoothing, strategy: as in
    `self_train` (same defaults); augmentation follows `start.augment`. options: more keyword
    arguments for `self_train` (and through it `fine_tune`), e.g. {"epochs": 100}.
    The default start, a linear probe, had the best validation accuracy of the strategies at
    10 labels per class on the held-out digits splits used to pick defaults.
    """

    rounds: int = 8
    threshold: float = 0.7
    smoothing: float = 0.8
    STAGE_NAME: ClassVar[str] = "self-training"

    def __post_init__(self):
        super().__post_init__()
        check_positive("rounds", self.rounds, integer=True)
        if not 0 <= self.threshold < 1:
            raise MtkitError(f"threshold is a probability in [0, 1), got {self.threshold}")
        if not 0 <= self.smoothing < 1:
            raise MtkitError(f"smoothing must be in [0, 1), got {self.smoothing}")

    def fine_tuned(self, split, seed, cache=None) -> FineTuned:
        fitted = self.start.fine_tuned(split, seed, cache)
        self_train(
            fitted.model,
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
        return fitted


@dataclass
class ConsistencyMethod(_PoolStage):
    """`start` (a FineTuneMethod), then `consistency_train` (FixMatch) on the unlabelled pool.

    Like SelfTrainMethod it reads only `split.unlabelled.images`, and validation keeps the best
    epoch. max_steps: the budget in optimizer steps (each sees `unlabelled_ratio` × 32 pool
    images), turned into whole passes over the pool, at least one; so a 60,000-image pool costs
    what a 6,000-image one does. threshold, unlabelled_ratio, strategy: as in
    `consistency_train`. options: more keyword arguments for it, e.g. {"lr": 1e-3}.
    """

    max_steps: int = 1500
    threshold: float = 0.95
    unlabelled_ratio: int = 7
    STAGE_NAME: ClassVar[str] = "consistency"

    def __post_init__(self):
        super().__post_init__()
        check_positive("max_steps", self.max_steps, integer=True)
        check_positive("unlabelled_ratio", self.unlabelled_ratio, integer=True)
        if not 0 <= self.threshold <= 1:
            raise MtkitError(f"threshold is a probability in [0, 1], got {self.threshold}")

    def epochs_for(self, pool_size: int, batch_size: int = 32) -> int:
        """Passes over a pool of `pool_size` images that fit in max_steps (at least one)."""
        steps_per_epoch = -(-pool_size // (self.unlabelled_ratio * batch_size))
        return max(1, self.max_steps // steps_per_epoch)

    def fine_tuned(self, split, seed, cache=None) -> FineTuned:
        fitted = self.start.fine_tuned(split, seed, cache)
        batch_size = min(self.options.get("batch_size", 32), len(split.labelled))
        consistency_train(
            fitted.model,
            split.labelled,
            split.unlabelled,
            validation=split.validation,
            threshold=self.threshold,
            unlabelled_ratio=self.unlabelled_ratio,
            strategy=self.strategy,
            **{
                "epochs": self.epochs_for(len(split.unlabelled), batch_size),
                "progress": False,
                "seed": seed,
                **self.options,
            },
        )
        return fitted


def default_methods(pretrain: PretrainSpec | None = None) -> list[Method]:
    """The benchmark's line-up, the same for every image dataset: two scikit-learn baselines,
    scratch, every strategy on the denoising autoencoder (`pretrain`), a linear probe and full
    fine-tuning on a contrastive (SimCLR) encoder, then the two semi-supervised stages on the
    autoencoder's linear probe: self-training and consistency training."""
    from mtkit.experiments.baselines import LogisticRegressionBaseline, PCALogisticBaseline

    pretrain = pretrain or PretrainSpec()
    methods = [LogisticRegressionBaseline(), PCALogisticBaseline()]
    methods += [FineTuneMethod(strategy, pretrain=pretrain) for strategy in STRATEGIES]
    contrastive = ContrastiveSpec()
    methods += [
        FineTuneMethod(strategy, pretrain=contrastive, title=f"contrastive + {strategy}")
        for strategy in ("linear_probe", "full")
    ]
    methods.append(SelfTrainMethod(FineTuneMethod("linear_probe", pretrain=pretrain)))
    methods.append(ConsistencyMethod(FineTuneMethod("linear_probe", pretrain=pretrain)))
    return methods
