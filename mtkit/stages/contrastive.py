"""Contrastive pretraining (SimCLR, Chen et al. 2020): learn what stays the same under distortion.

An autoencoder learns features by rebuilding every pixel, including the ones that do not matter
for the class (the exact stroke width, the background). Contrastive pretraining asks another
question: given two randomly distorted *views* of each image in a batch, which view belongs with
which? To answer, the encoder must describe what the distortions keep (the shape of a garment or
a digit) and ignore what they change (position, contrast, a missing patch).

    images ──StrongAugment──▶ view a ──encoder──▶ h_a ──projection──▶ z_a ┐
           └─StrongAugment──▶ view b ──encoder──▶ h_b ──projection──▶ z_b ┴─▶ NT-Xent loss

The loss (NT-Xent, a form of InfoNCE) for the view pair (i, j) among the 2N views of a batch is

    ℓ(i, j) = −log  exp(sim(z_i, z_j) / τ)  /  Σ_{k ≠ i} exp(sim(z_i, z_k) / τ)

with sim the cosine similarity and τ the temperature: a softmax classification of "which of
the other 2N − 1 views is my partner". The projection head is thrown away after pretraining;
the encoder's output h is what fine-tuning keeps (it holds more than z, which learnt to forget
whatever the distortions change).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.train import History, fit
from mtkit.core.utils import MtkitError, check_positive, seed_everything
from mtkit.stages.augment import StrongAugment
from mtkit.stages.pretrain import _images_only


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """The NT-Xent loss of N pairs of views: z_a[i] and z_b[i] are two views of image i.

    z_a, z_b: N×D projections (normalised here). Returns the mean over all 2N views of
    −log softmax similarity of each view's partner against the other 2N − 1 views (scalar).
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2 or len(z_a) < 2:
        raise MtkitError(
            f"nt_xent_loss needs two N×D tensors of the same shape with N >= 2, got "
            f"{tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    check_positive("temperature", temperature)
    count = len(z_a)
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    similarity = z @ z.T / temperature
    # A view is not a candidate partner of itself.
    similarity = similarity.masked_fill(
        torch.eye(2 * count, dtype=torch.bool, device=z.device), -1e9
    )
    partner = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(z.device)
    return F.cross_entropy(similarity, partner)


class ContrastiveModel(nn.Module):
    """encoder → projection head (Linear, BatchNorm, ReLU, Linear), as in SimCLR.

    forward(images): N×C×H×W → N×projection_size. Only `encoder` is kept after pretraining.
    """

    def __init__(self, encoder: nn.Module, projection_size: int = 64):
        super().__init__()
        width = getattr(encoder, "output_size", None)
        if not isinstance(width, int):
            raise MtkitError("contrastive pretraining needs an encoder with an `output_size`")
        check_positive("projection_size", projection_size, integer=True)
        self.encoder = encoder
        self.projection = nn.Sequential(
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Linear(width, projection_size),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(images))


def pretrain_contrastive(
    encoder: nn.Module,
    images,
    *,
    augment=None,
    temperature: float = 0.5,
    projection_size: int = 64,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 256,
    val_images=None,
    **fit_options,
) -> History:
    """Train `encoder` in place with SimCLR on `images` (an ImageDataset or N×C×H×W tensor).

    encoder: an encoder with `output_size`, which gets a new projection head, or a
        ContrastiveModel, whose own head is trained with it (and kept there).

    augment: makes one random view of a batch (default `StrongAugment()`); called twice per
        batch. Labels are never read. A batch of N images is a 2N-way classification, so larger
        batches give harder, more useful problems (and need at least 2 images).
    Extra keyword arguments go to `mtkit.fit` (schedule, weight_decay, callbacks, seed, ...).
    Returns the History; its `val_loss` (when val_images are given) is the NT-Xent loss of
    fresh views of the validation images.
    """
    train = _images_only(images)
    val = None if val_images is None else _images_only(val_images)
    augment = augment if augment is not None else StrongAugment()
    if not callable(augment):
        raise MtkitError(f"augment must be a callable images → images, got {augment!r}")
    check_positive("temperature", temperature)
    if isinstance(encoder, ContrastiveModel):
        model = encoder
    else:
        if fit_options.get("seed") is not None:  # the new head is part of what the seed fixes
            seed_everything(fit_options["seed"])
        model = ContrastiveModel(encoder, projection_size)

    def loss_fn(model, batch):
        views = batch[0]
        if len(views) < 2:  # a last batch of one image has no other view to tell it from
            return torch.zeros((), device=views.device, requires_grad=True)
        return nt_xent_loss(model(augment(views)), model(augment(views)), temperature)

    fit_options.update(epochs=epochs, lr=lr, batch_size=batch_size, val_data=val)
    return fit(model, loss_fn, train, **fit_options)
