"""Autoencoders for images: dense, convolutional, and variational.

An autoencoder squeezes an image through a small code (the *latent* vector) and tries to rebuild
it. Nothing in that needs labels, so it can learn from every image we have. Afterwards we keep the
`encoder` half and fine-tune it on the few labelled images.

Every autoencoder here has the same surface:
    encoder           an `Encoder`: N×C×H×W images → N×latent_size codes, in named blocks
    decoder           N×latent_size codes → N×C×H×W images in [0, 1]
    forward(images)   the reconstruction (deterministic, also for the VAE)
    training_loss(inputs, targets)   what pretraining minimises; inputs may be noisy copies
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.utils import MtkitError


class Encoder(nn.Sequential):
    """An nn.Sequential of named blocks that knows the size of what it outputs.

    Blocks with parameters are the *layer groups* that fine-tuning strategies freeze and unfreeze,
    bottom (closest to the pixels) to top.
    """

    # Where LoRA goes, in module names relative to this encoder (fnmatch patterns): "*" is
    # every Linear and Conv2d in it.
    lora_targets = ("*",)

    def __init__(
        self,
        blocks: dict[str, nn.Module],
        output_size: int,
        input_shape: tuple[int, ...] | None = None,
    ):
        super().__init__()
        for name, block in blocks.items():
            self.add_module(name, block)
        self.output_size = output_size
        self.input_shape = input_shape  # C×H×W when known: checked so a mismatch reads clearly

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """N×C×H×W images (or whatever the first block takes) → N×output_size codes."""
        expected = self.input_shape
        if expected is not None and (inputs.dim() != 4 or tuple(inputs.shape[1:]) != expected):
            raise MtkitError(
                f"this encoder expects images of shape N×{'×'.join(map(str, expected))}, got "
                f"{tuple(inputs.shape)}: was it pretrained on another dataset?"
            )
        return super().forward(inputs)

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """[(name, block), ...] for the blocks that hold parameters, bottom first."""
        return [(name, block) for name, block in self.named_children() if _has_parameters(block)]

    @property
    def bottleneck_places(self) -> tuple[str, ...]:
        """Where bottleneck adapters go: after each block that holds parameters (its name)."""
        return tuple(name for name, _ in self.layer_groups())


@dataclass
class AutoencoderConfig:
    """Shape of an autoencoder.

    input_shape: (channels, height, width) of the images, e.g. (1, 8, 8) for digits.
    hidden_sizes: dense models: widths of the hidden layers; convolutional models: channels of
        each stride-2 convolution. The decoder mirrors them.
    latent_size: length of the code vector the encoder produces.
    """

    input_shape: tuple[int, int, int] = (1, 8, 8)
    hidden_sizes: tuple[int, ...] = (128,)
    latent_size: int = 32

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.hidden_sizes = tuple(int(s) for s in self.hidden_sizes)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise MtkitError(
                f"input_shape must be (channels, height, width), got {self.input_shape}"
            )
        if any(size < 1 for size in self.hidden_sizes):
            raise MtkitError(f"hidden_sizes must be positive, got {self.hidden_sizes}")
        if not isinstance(self.latent_size, int) or self.latent_size < 1:
            raise MtkitError(f"latent_size must be a positive integer, got {self.latent_size!r}")


class _Autoencoder(nn.Module):
    """What every autoencoder shares: config handling, shape checks, encode/decode/forward."""

    def __init__(self, config: AutoencoderConfig | None, overrides: dict):
        super().__init__()
        if config is None:
            config = AutoencoderConfig(**overrides)
        elif overrides:
            config = AutoencoderConfig(**{**asdict(config), **overrides})
        self.config = config

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """N×C×H×W images → N×latent_size codes."""
        self._check_shape(images)
        return self.encoder(images)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """N×latent_size codes → N×C×H×W reconstructions in [0, 1]."""
        return self.decoder(codes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def training_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error between the rebuild of `inputs` and the clean `targets`."""
        return F.mse_loss(self(inputs), targets)

    def _check_shape(self, images: torch.Tensor) -> None:
        expected = self.config.input_shape
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise MtkitError(
                f"{type(self).__name__} expects images of shape N×{'×'.join(map(str, expected))}, "
                f"got {tuple(images.shape)}"
            )


class DenseAutoencoder(_Autoencoder):
    """Flatten → hidden layers → latent code → mirrored layers → image.

    The encoder's blocks are named "block0", ..., "latent" (plus a parameter-free "flatten").
    """

    def __init__(self, config: AutoencoderConfig | None = None, **overrides):
        super().__init__(config, overrides)
        self.encoder = dense_encoder(self.config)
        self.decoder = _dense_decoder(self.config)


class ConvAutoencoder(_Autoencoder):
    """Stride-2 convolutions → latent code → upsampling convolutions → image.

    `hidden_sizes` are the channels of each convolution; each halves the height and width (8×8
    digits → 4×4 → 2×2 with the default two). The decoder upsamples to the exact sizes the
    encoder went through, so any image size works.
    """

    def __init__(self, config: AutoencoderConfig | None = None, **overrides):
        if config is None and "hidden_sizes" not in overrides:
            overrides["hidden_sizes"] = (16, 32)
        super().__init__(config, overrides)
        config = self.config
        channels = config.input_shape[0]
        sizes = conv_sizes(config)
        self.encoder = conv_encoder(config)
        channels_in = config.hidden_sizes[-1]
        flat = channels_in * sizes[-1][0] * sizes[-1][1]

        decoder = nn.Sequential()
        decoder.add_module("expand", nn.Sequential(nn.Linear(config.latent_size, flat), nn.ReLU()))
        decoder.add_module("unflatten", nn.Unflatten(1, (channels_in, *sizes[-1])))
        widths = list(config.hidden_sizes[::-1][1:]) + [channels]
        for index, (channels_out, size) in enumerate(zip(widths, sizes[-2::-1], strict=True)):
            last = index == len(widths) - 1
            decoder.add_module(
                f"block{index}",
                nn.Sequential(
                    nn.Upsample(size=size, mode="nearest"),
                    nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1),
                    nn.Sigmoid() if last else nn.ReLU(),
                ),
            )
            channels_in = channels_out
        self.decoder = decoder


class VariationalAutoencoder(_Autoencoder):
    """A dense VAE: the encoder gives the mean of a Gaussian code, a second head its log-variance.

    `encoder` (what fine-tuning keeps) outputs the mean μ, so features are deterministic.
    Training samples z = μ + σ·ε and minimises reconstruction error plus β·KL(q(z|x) ‖ N(0, I)),
    which makes the code space smooth enough to sample new images from.
    """

    def __init__(self, config: AutoencoderConfig | None = None, beta: float = 1.0, **overrides):
        super().__init__(config, overrides)
        if not beta >= 0:
            raise MtkitError(f"beta must be non-negative, got {beta}")
        self.beta = beta
        config = self.config
        self.encoder = dense_encoder(config)
        self.log_variance = nn.Linear(self.encoder.latent.in_features, config.latent_size)
        self.decoder = _dense_decoder(config)

    def encode_distribution(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N×C×H×W → (mean, log_variance), each N×latent_size."""
        self._check_shape(images)
        hidden = images
        for name, block in self.encoder.named_children():
            if name != "latent":
                hidden = block(hidden)
        return self.encoder.latent(hidden), self.log_variance(hidden)

    def training_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        mean, log_variance = self.encode_distribution(inputs)
        codes = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)
        reconstruction, kl = vae_loss_terms(self.decode(codes), targets, mean, log_variance)
        return reconstruction + self.beta * kl

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode `count` codes drawn from N(0, I): count×C×H×W new images."""
        device = next(self.parameters()).device
        codes = torch.randn(count, self.latent_size, generator=generator).to(device)
        return self.decode(codes)

    @torch.no_grad()
    def interpolate(self, start: torch.Tensor, end: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Images along the straight line between the codes of two C×H×W images: steps×C×H×W."""
        means = self.encode(torch.stack([start, end]))
        weights = torch.linspace(0, 1, steps, device=means.device)[:, None]
        return self.decode((1 - weights) * means[0] + weights * means[1])


def vae_loss_terms(reconstruction, targets, mean, log_variance):
    """The two terms of the VAE loss, each averaged over the batch.

    reconstruction, targets: N×C×H×W in [0, 1]; mean, log_variance: N×latent_size.
    Returns (binary cross-entropy summed over pixels, KL(N(mean, exp(log_variance)) ‖ N(0, I))
    summed over latent dimensions), both per-image means. Cross-entropy (a Bernoulli decoder)
    rather than squared error: on [0, 1] pixels squared error is so small that the KL term would
    win and every code would collapse onto the prior.
    """
    count = len(targets)
    cross_entropy = F.binary_cross_entropy(reconstruction, targets, reduction="sum") / count
    kl = -0.5 * (1 + log_variance - mean.pow(2) - log_variance.exp()).sum() / count
    return cross_entropy, kl


def dense_encoder(config: AutoencoderConfig) -> Encoder:
    """Flatten → Linear+ReLU per hidden size → Linear to the code: N×C×H×W → N×latent_size."""
    blocks, width_in = {"flatten": nn.Flatten()}, math.prod(config.input_shape)
    for index, width_out in enumerate(config.hidden_sizes):
        blocks[f"block{index}"] = _dense_block(width_in, width_out)
        width_in = width_out
    blocks["latent"] = nn.Linear(width_in, config.latent_size)
    return Encoder(blocks, config.latent_size, tuple(config.input_shape))


def conv_sizes(config: AutoencoderConfig) -> list[tuple[int, int]]:
    """(height, width) of the input and after each stride-2 convolution of `conv_encoder`."""
    sizes = [tuple(config.input_shape[1:])]
    for _ in config.hidden_sizes:
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


def conv_encoder(config: AutoencoderConfig) -> Encoder:
    """A 3×3 stride-2 convolution + ReLU per hidden size (channels), each halving height and
    width, then Flatten → Linear to the code: N×C×H×W → N×latent_size."""
    blocks, channels_in = {}, config.input_shape[0]
    for index, channels_out in enumerate(config.hidden_sizes):
        blocks[f"block{index}"] = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, kernel_size=3, stride=2, padding=1), nn.ReLU()
        )
        channels_in = channels_out
    height, width = conv_sizes(config)[-1]
    blocks["latent"] = nn.Sequential(
        nn.Flatten(), nn.Linear(channels_in * height * width, config.latent_size)
    )
    return Encoder(blocks, config.latent_size, tuple(config.input_shape))


ENCODERS = {"dense": dense_encoder, "conv": conv_encoder}


def _dense_block(width_in: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, width_out), nn.ReLU())


def _dense_decoder(config: AutoencoderConfig) -> nn.Sequential:
    decoder, width_in = nn.Sequential(), config.latent_size
    for index, width_out in enumerate(reversed(config.hidden_sizes)):
        decoder.add_module(f"block{index}", _dense_block(width_in, width_out))
        width_in = width_out
    # Sigmoid keeps reconstructions in [0, 1], the range of the pixels.
    pixels = nn.Sequential(nn.Linear(width_in, math.prod(config.input_shape)), nn.Sigmoid())
    decoder.add_module("pixels", pixels)
    decoder.add_module("unflatten", nn.Unflatten(1, config.input_shape))
    return decoder


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


AUTOENCODERS = {
    "dense": DenseAutoencoder,
    "conv": ConvAutoencoder,
    "vae": VariationalAutoencoder,
}


def __getattr__(name: str):
    return renamed(name, __name__)


def renamed(name: str, module: str):
    """`DenseAutoencoderConfig`, the old name of AutoencoderConfig, with a DeprecationWarning
    (a module's __getattr__ calls this: the warning points at the line that used the name)."""
    if name != "DenseAutoencoderConfig":
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(
        f"{module}.DenseAutoencoderConfig is AutoencoderConfig (every autoencoder takes it); "
        "the old name still works but will go",
        DeprecationWarning,
        stacklevel=3,
    )
    return AutoencoderConfig


def build_autoencoder(kind: str, **config) -> _Autoencoder:
    """`build_autoencoder("conv", input_shape=(1, 8, 8), latent_size=16)`: one name per model."""
    if kind not in AUTOENCODERS:
        raise MtkitError(f"unknown autoencoder {kind!r}; choose one of {list(AUTOENCODERS)}")
    return AUTOENCODERS[kind](**config)
