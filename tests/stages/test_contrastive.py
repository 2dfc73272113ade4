"""SimCLR: the NT-Xent loss against a loop written from the paper's formula, the views the
strong augmentation makes, and pretraining that uses images only."""

import math

import pytest
import torch

import mtkit as mt
from mtkit.core.utils import MtkitError
from mtkit.models.autoencoders import AutoencoderConfig, conv_encoder, dense_encoder
from mtkit.stages.augment import StrongAugment, random_squares, shift_rotate
from mtkit.stages.contrastive import ContrastiveModel, nt_xent_loss, pretrain_contrastive


def nt_xent_by_loop(z_a, z_b, temperature):
    """ℓ(i, j) = −log exp(sim(z_i, z_j)/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ), averaged over 2N."""
    views = list(z_a) + list(z_b)
    count = len(z_a)

    def sim(u, v):
        return float(u @ v / (u.norm() * v.norm()))

    total = 0.0
    for i, view in enumerate(views):
        partner = (i + count) % (2 * count)
        numerator = math.exp(sim(view, views[partner]) / temperature)
        denominator = sum(
            math.exp(sim(view, other) / temperature) for k, other in enumerate(views) if k != i
        )
        total += -math.log(numerator / denominator)
    return total / (2 * count)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_the_formula_computed_view_by_view(temperature):
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(5, 3, generator=generator), torch.randn(5, 3, generator=generator)
    loss = nt_xent_loss(z_a, z_b, temperature)
    assert float(loss) == pytest.approx(nt_xent_by_loop(z_a, z_b, temperature), rel=1e-5)


def test_nt_xent_is_low_when_partners_agree_and_high_when_they_do_not():
    z = torch.eye(4) * 5
    assert nt_xent_loss(z, z, 0.1) < 0.01
    assert nt_xent_loss(z, z.roll(1, dims=0), 0.1) > 5


def test_nt_xent_refuses_mismatched_or_single_views():
    with pytest.raises(MtkitError, match="same shape"):
        nt_xent_loss(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(MtkitError, match="N >= 2"):
        nt_xent_loss(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(MtkitError, match="temperature"):
        nt_xent_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)


def test_strong_augment_makes_different_views_in_range_without_touching_the_batch():
    torch.manual_seed(0)
    images = torch.rand(6, 1, 28, 28)
    before = images.clone()
    augment = StrongAugment()
    view_a, view_b = augment(images), augment(images)
    assert torch.equal(images, before)
    assert view_a.shape == images.shape
    assert 0 <= float(view_a.min()) and float(view_a.max()) <= 1
    # Every image gets its own distortion, and two calls differ.
    assert (view_a - view_b).abs().flatten(1).sum(1).min() > 1.0


def test_strong_augment_with_everything_off_is_the_identity():
    images = torch.rand(3, 1, 8, 8)
    identity = StrongAugment(max_zoom=1, max_shift=0, max_rotation=0, contrast=0, erase=0)
    assert torch.allclose(identity(images), images, atol=1e-5)


def test_strong_augment_refuses_bad_settings_by_name():
    with pytest.raises(MtkitError, match="max_zoom"):
        StrongAugment(max_zoom=0.5)
    with pytest.raises(MtkitError, match="flip"):
        StrongAugment(flip=2)
    with pytest.raises(MtkitError, match="N×C×H×W"):
        StrongAugment()(torch.rand(8, 8))


def test_zoom_magnifies_about_the_centre():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 3:6, 3:6] = 1  # a 3×3 square in the middle
    zoomed = shift_rotate(image, torch.zeros(1), torch.zeros(1, 2), torch.tensor([3.0]))
    assert zoomed[0, 0, 1:8, 1:8].min() > 0.9  # now 9×9, cropped to the frame (edges blurred)


def test_random_squares_erase_about_the_asked_fraction():
    torch.manual_seed(0)
    mask = random_squares(torch.zeros(200, 1, 20, 20), 0.5)
    assert mask.shape == (200, 1, 20, 20)
    covered = mask.float().mean()
    assert 0.1 < covered < 0.25  # at most a quarter: squares hang over the edge at times


def test_flip_mirrors_the_chosen_images():
    images = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(2, 1, 1, 1) / 16
    flip_all = StrongAugment(max_zoom=1, max_shift=0, max_rotation=0, flip=1.0, contrast=0, erase=0)
    assert torch.allclose(flip_all(images), images.flip(-1), atol=1e-5)


def test_pretraining_reads_images_only_and_lowers_the_loss():
    digits = mt.load_images("digits")[:256]
    encoder = dense_encoder(AutoencoderConfig((1, 8, 8), (32,), 16))
    before = [p.detach().clone() for p in encoder.parameters()]
    history = pretrain_contrastive(
        encoder, digits, epochs=6, batch_size=64, lr=3e-3, progress=False, seed=0
    )
    losses = [record["train_loss"] for record in history.records]
    assert losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters(), strict=True))
    # Labels are not part of what it trains on: an unlabelled pool gives the same encoder.
    same = dense_encoder(AutoencoderConfig((1, 8, 8), (32,), 16))
    same.load_state_dict(dict(zip(same.state_dict(), before, strict=True)))
    pretrain_contrastive(
        same, digits.without_labels(), epochs=6, batch_size=64, lr=3e-3, progress=False, seed=0
    )
    for a, b in zip(encoder.parameters(), same.parameters(), strict=True):
        assert torch.allclose(a, b)


def test_a_contrastive_model_keeps_its_own_head_and_a_conv_encoder_works():
    encoder = conv_encoder(AutoencoderConfig((1, 16, 16), (4, 8), 8))
    model = ContrastiveModel(encoder, projection_size=4)
    head = [p.detach().clone() for p in model.projection.parameters()]
    pretrain_contrastive(model, torch.rand(20, 1, 16, 16), epochs=1, batch_size=10, progress=False)
    assert any(
        not torch.equal(a, b) for a, b in zip(head, model.projection.parameters(), strict=True)
    )
    assert model(torch.rand(3, 1, 16, 16)).shape == (3, 4)


def test_pretraining_refuses_an_encoder_without_a_size_and_a_bad_augment():
    with pytest.raises(MtkitError, match="output_size"):
        pretrain_contrastive(torch.nn.Flatten(), torch.rand(4, 1, 8, 8), epochs=1)
    encoder = dense_encoder(AutoencoderConfig((1, 8, 8), (8,), 4))
    with pytest.raises(MtkitError, match="augment"):
        pretrain_contrastive(encoder, torch.rand(4, 1, 8, 8), augment="strong", epochs=1)
