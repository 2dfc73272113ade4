"""Unsupervised pretraining: teach an autoencoder to rebuild images, no labels needed.

A *denoising* autoencoder sees a corrupted image and must rebuild the clean one. The corruption
stops it from learning the identity and pushes it towards features that describe digits rather
than single pixels. Noise is an option of the pretraining call, not a different model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.train import History, fit
from mtkit.utils import MtkitError, check_choice, check_positive

NOISE_TYPES = ("none", "gaussian", "masking")


def add_noise(images: torch.Tensor, noise: str = "gaussian", level: float = 0.3) -> torch.Tensor:
    """Corrupt a batch of images; the input is never modified.

    images: N×C×H×W in [0, 1].
    noise: "none", "gaussian" (add N(0, level²) and clip to [0, 1]) or "masking" (set a random
        `level` fraction of the pixels to 0).
    Returns a new tensor of the same shape.
    """
    check_choice("noise", noise, NOISE_TYPES)
    check_positive("noise level", level, allow_zero=True)
    if noise == "none" or level == 0:
        return images.clone()
    if noise == "gaussian":
        return (images + level * torch.randn_like(images)).clamp(0.0, 1.0)
    if level >= 1:
        raise MtkitError(f"masking noise level is the fraction of pixels hidden; got {level}")
    keep = torch.rand_like(images) >= level
    return images * keep


def reconstruction_loss(model: nn.Module, batch, noise: str = "none", level: float = 0.0):
    """The autoencoder's loss for rebuilding the clean images from (noisy) copies of them.

    batch: a tuple whose first element is N×C×H×W images (labels, if any, are ignored).
    Uses `model.training_loss(inputs, targets)` when the model defines one (a VAE adds its KL
    term there), else the mean squared error.
    """
    images = batch[0]
    inputs = add_noise(images, noise, level)
    if hasattr(model, "training_loss"):
        return model.training_loss(inputs, images)
    return F.mse_loss(model(inputs), images)


def pretrain_autoencoder(
    model: nn.Module,
    images,
    *,
    noise: str = "none",
    noise_level: float = 0.3,
    epochs: int = 50,
    lr: float = 3e-3,
    batch_size: int = 64,
    val_images=None,
    **fit_options,
) -> History:
    """Train `model` to reconstruct `images` (an ImageDataset or an N×C×H×W tensor).

    Labels are never read: only the images go into training. Extra keyword arguments go to
    `mtkit.fit` (callbacks, weight_decay, schedule, seed, ...). Returns the History.
    """
    check_choice("noise", noise, NOISE_TYPES)
    check_positive("noise_level", noise_level, allow_zero=True)
    train = _images_only(images)
    val = None if val_images is None else _images_only(val_images)

    def loss_fn(model, batch):
        # Only corrupt while training: validation measures how well clean images are rebuilt.
        return reconstruction_loss(model, batch, noise if model.training else "none", noise_level)

    return fit(
        model,
        loss_fn,
        train,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        val_data=val,
        **fit_options,
    )


@torch.no_grad()
def reconstruction_error(model: nn.Module, images, batch_size: int = 512) -> float:
    """Mean squared reconstruction error of `model` over all images (clean inputs)."""
    data = _images_only(images)[0]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(data), batch_size):
        chunk = data[start : start + batch_size].to(device)
        total += F.mse_loss(model(chunk), chunk, reduction="sum").item()
    model.train(was_training)
    return total / data.numel()


def _images_only(images) -> tuple[torch.Tensor]:
    """Accept an ImageDataset (labels dropped) or a tensor; return a 1-tuple of images."""
    if isinstance(images, torch.Tensor):
        tensor = images
    elif hasattr(images, "images"):
        tensor = images.images
    else:
        raise MtkitError(
            f"expected an ImageDataset or an N×C×H×W tensor of images, got {type(images).__name__}"
        )
    if tensor.dim() != 4 or len(tensor) == 0:
        raise MtkitError(f"expected a non-empty N×C×H×W image tensor, got {tuple(tensor.shape)}")
    return (tensor,)
