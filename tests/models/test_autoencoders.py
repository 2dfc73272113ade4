import math

import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.models import (
    AutoencoderConfig,
    ConvAutoencoder,
    DenseAutoencoder,
    VariationalAutoencoder,
    vae_loss_terms,
)

ALL_AUTOENCODERS = [DenseAutoencoder, ConvAutoencoder, VariationalAutoencoder]


@pytest.mark.parametrize("kind", ALL_AUTOENCODERS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_shapes_and_range(kind, shape):
    model = kind(input_shape=shape, latent_size=5)
    images = torch.rand(3, *shape)
    assert model.encode(images).shape == (3, 5)
    assert model.encoder.output_size == 5
    rebuilt = model(images)
    assert rebuilt.shape == images.shape
    assert rebuilt.min() >= 0 and rebuilt.max() <= 1


def test_encoder_blocks_are_named_layer_groups():
    model = DenseAutoencoder(hidden_sizes=(32, 16))
    assert [name for name, _ in model.encoder.named_children()] == [
        "flatten",
        "block0",
        "block1",
        "latent",
    ]
    assert [name for name, _ in model.encoder.layer_groups()] == ["block0", "block1", "latent"]
    conv = ConvAutoencoder()
    assert [name for name, _ in conv.encoder.layer_groups()] == ["block0", "block1", "latent"]


def test_the_old_config_name_still_works_with_a_deprecation_warning():
    import mtkit.models
    import mtkit.models.autoencoders

    for module in (mtkit.models, mtkit.models.autoencoders):
        with pytest.warns(DeprecationWarning, match="AutoencoderConfig") as caught:
            assert module.DenseAutoencoderConfig is AutoencoderConfig
        assert caught[0].filename == __file__  # the warning points at the caller
    with pytest.raises(AttributeError, match="NoSuchConfig"):
        mtkit.models.NoSuchConfig  # noqa: B018


def test_config_overrides_and_validation():
    model = DenseAutoencoder(AutoencoderConfig(latent_size=4), hidden_sizes=(8,))
    assert model.config.latent_size == 4 and model.config.hidden_sizes == (8,)
    with pytest.raises(MtkitError, match="latent_size"):
        DenseAutoencoder(latent_size=0)
    with pytest.raises(MtkitError, match="input_shape"):
        DenseAutoencoder(input_shape=(8, 8))
    with pytest.raises(MtkitError, match="beta"):
        VariationalAutoencoder(beta=-1.0)


@pytest.mark.parametrize("kind", ALL_AUTOENCODERS)
def test_wrong_image_shape_is_a_clear_error(kind):
    with pytest.raises(MtkitError, match=r"expects images of shape N×1×8×8"):
        kind()(torch.rand(2, 1, 28, 28))


def test_vae_loss_terms_on_a_tiny_example():
    reconstruction = torch.tensor([[[[0.5, 1.0]]]])  # 1×1×1×2
    targets = torch.tensor([[[[0.0, 1.0]]]])
    mean = torch.tensor([[1.0, 0.0]])
    log_variance = torch.tensor([[0.0, math.log(2.0)]])
    cross_entropy, kl = vae_loss_terms(reconstruction, targets, mean, log_variance)
    assert cross_entropy.item() == pytest.approx(math.log(2.0))  # only the 0.5-vs-0 pixel costs
    # KL(N(1, 1) ‖ N(0, 1)) = 0.5; KL(N(0, 2) ‖ N(0, 1)) = 0.5 (2 - 1 - ln 2)
    assert kl.item() == pytest.approx(0.5 + 0.5 * (2 - 1 - math.log(2.0)))


def test_vae_kl_is_zero_when_the_code_is_the_prior():
    _, kl = vae_loss_terms(
        torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2), torch.zeros(4, 3), torch.zeros(4, 3)
    )
    assert kl.item() == 0.0


def test_vae_forward_is_deterministic_but_training_loss_samples():
    torch.manual_seed(0)
    model = VariationalAutoencoder(latent_size=4)
    images = torch.rand(5, 1, 8, 8)
    assert torch.equal(model(images), model(images))
    assert model.training_loss(images, images).item() != model.training_loss(images, images).item()


def test_vae_samples_and_interpolates():
    model = VariationalAutoencoder(latent_size=4)
    assert model.sample(6).shape == (6, 1, 8, 8)
    images = torch.rand(2, 1, 8, 8)
    path = model.interpolate(images[0], images[1], steps=5)
    assert path.shape == (5, 1, 8, 8)
    assert torch.allclose(path[0], model(images[:1])[0], atol=1e-6)
    assert torch.allclose(path[-1], model(images[1:])[0], atol=1e-6)


def test_build_autoencoder_by_name():
    from mtkit.models import build_autoencoder

    assert isinstance(build_autoencoder("conv", latent_size=3), ConvAutoencoder)
    with pytest.raises(MtkitError, match="unknown autoencoder 'rbm'"):
        build_autoencoder("rbm")
