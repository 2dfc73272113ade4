"""forgetting: how far fine-tuning moved an encoder from what pretraining taught it."""

from __future__ import annotations

import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.evaluation.forgetting import forgetting
from mtkit.models import Classifier, DenseAutoencoder
from mtkit.stages.finetune import copy_encoder, fine_tune

QUIET = {"progress": False, "device": "cpu"}


def toy_data(count: int = 40):
    """count 1×8×8 images whose class (0..3) brightens one quadrant."""
    labels = torch.arange(count) % 4
    images = 0.3 * torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for index, (row, column) in enumerate(divmod(label, 2) for label in labels.tolist()):
        images[index, 0, 4 * row : 4 * row + 4, 4 * column : 4 * column + 4] += 0.6
    return images, labels


def toy_classifier(hidden=(16,)) -> tuple[DenseAutoencoder, Classifier]:
    torch.manual_seed(0)
    autoencoder = DenseAutoencoder(hidden_sizes=hidden, latent_size=6)
    return autoencoder, Classifier(copy_encoder(autoencoder), num_classes=4)


def test_forgetting_is_zero_for_a_probe_and_grows_with_full_fine_tuning():
    images, labels = toy_data()
    autoencoder, probe = toy_classifier()
    fine_tune(probe, (images, labels), strategy="linear_probe", epochs=3, **QUIET)
    kept = forgetting(autoencoder, probe, images)
    assert kept.after == pytest.approx(kept.before)
    assert kept.weight_change == 0.0 and kept.ratio == pytest.approx(1.0)

    autoencoder, full = toy_classifier()
    fine_tune(full, (images, labels), strategy="full", lr=3e-2, epochs=20, **QUIET)
    moved = forgetting(autoencoder, full, images)
    assert moved.before == pytest.approx(kept.before)
    assert moved.after > moved.before and moved.weight_change > 0


def test_forgetting_needs_matching_architectures():
    autoencoder, _ = toy_classifier()
    _, other = toy_classifier(hidden=(8,))
    with pytest.raises(MtkitError, match="architecture"):
        forgetting(autoencoder, other, torch.rand(4, 1, 8, 8))
