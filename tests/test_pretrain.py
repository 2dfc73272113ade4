import pytest
import torch

import mtkit as mt
from mtkit.pretrain import add_noise, reconstruction_loss
from mtkit.utils import MtkitError


def test_gaussian_noise_corrupts_a_copy_and_stays_in_range():
    images = torch.rand(16, 1, 8, 8)
    original = images.clone()
    noisy = add_noise(images, "gaussian", 0.3)
    assert torch.equal(images, original)
    assert not torch.allclose(noisy, images)
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_masking_noise_hides_about_the_asked_fraction():
    torch.manual_seed(0)
    images = torch.ones(200, 1, 8, 8)
    hidden = (add_noise(images, "masking", 0.25) == 0).float().mean().item()
    assert 0.22 < hidden < 0.28


def test_denoising_loss_compares_with_clean_targets():
    """The model sees noisy inputs, but the target is the clean image."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, images):
            seen.append(images)
            return images

    images = torch.rand(4, 1, 8, 8)
    loss = reconstruction_loss(Recorder(), (images,), "masking", 0.5)
    assert not torch.equal(seen[0], images)
    assert loss.item() == pytest.approx(torch.mean((seen[0] - images) ** 2).item())


def test_bad_noise_arguments():
    with pytest.raises(MtkitError, match="unknown noise"):
        add_noise(torch.rand(1, 1, 2, 2), "salt")
    with pytest.raises(MtkitError, match="non-negative"):
        add_noise(torch.rand(1, 1, 2, 2), "gaussian", -0.1)
    with pytest.raises(MtkitError, match="fraction"):
        add_noise(torch.rand(1, 1, 2, 2), "masking", 1.0)


def test_pretraining_lowers_reconstruction_error_on_digits():
    digits = mt.load_images("digits")
    mt.seed_everything(0)
    model = mt.DenseAutoencoder(hidden_sizes=(64,), latent_size=16)
    before = mt.reconstruction_error(model, digits)
    history = mt.pretrain_autoencoder(
        model, digits, noise="gaussian", epochs=5, progress=False, device="cpu"
    )
    assert len(history) == 5
    assert mt.reconstruction_error(model, digits) < 0.5 * before


def test_pretraining_never_needs_labels():
    digits = mt.load_images("digits")
    model = mt.DenseAutoencoder(hidden_sizes=(16,), latent_size=4)
    history = mt.pretrain_autoencoder(
        model, digits.without_labels(), epochs=1, progress=False, device="cpu"
    )
    assert len(history) == 1
    with pytest.raises(MtkitError, match="ImageDataset"):
        mt.pretrain_autoencoder(model, [1, 2, 3], epochs=1)
