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
import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from mtkit.core.batches import as_inputs
from mtkit.core.utils import MtkitError, check_choice, check_positive, seed_everything
from mtkit.data import FewLabelSplit
from mtkit.experiments.protocol import (
    ClassifierMethod,
    FineTuned,
    Method,
    PretrainCache,
    check_options,
)
from mtkit.models import DenseAutoencoder
from mtkit.stages.finetune import DEFAULT_LR, STRATEGIES
from mtkit.stages.pretrain import NOISE_TYPES, pretrain_autoencoder
from mtkit.stages.selftrain import self_train

# The image track's learning rates: fine_tune's per strategy (chosen on held-out digits splits,
# bench/label_efficiency.py), and per adapter (bench/adapters.py --tune).
IMAGE_LR = {**DEFAULT_LR, "lora": 3e-3, "bottleneck": 1e-2}


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


def pretrained_autoencoder(
    cache: PretrainCache, spec: PretrainSpec, split: FewLabelSplit, seed: int
) -> tuple[DenseAutoencoder, float]:
    """(the autoencoder `spec` pretrains on the split's non-test images, seconds it took), from
    `cache` when one with the same spec, seed and images was trained already. Do not modify it.

    Splits of one dataset with the same test images but different labels per class share their
    non-test images, so they share the autoencoder.
    """
    if not isinstance(cache, PretrainCache) or not isinstance(spec, PretrainSpec):
        raise MtkitError(
            "pretrained_autoencoder(cache, spec, split, seed) takes a PretrainCache and a "
            f"PretrainSpec, got {type(cache).__name__} and {type(spec).__name__}"
        )
    # In dataset order, so every split with these non-test images gives the same tensor.
    positions = np.concatenate(
        [split.labelled_indices, split.validation_indices, split.unlabelled_indices]
    )
    images = non_test_images(split)[torch.as_tensor(np.argsort(positions))]
    key = (spec, seed, hashlib.sha1(images.numpy().tobytes()).hexdigest())
    return cache.remember(key, lambda: spec.pretrain(images, seed))


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
class SelfTrainMethod(Method):
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
    title: str = ""

    def __post_init__(self):
        check_positive("rounds", self.rounds, integer=True)
        if not 0 <= self.threshold < 1:
            raise MtkitError(f"threshold is a probability in [0, 1), got {self.threshold}")
        if not 0 <= self.smoothing < 1:
            raise MtkitError(f"smoothing must be in [0, 1), got {self.smoothing}")
        check_choice("strategy", self.strategy, STRATEGIES)
        check_options(self.options, "SelfTrainMethod")

    @property
    def name(self) -> str:
        return self.title or f"{self.start.name} + self-training"

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

    def predict_proba(self, fitted, data, cache=None):
        return self.start.predict_proba(fitted, data, cache)


def default_methods(pretrain: PretrainSpec | None = None) -> list[Method]:
    """The benchmark's line-up: two scikit-learn baselines, scratch, every pretrained strategy,
    and pretrained + self-training."""
    from mtkit.experiments.baselines import LogisticRegressionBaseline, PCALogisticBaseline

    pretrain = pretrain or PretrainSpec()
    methods = [LogisticRegressionBaseline(), PCALogisticBaseline()]
    methods += [FineTuneMethod(strategy, pretrain=pretrain) for strategy in STRATEGIES]
    methods.append(SelfTrainMethod(FineTuneMethod("linear_probe", pretrain=pretrain)))
    return methods
