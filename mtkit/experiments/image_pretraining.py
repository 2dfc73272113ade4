"""How the image track pretrains its encoder: one small spec per pretraining method.

A spec is a frozen dataclass (so it can key a cache) with two methods:
    build(image_shape)     a new, untrained model for C×H×W images, whose `.encoder` is kept
    pretrain(images, seed) that model trained on N×C×H×W unlabelled images
`PretrainSpec` is a denoising autoencoder, `ContrastiveSpec` SimCLR. A new pretraining method is
one more spec class; `FineTuneMethod(strategy, pretrain=spec)` runs any of them unchanged.

The encoder's architecture follows the image size unless it is named: `architecture="auto"` is
a dense network for small images (8×8 digits: a convolution has little to slide over) and a
convolutional one from 16×16 on (28×28 clothes: a dense layer would have to learn the same
edge detector at every position).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from mtkit.core.utils import MtkitError, check_choice, check_positive, seed_everything
from mtkit.data import FewLabelSplit
from mtkit.experiments.protocol import PretrainCache
from mtkit.models.autoencoders import AUTOENCODERS, ENCODERS, AutoencoderConfig
from mtkit.stages.augment import StrongAugment
from mtkit.stages.contrastive import ContrastiveModel, pretrain_contrastive
from mtkit.stages.pretrain import NOISE_TYPES, pretrain_autoencoder

ARCHITECTURES = ("auto", "dense", "conv")
# 1e-2 suits the dense autoencoder on digits; with it, one seed of the conv autoencoder on
# Fashion-MNIST lost every ReLU (all codes equal) in bench/real_images.py, so conv gets 3e-3.
DEFAULT_LR = {"dense": 1e-2, "conv": 3e-3}
# Below this height or width, "auto" picks the dense encoder.
CONV_FROM_SIZE = 16


def choose_architecture(architecture: str, image_shape: tuple[int, int, int]) -> str:
    """ "dense" or "conv": `architecture` itself, or for "auto" what suits C×H×W images."""
    check_choice("architecture", architecture, ARCHITECTURES)
    if architecture != "auto":
        return architecture
    return "conv" if min(image_shape[1:]) >= CONV_FROM_SIZE else "dense"


def default_widths(architecture: str) -> tuple[int, ...]:
    """Hidden sizes when none are given: the dense layer's width, or the convolutions'
    channels (28×28 → 14×14 → 7×7 → 4×4; narrow enough that a CPU step takes ~50 ms)."""
    return (256,) if architecture == "dense" else (16, 32, 64)


@dataclass(frozen=True)
class _EncoderShape:
    """What every spec shares: the encoder's architecture and size, and the training budget."""

    architecture: str = "auto"
    hidden_sizes: tuple[int, ...] | None = None  # None: default_widths(architecture)
    latent_size: int = 64
    epochs: int = 400
    batch_size: int = 128
    lr: float | None = None  # None: DEFAULT_LR of the architecture the images get
    schedule: str | None = "cosine"
    # The most optimizer steps pretraining takes, whatever `epochs` says: the budget that keeps
    # a 60,000-image pool as quick as 1,300 digits. None: exactly `epochs`.
    max_steps: int | None = None

    def __post_init__(self):
        check_choice("architecture", self.architecture, ARCHITECTURES)
        check_positive("latent_size", self.latent_size, integer=True)
        check_positive("epochs", self.epochs, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        if self.lr is not None:
            check_positive("lr", self.lr)
        if self.max_steps is not None:
            check_positive("max_steps", self.max_steps, integer=True)
        if self.hidden_sizes is not None:  # a list would make the spec unhashable
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    def lr_for(self, image_shape) -> float:
        """The peak learning rate: `lr`, or the default of the architecture these images get."""
        return self.lr or DEFAULT_LR[choose_architecture(self.architecture, tuple(image_shape))]

    def encoder_config(self, image_shape) -> tuple[str, AutoencoderConfig]:
        """(architecture chosen for these images, the AutoencoderConfig of the encoder)."""
        architecture = choose_architecture(self.architecture, tuple(image_shape))
        widths = self.hidden_sizes or default_widths(architecture)
        return architecture, AutoencoderConfig(tuple(image_shape), widths, self.latent_size)

    def epochs_for(self, count: int) -> int:
        """Epochs over `count` images: `epochs`, fewer when that would pass max_steps."""
        if self.max_steps is None:
            return self.epochs
        steps_per_epoch = -(-count // min(self.batch_size, count))
        return max(1, min(self.epochs, self.max_steps // steps_per_epoch))


@dataclass(frozen=True)
class PretrainSpec(_EncoderShape):
    """A denoising autoencoder whose encoder gets fine-tuned.

    The defaults were chosen on digits with held-out splits that exclude the benchmark's test
    images: 256 hidden units and a 64-number code (wider than 128/32: better with 5 labels per
    class), Gaussian noise 0.4 (denoising beats plain reconstruction by a wide margin), and
    batches of 128 with a cosine-decayed lr of 1e-2 for 400 epochs (~5 s on 2 CPU cores).
    The same 4,400 steps on a larger pool (max_steps); convolutional encoders use lr 3e-3.
    """

    # 400 epochs of the 1,297 non-test digits: on a larger pool, the same number of steps.
    max_steps: int | None = 4400
    noise: str = "gaussian"
    noise_level: float = 0.4

    def __post_init__(self):
        super().__post_init__()
        check_choice("noise", self.noise, NOISE_TYPES)
        check_positive("noise_level", self.noise_level, allow_zero=True)

    def build(self, image_shape: tuple[int, int, int]) -> nn.Module:
        """A new, untrained autoencoder of this shape for C×H×W images."""
        architecture, config = self.encoder_config(image_shape)
        return AUTOENCODERS[architecture](config)

    def pretrain(self, images: torch.Tensor, seed: int) -> nn.Module:
        """A new autoencoder trained to denoise `images` (N×C×H×W), seeded by `seed`."""
        seed_everything(seed)
        autoencoder = self.build(tuple(images.shape[1:]))
        pretrain_autoencoder(
            autoencoder,
            images,
            noise=self.noise,
            noise_level=self.noise_level,
            epochs=self.epochs_for(len(images)),
            batch_size=min(self.batch_size, len(images)),
            lr=self.lr_for(images.shape[1:]),
            schedule=self.schedule,
            progress=False,
        )
        check_not_collapsed(autoencoder.encoder, images, self)
        return autoencoder.cpu()  # Classifier and its buffers start on the CPU; fit moves them


@dataclass(frozen=True)
class ContrastiveSpec(_EncoderShape):
    """SimCLR (mtkit.stages.contrastive): an encoder taught to match two distorted views.

    augment: the StrongAugment that makes each view; temperature, projection_size: as in
    `pretrain_contrastive`. `build` gives the encoder with its projection head; fine-tuning
    keeps `.encoder` only.
    """

    latent_size: int = 128
    epochs: int = 200
    batch_size: int = 256
    lr: float | None = 3e-3
    max_steps: int | None = 1500
    augment: StrongAugment = StrongAugment()
    temperature: float = 0.5
    projection_size: int = 64

    def __post_init__(self):
        super().__post_init__()
        check_positive("temperature", self.temperature)
        check_positive("projection_size", self.projection_size, integer=True)

    def build(self, image_shape: tuple[int, int, int]) -> ContrastiveModel:
        architecture, config = self.encoder_config(image_shape)
        return ContrastiveModel(ENCODERS[architecture](config), self.projection_size)

    def pretrain(self, images: torch.Tensor, seed: int) -> ContrastiveModel:
        """A new encoder trained with SimCLR on `images` (N×C×H×W), seeded by `seed`."""
        seed_everything(seed)
        model = self.build(tuple(images.shape[1:]))
        pretrain_contrastive(
            model,
            images,
            augment=self.augment,
            temperature=self.temperature,
            projection_size=self.projection_size,
            epochs=self.epochs_for(len(images)),
            batch_size=min(self.batch_size, len(images)),
            lr=self.lr_for(images.shape[1:]),
            schedule=self.schedule,
            progress=False,
        )
        check_not_collapsed(model.encoder, images, self)
        return model.cpu()


def check_not_collapsed(encoder: nn.Module, images: torch.Tensor, spec) -> None:
    """Raise MtkitError when `encoder` gives (nearly) the same code for every image, as when
    a too-high learning rate killed every ReLU: fine-tuning on it would be guessing."""
    sample = images[:512].to(next(encoder.parameters()).device)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        spread = encoder(sample).std(dim=0).max().item()
    encoder.train(was_training)
    if not spread > 1e-6:
        raise MtkitError(
            f"pretraining collapsed: the encoder gives every image the same code ({spec}). "
            "Lower lr (or try another seed); the cached result is not kept."
        )


IMAGE_PRETRAINING = {"denoising": PretrainSpec, "contrastive": ContrastiveSpec}


def non_test_images(split: FewLabelSplit) -> torch.Tensor:
    """Every image of the split except the test images: labelled, validation and pool (N×C×H×W).

    Their labels are not part of the result; these are the images pretraining may use.
    """
    return torch.cat([split.labelled.images, split.validation.images, split.unlabelled.images])


def pretrained_autoencoder(
    cache: PretrainCache, spec: _EncoderShape, split: FewLabelSplit, seed: int
) -> tuple[nn.Module, float]:
    """(the model `spec` pretrains on the split's non-test images, seconds it took), from
    `cache` when one with the same spec, seed and images was trained already (in memory, and
    on disk when the cache has a folder). Use its `.encoder`; do not modify it.

    Splits of one dataset with the same test images but different labels per class share their
    non-test images, so they share the pretrained model.
    """
    if not isinstance(cache, PretrainCache) or not isinstance(spec, _EncoderShape):
        raise MtkitError(
            "pretrained_autoencoder(cache, spec, split, seed) takes a PretrainCache and a "
            f"PretrainSpec or ContrastiveSpec, got {type(cache).__name__} and "
            f"{type(spec).__name__}"
        )
    # In dataset order, so every split with these non-test images gives the same tensor.
    positions = np.concatenate(
        [split.labelled_indices, split.validation_indices, split.unlabelled_indices]
    )
    images = non_test_images(split)[torch.as_tensor(np.argsort(positions))]
    digest = hashlib.sha1(images.numpy().tobytes()).hexdigest()
    return cache.remember((spec, seed, digest), lambda: _on_disk(cache, spec, images, seed, digest))


def _on_disk(cache: PretrainCache, spec, images: torch.Tensor, seed: int, digest: str):
    """spec.pretrain(images, seed), read from / written to the cache's folder when it has one."""
    if cache.folder is None:
        return spec.pretrain(images, seed)
    from mtkit.core.cache import cache_dir, cache_key, load_or_build

    settings = {**asdict(spec), "kind": type(spec).__name__}
    key = cache_key(spec=settings, seed=seed, images=digest)
    path = cache_dir(cache.folder) / f"image-encoder-{key}.pt"
    state_dict, _, _ = load_or_build(
        path, key, lambda: (spec.pretrain(images, seed).state_dict(), {})
    )
    model = spec.build(tuple(images.shape[1:]))
    model.load_state_dict(state_dict)
    return model
