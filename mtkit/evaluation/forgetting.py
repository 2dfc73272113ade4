"""Forgetting: how much of what pretraining taught survives fine-tuning.

`forgetting(autoencoder, classifier, images)` puts the fine-tuned classifier's encoder back in
front of the pretrained decoder and compares the reconstruction error with the autoencoder's
own, and how far the encoder's weights moved. Fine-tune a `copy_encoder` of the autoencoder
(mtkit/stages/finetune.py), so that the autoencoder stays as pretrained.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from mtkit.core.checks import check_images, check_model
from mtkit.core.utils import MtkitError
from mtkit.stages.pretrain import reconstruction_error


@dataclass
class Forgetting:
    """Reconstruction error (mean squared error per pixel) of the pretrained decoder fed by:

    before: the original encoder (the autoencoder as pretrained);
    after: the fine-tuned classifier's encoder.
    weight_change: ‖w_after − w_before‖ / ‖w_before‖ over all encoder weights.
    A frozen encoder gives after == before; the further fine-tuning moved it, the larger after.
    """

    before: float
    after: float
    weight_change: float

    @property
    def ratio(self) -> float:
        """after / before: 1.0 means nothing was forgotten."""
        return self.after / self.before if self.before > 0 else math.inf


class _Rebuild(nn.Module):
    """decoder(encoder(x)): a fine-tuned encoder put back in front of the original decoder."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def relative_change(before: nn.Module, after: nn.Module) -> float:
    """‖w_after − w_before‖ / ‖w_before‖ over all parameters of two same-shaped modules (e.g. a
    pretrained encoder and its fine-tuned copy): 0 means nothing moved."""
    before_weights, after_weights = dict(before.named_parameters()), dict(after.named_parameters())
    shapes = {name: tuple(p.shape) for name, p in before_weights.items()}
    if shapes != {name: tuple(p.shape) for name, p in after_weights.items()}:
        raise MtkitError("the classifier's encoder does not have the pretrained architecture")
    moved = sum(
        (after_weights[name].detach().cpu() - weight.detach().cpu()).pow(2).sum()
        for name, weight in before_weights.items()
    )
    size = sum(weight.detach().cpu().pow(2).sum() for weight in before_weights.values())
    return float(moved.sqrt() / size.sqrt())


def forgetting(autoencoder: nn.Module, classifier: nn.Module, images) -> Forgetting:
    """How far fine-tuning moved `classifier.encoder` from `autoencoder.encoder`.

    autoencoder: the pretrained autoencoder (left untouched: fine-tune a `copy_encoder` of it).
    classifier: a Classifier whose encoder has the same architecture as the autoencoder's.
    images: N×C×H×W tensor or ImageDataset to rebuild (e.g. the test images; labels unused).
    Returns Forgetting(before, after, weight_change).
    """
    check_model("autoencoder", autoencoder)
    check_model("classifier", classifier)
    if not hasattr(autoencoder, "encoder") or not hasattr(autoencoder, "decoder"):
        raise MtkitError("forgetting needs the pretrained autoencoder (with encoder and decoder)")
    if not isinstance(getattr(classifier, "encoder", None), nn.Module):
        raise MtkitError("forgetting needs the fine-tuned classifier (a Classifier, with .encoder)")
    images = check_images("images", images)
    weight_change = relative_change(autoencoder.encoder, classifier.encoder)
    device = next(autoencoder.parameters()).device
    after_model = _Rebuild(copy.deepcopy(classifier.encoder).to(device), autoencoder.decoder)
    return Forgetting(
        before=reconstruction_error(autoencoder, images),
        after=reconstruction_error(after_model, images),
        weight_change=weight_change,
    )
