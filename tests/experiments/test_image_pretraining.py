"""The image track's pretraining specs: architecture by image size, the step budget, and the
on-disk cache that lets a rerun skip pretraining."""

import pytest
import torch

import mtkit as mt
from mtkit.core.utils import MtkitError
from mtkit.experiments import ContrastiveSpec, PretrainCache, PretrainSpec, pretrained_autoencoder
from mtkit.experiments.image_pretraining import choose_architecture
from mtkit.models.autoencoders import ConvAutoencoder, DenseAutoencoder

TINY_AE = PretrainSpec(hidden_sizes=(8,), latent_size=4, epochs=2, batch_size=64)
TINY_SIMCLR = ContrastiveSpec(hidden_sizes=(8,), latent_size=4, epochs=2, batch_size=64)


def test_auto_architecture_is_dense_for_small_images_and_conv_from_16_pixels():
    assert choose_architecture("auto", (1, 8, 8)) == "dense"
    assert choose_architecture("auto", (1, 28, 28)) == "conv"
    assert choose_architecture("auto", (3, 32, 32)) == "conv"
    assert choose_architecture("dense", (1, 28, 28)) == "dense"
    assert isinstance(PretrainSpec().build((1, 8, 8)), DenseAutoencoder)
    assert isinstance(PretrainSpec().build((1, 28, 28)), ConvAutoencoder)
    encoder = ContrastiveSpec().build((1, 28, 28)).encoder
    assert encoder(torch.rand(2, 1, 28, 28)).shape == (2, 128)
    with pytest.raises(MtkitError, match="architecture"):
        PretrainSpec(architecture="resnet")


def test_max_steps_caps_the_epochs_of_a_large_pool():
    spec = PretrainSpec(epochs=400, batch_size=100, max_steps=1000)
    assert spec.epochs_for(1_000) == 100  # 10 steps an epoch
    assert spec.epochs_for(100) == 400  # small pools keep their epochs
    assert PretrainSpec(epochs=7, max_steps=None).epochs_for(10**6) == 7
    assert PretrainSpec().epochs_for(1_297) == 400  # the digits default is what 400 epochs were


def test_specs_are_hashable_and_refuse_bad_values():
    assert len({ContrastiveSpec(), ContrastiveSpec(), TINY_SIMCLR}) == 2
    with pytest.raises(MtkitError, match="temperature"):
        ContrastiveSpec(temperature=0)
    with pytest.raises(MtkitError, match="max_steps"):
        ContrastiveSpec(max_steps=0)


@pytest.mark.parametrize("spec", [TINY_AE, TINY_SIMCLR], ids=["denoising", "contrastive"])
def test_a_cache_with_a_folder_reads_the_pretrained_encoder_back(tmp_path, spec, monkeypatch):
    split = mt.few_labels(mt.load_images("digits")[:300], 3, test_size=60)
    first, _ = pretrained_autoencoder(PretrainCache(folder=tmp_path), spec, split, seed=0)
    assert len(list(tmp_path.glob("image-encoder-*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("pretrained again instead of reading the cache")

    monkeypatch.setattr(type(spec), "pretrain", no_training)
    again, _ = pretrained_autoencoder(PretrainCache(folder=tmp_path), spec, split, seed=0)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(AssertionError, match="pretrained again"):  # another seed is another entry
        pretrained_autoencoder(PretrainCache(folder=tmp_path), spec, split, seed=1)


def test_a_fine_tune_method_runs_on_a_contrastive_encoder():
    split = mt.few_labels(mt.load_images("digits")[:300], 3, test_size=60)
    method = mt.experiments.FineTuneMethod("linear_probe", pretrain=TINY_SIMCLR)
    result = method.run(split, seed=0)
    assert result.predictions.shape == (60,)
    assert result.trainable_parameters == 4 * 10 + 10  # the head only


def test_consistency_method_turns_its_step_budget_into_passes_over_the_pool():
    method = mt.experiments.ConsistencyMethod(max_steps=100, unlabelled_ratio=7)
    assert method.epochs_for(224 * 10) == 10  # 10 steps per pass
    assert method.epochs_for(224 * 1000) == 1  # at least one pass
    assert method.name == "pretrained + linear_probe + consistency"
    for bad in ({"max_steps": 0}, {"threshold": 1.5}, {"strategy": "sideways"}):
        with pytest.raises(MtkitError):
            mt.experiments.ConsistencyMethod(**bad)


def test_consistency_method_never_sees_the_pools_labels():
    split = mt.few_labels(mt.load_images("digits")[:300], 3, test_size=60)
    assert split.unlabelled.labels is None  # what every method gets: images only
    method = mt.experiments.ConsistencyMethod(
        mt.experiments.FineTuneMethod("linear_probe", pretrain=TINY_AE), max_steps=4
    )
    result = method.run(split, seed=0)
    assert result.predictions.shape == (60,)
    assert result.trainable_parameters > 4 * 10 + 10  # consistency trains the whole network


def test_lr_follows_the_architecture_unless_given():
    assert PretrainSpec().lr_for((1, 8, 8)) == 1e-2  # dense on digits, as before
    assert PretrainSpec().lr_for((1, 28, 28)) == 3e-3  # conv
    assert PretrainSpec(lr=0.05).lr_for((1, 28, 28)) == 0.05


def test_a_collapsed_encoder_is_refused_with_a_clear_error():
    from torch import nn

    from mtkit.experiments.image_pretraining import check_not_collapsed

    images = torch.rand(20, 1, 8, 8)
    dead = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.ReLU())
    nn.init.zeros_(dead[1].weight)
    nn.init.constant_(dead[1].bias, -1.0)  # every ReLU off: the same code for every image
    with pytest.raises(MtkitError, match="collapsed"):
        check_not_collapsed(dead, images, PretrainSpec())
    alive = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    check_not_collapsed(alive, images, PretrainSpec())  # differing codes pass
    assert alive.training  # and its mode is restored
