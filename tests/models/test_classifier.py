import copy

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


def test_standardize_features_is_unchanged_by_batching_and_keeps_the_training_mode():
    """The batched eval-mode pass gives exactly the features a hand-written loop gave."""
    torch.manual_seed(0)
    classifier = Classifier(DenseAutoencoder(latent_size=4).encoder, num_classes=2, dropout=0.5)
    images = torch.rand(250, 1, 8, 8)
    classifier.train()
    classifier.standardize_features(images, batch_size=64)
    assert classifier.training and classifier.encoder.training
    with torch.no_grad():
        batches = images.split(64)
        codes = torch.cat([classifier.encoder.eval()(batch) for batch in batches])
    assert torch.equal(classifier.feature_mean, codes.mean(dim=0))
    assert torch.equal(classifier.feature_std, codes.std(dim=0).clamp_min(1e-4))


@pytest.mark.parametrize("kind", [DenseAutoencoder, ConvAutoencoder])
def test_image_encoders_say_where_adapters_go(kind):
    from mtkit.stages.adapters import add_lora

    encoder = kind(hidden_sizes=(8, 8)).encoder
    assert encoder.bottleneck_places == ("block0", "block1", "latent")
    assert not hasattr(encoder, "token_embedding")  # no prompts for images
    declared = Classifier(copy.deepcopy(encoder), num_classes=3)
    targets = [f"encoder.{target}" for target in encoder.lora_targets]
    # "encoder.*" (the declared "*", relative to the classifier) is "encoder": every layer in it
    assert targets == ["encoder.*"]
    chosen = add_lora(declared, targets, rank=2)
    assert chosen == add_lora(Classifier(copy.deepcopy(encoder), num_classes=3), "encoder", rank=2)
    assert len(chosen) == 3


def test_bad_arguments():
    encoder = DenseAutoencoder().encoder
    with pytest.raises(MtkitError, match="num_classes"):
        Classifier(encoder, num_classes=1)
    with pytest.raises(MtkitError, match="dropout"):
        Classifier(encoder, num_classes=3, dropout=1.0)
