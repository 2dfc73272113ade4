"""Drift: the MMD permutation test, reconstruction scores, shifted digits, adapting three ways."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.data import few_labels, load_images
from mtkit.evaluation.drift import (
    detect_drift,
    mmd_permutation_test,
    reconstruction_scores,
    shift_images,
    shifted_split,
)
from mtkit.models import Classifier, DenseAutoencoder
from mtkit.plots.experiments import plot_adaptations
from mtkit.stages import adapters
from mtkit.stages.finetune import fine_tune
from mtkit.stages.pretrain import pretrain_autoencoder
from mtkit.stages.shift import adapt_to_shift


def gaussians(count: int, shift: float, seed: int) -> torch.Tensor:
    return torch.randn(count, 5, generator=torch.Generator().manual_seed(seed)) + shift


def test_mmd_p_value_is_small_for_shifted_and_large_for_same_distribution_data():
    reference = gaussians(150, 0.0, seed=0)
    same = mmd_permutation_test(reference, gaussians(150, 0.0, seed=1), permutations=300)
    shifted = mmd_permutation_test(reference, gaussians(150, 0.5, seed=1), permutations=300)
    assert shifted[1] < 0.01 < 0.2 < same[1]
    assert shifted[0] > 5 * same[0] > 0
    assert shifted[1] >= 1 / 301  # never 0: the observed split counts as one permutation


def test_same_distribution_p_values_are_spread_out_not_always_small():
    """Under no drift the p-value is roughly uniform: a test that always says "drift" fails."""
    reference = gaussians(60, 0.0, seed=0)
    p_values = [
        mmd_permutation_test(reference, gaussians(60, 0.0, seed=s), permutations=100)[1]
        for s in range(1, 11)
    ]
    assert np.mean(np.array(p_values) < 0.05) <= 0.3
    assert np.median(p_values) > 0.2


def test_mmd_test_is_reproducible_and_checks_its_inputs():
    a, b = gaussians(40, 0.0, 0), gaussians(40, 0.2, 1)
    assert mmd_permutation_test(a, b, seed=3) == mmd_permutation_test(a, b, seed=3)
    with pytest.raises(MtkitError, match="N×D and M×D"):
        mmd_permutation_test(a, b[:, :3])
    with pytest.raises(MtkitError, match="at least 2"):
        mmd_permutation_test(a, b[:1])


def test_shifted_images_rotate_and_invert():
    images = torch.rand(6, 1, 8, 8)
    assert torch.equal(shift_images(images, "invert"), 1 - images)
    quarter = shift_images(images, "rotate", angle=90)
    assert torch.allclose(quarter, torch.rot90(images, k=-1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(shift_images(images, "rotate", angle=0), images, atol=1e-6)
    with pytest.raises(MtkitError, match="unknown shift"):
        shift_images(images, "blur")


@pytest.fixture(scope="module")
def digits_world():
    """A split, a briefly pretrained autoencoder, a fine-tuned classifier, an inverted split."""
    digits = load_images("digits")
    split = few_labels(digits, labels_per_class=10, seed=0)
    torch.manual_seed(0)
    autoencoder = DenseAutoencoder(hidden_sizes=(256,), latent_size=64)
    pretrain_autoencoder(
        autoencoder, split.unlabelled, noise="gaussian", epochs=60, lr=1e-2, progress=False, seed=0
    )
    classifier = Classifier(copy.deepcopy(autoencoder.encoder), 10)
    classifier.standardize_features(split.unlabelled.images)
    fine_tune(
        classifier, split.labelled, strategy="full", validation=split.validation, epochs=60,
        patience=15, progress=False, seed=0,
    )  # fmt: skip
    inverted = shifted_split(few_labels(digits, labels_per_class=10, seed=1), "invert")
    return split, autoencoder, classifier, inverted


def test_detect_drift_tells_shifted_from_fresh_data(digits_world):
    split, autoencoder, _, inverted = digits_world
    same = detect_drift(split.validation, split.test, autoencoder, permutations=200)
    shifted = detect_drift(split.validation, inverted.test, autoencoder, permutations=200)

    assert not same.drifted and same.p_value > 0.05
    assert shifted.drifted and shifted.p_value < 0.01
    # Reconstruction error flags about 5% of fresh data (the 95th percentile) and most of the
    # shifted data, example by example.
    assert same.flagged < 0.15 and shifted.flagged > 0.9
    assert len(shifted.new_scores) == len(inverted.test)
    assert "drift at α = 0.05" in shifted.summary()
    assert "no evidence of drift" in same.summary()
    assert shifted.plot() is not None


def test_reconstruction_scores_are_per_example_errors(digits_world):
    split, autoencoder, _, _ = digits_world
    images = split.test.images[:5]
    scores = reconstruction_scores(autoencoder, images)
    with torch.no_grad():
        expected = (autoencoder(images) - images).pow(2).mean(dim=(1, 2, 3))
    assert scores.shape == (5,)
    assert np.allclose(scores, expected.numpy(), atol=1e-7)


def test_adapting_three_ways_trades_new_accuracy_against_forgetting(digits_world):
    split, _, classifier, inverted = digits_world
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    results = {}
    for method in ("naive", "rehearsal", "adapter"):
        model, results[method] = adapt_to_shift(classifier, split, inverted, method)
        if method == "adapter":
            assert adapters.active_adapter(model) == "new_domain"
            backbone = adapters.base_state_dict(model, skip=("head",))
            for name, tensor in backbone.items():  # the backbone never moved
                assert torch.equal(tensor, before[name]), name

    for state_name, tensor in classifier.state_dict().items():  # the original is untouched
        assert torch.equal(tensor, before[state_name])
    naive, rehearsal, adapter = results["naive"], results["rehearsal"], results["adapter"]
    assert naive.new_before < 0.3  # inverted digits fool the old classifier
    for result in results.values():
        assert result.new_accuracy > naive.new_before + 0.3  # every method learned the new domain
    assert naive.forgetting > 0.3  # naive fine-tuning forgets the old domain
    assert rehearsal.forgetting < naive.forgetting - 0.2  # replaying old examples helps
    assert adapter.forgetting == 0.0  # the old path is untouched
    assert adapter.trainable_parameters < naive.trainable_parameters / 3
    assert plot_adaptations(list(results.values())) is not None


def test_adapt_to_shift_rejects_an_unknown_method(digits_world):
    split, _, classifier, inverted = digits_world
    with pytest.raises(MtkitError, match="unknown method 'forget'"):
        adapt_to_shift(classifier, split, inverted, "forget")
