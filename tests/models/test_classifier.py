import pytest
import torch
from torch import nn

from mtkit.core.utils import MtkitError
from mtkit.models import ConvAutoencoder, DenseAutoencoder
from mtkit.models.classifier import Classifier


def test_logits_shape_on_any_encoder():
    for autoencoder in (DenseAutoencoder(latent_size=6), ConvAutoencoder(latent_size=6)):
        classifier = Classifier(autoencoder.encoder, num_classes=10, dropout=0.2)
        assert classifier(torch.rand(4, 1, 8, 8)).shape == (4, 10)


def test_layer_groups_bottom_to_top():
    classifier = Classifier(DenseAutoencoder(hidden_sizes=(16, 8)).encoder, num_classes=3)
    names = [name for name, _ in classifier.layer_groups()]
    assert names == ["encoder.block0", "encoder.block1", "encoder.latent", "head"]


def test_plain_encoder_needs_feature_size():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(MtkitError, match="feature_size"):
        Classifier(encoder, num_classes=3)
    classifier = Classifier(encoder, num_classes=3, feature_size=5)
    assert [name for name, _ in classifier.layer_groups()] == ["encoder.1", "head"]


def test_standardised_features_have_zero_mean_unit_spread():
    torch.manual_seed(0)
    classifier = Classifier(DenseAutoencoder(latent_size=4).encoder, num_classes=2)
    images = torch.rand(300, 1, 8, 8)
    classifier.standardize_features(images)
    features = classifier.features(images)
    assert torch.allclose(features.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(features.std(0), torch.ones(4), atol=1e-3)


def test_fresh_copy_has_new_weights_and_leaves_the_original_alone():
    classifier = Classifier(DenseAutoencoder(latent_size=4).encoder, num_classes=2)
    original = {k: v.clone() for k, v in classifier.state_dict().items()}
    twin = classifier.fresh_copy()
    assert not torch.equal(twin.encoder.block0[0].weight, classifier.encoder.block0[0].weight)
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in original.items())


def test_bad_arguments():
    encoder = DenseAutoencoder().encoder
    with pytest.raises(MtkitError, match="num_classes"):
        Classifier(encoder, num_classes=1)
    with pytest.raises(MtkitError, match="dropout"):
        Classifier(encoder, num_classes=3, dropout=1.0)
