"""self_train: pseudo-label choice, neighbour smoothing, rounds, and never reading pool labels."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.models import Classifier, DenseAutoencoder
from mtkit.stages.finetune import copy_encoder, fine_tune, predict
from mtkit.stages.selftrain import (
    neighbour_graph,
    select_pseudo_labels,
    self_train,
    smooth_over_neighbours,
)

QUIET = {"progress": False, "device": "cpu"}


def toy_data(count: int, seed: int):
    """count 1×8×8 images in [0, 1]; the class (0..3) sets which quadrant is bright."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 4
    images = 0.4 * torch.rand(count, 1, 8, 8, generator=generator)
    for index, label in enumerate(labels.tolist()):
        row, column = divmod(label, 2)
        images[index, 0, 4 * row : 4 * row + 4, 4 * column : 4 * column + 4] += 0.5
    return images, labels


class SecretPool:
    """An unlabelled pool that raises if anything but its images is touched."""

    def __init__(self, images):
        self.images = images

    @property
    def labels(self):
        raise AssertionError("self_train read the pool's labels")

    @property
    def tensors(self):
        raise AssertionError("self_train read the pool's tensors (images and labels)")


def trained_classifier(labelled, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    classifier = Classifier(copy_encoder(DenseAutoencoder(hidden_sizes=(16,), latent_size=6)), 4)
    fine_tune(classifier, labelled, strategy="full", epochs=5, **QUIET)
    return classifier


def test_self_train_never_reads_the_pools_labels():
    labelled, validation, pool = toy_data(12, 0), toy_data(12, 1), toy_data(60, 2)[0]
    classifier = trained_classifier(labelled)
    result = self_train(
        classifier,
        labelled,
        SecretPool(pool),
        validation=validation,
        rounds=2,
        threshold=0.0,
        epochs=2,
        **QUIET,
    )
    assert [record["round"] for record in result.rounds] == [0, 1, 2]
    assert len(result.histories) == 2 and len(result.pseudo_labels) == 2
    indices, labels = result.pseudo_labels[0]
    assert result.rounds[1]["pseudo_labelled"] == len(indices) == len(labels) > 0
    assert int(indices.max()) < len(pool)


def test_self_train_keeps_the_round_with_the_best_validation_accuracy():
    labelled, validation, pool = toy_data(8, 0), toy_data(40, 1), toy_data(200, 2)[0]
    classifier = trained_classifier(labelled)
    result = self_train(
        classifier,
        labelled,
        pool,
        validation=validation,
        rounds=2,
        epochs=10,
        tolerance=0.0,
        **QUIET,
    )
    accuracies = [record["val_accuracy"] for record in result.rounds]
    assert result.rounds[result.best_round]["val_accuracy"] == max(accuracies)
    kept = (predict(classifier, validation[0]).argmax(dim=1) == validation[1]).float().mean()
    assert kept.item() == pytest.approx(max(accuracies))


def test_self_train_blends_its_training_examples_with_mixup(monkeypatch):
    """Mixup is on by default in every round (it keeps a few wrong pseudo-labels from being
    fitted exactly); mixup=0 turns it off."""
    calls = []

    def spy(size, alpha):
        calls.append(alpha)
        return 1.0, torch.arange(size)

    monkeypatch.setattr("mtkit.stages.finetune.mixup_pairs", spy)
    labelled, validation, pool = toy_data(8, 0), toy_data(12, 1), toy_data(40, 2)[0]
    options = {"validation": validation, "rounds": 2, "epochs": 1, "threshold": 0.0, **QUIET}
    self_train(trained_classifier(labelled), labelled, pool, **options)
    assert calls and set(calls) == {0.4}
    calls.clear()
    self_train(trained_classifier(labelled), labelled, pool, mixup=1.0, **options)
    assert calls and set(calls) == {1.0}
    calls.clear()
    self_train(trained_classifier(labelled), labelled, pool, mixup=0.0, **options)
    assert calls == []


def test_self_train_keeps_the_last_round_within_tolerance_of_the_best(monkeypatch):
    # Validation: 50 of class 0, 49 of class 1, 1 of class 2. Each stubbed "fine-tuning" makes
    # the classifier predict one class for everything, so its validation accuracy is known:
    # round 0 (as it comes in) 0.01, round 1 0.50, round 2 0.49, round 3 0.01 (a harmful round).
    images = toy_data(100, 1)[0]
    validation = (images, torch.tensor([0] * 50 + [1] * 49 + [2]))
    labelled = toy_data(8, 0)

    def predict_only(classifier, label):
        with torch.no_grad():
            classifier.head.weight.zero_()
            classifier.head.bias.copy_(10.0 * torch.nn.functional.one_hot(torch.tensor(label), 4))

    def run(tolerance):
        classifier = trained_classifier(labelled)
        predict_only(classifier, 2)
        labels_per_round = iter([0, 1, 2])

        def fake_fine_tune(classifier, combined, **options):
            predict_only(classifier, next(labels_per_round))
            return SimpleNamespace(history=None)

        monkeypatch.setattr("mtkit.stages.selftrain.fine_tune", fake_fine_tune)
        result = self_train(
            classifier,
            labelled,
            toy_data(40, 2)[0],
            validation=validation,
            rounds=3,
            tolerance=tolerance,
            **QUIET,
        )
        accuracies = [record["val_accuracy"] for record in result.rounds]
        assert accuracies == pytest.approx([0.01, 0.50, 0.49, 0.01])
        guesses = predict(classifier, images).argmax(dim=1)
        return result.best_round, guesses

    best_round, guesses = run(tolerance=0.0)
    assert best_round == 1 and (guesses == 0).all()  # strictly the best round
    best_round, guesses = run(tolerance=0.02)
    assert best_round == 2 and (guesses == 1).all()  # one image worse, one round later
    assert run(tolerance=0.01)[0] == 2  # exactly `tolerance` below the best still counts
    best_round, _ = run(tolerance=0.5)
    assert best_round == 3  # even the harmful round is within so wide a tolerance


def test_threshold_keeps_only_confident_guesses_most_confident_first():
    probabilities = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.2, 0.8], [0.01, 0.99]])
    indices, labels = select_pseudo_labels(probabilities, threshold=0.75, balance=False)
    assert indices.tolist() == [3, 0, 2]
    assert labels.tolist() == [1, 0, 1]


def test_balance_caps_each_class_at_twice_the_rarest():
    # class 0: 6 confident guesses, class 1: 2, class 2: 1 -> at most 2 per class
    probabilities = torch.zeros(9, 3)
    probabilities[:6, 0], probabilities[6:8, 1], probabilities[8, 2] = 1.0, 1.0, 1.0
    probabilities[:6, 0] -= torch.arange(6) * 0.01  # example 0 is the most confident
    indices, labels = select_pseudo_labels(probabilities, threshold=0.5, balance=True)
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2]
    assert sorted(indices[labels == 0].tolist()) == [0, 1]  # the two most confident of class 0


def test_neighbour_graph_excludes_the_point_itself_across_chunks():
    points = torch.tensor([[0.0], [1.0], [10.0], [11.0], [12.5]])
    neighbours = neighbour_graph(points, k=1, chunk_size=2)
    assert neighbours.flatten().tolist() == [1, 0, 3, 2, 3]


def test_smoothing_tones_down_a_lone_guess_its_neighbours_disagree_with():
    # Five points in a cluster: four guess class 0, one confidently guesses class 1.
    probabilities = torch.tensor([[0.9, 0.1]] * 4 + [[0.05, 0.95]])
    neighbours = torch.tensor([[1, 2], [0, 2], [0, 1], [0, 4], [0, 1]])
    smoothed = smooth_over_neighbours(probabilities, neighbours, smoothing=0.8)
    assert smoothed[4].argmax() == 0  # outvoted by its neighbours
    assert torch.allclose(smoothed.sum(dim=1), torch.ones(5))
    assert (smoothed[:3, 0] > 0.75).all()  # agreeing neighbours stay confident
    unchanged = smooth_over_neighbours(probabilities, neighbours, smoothing=0.0)
    assert torch.equal(unchanged, probabilities)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"tolerance": -0.01}, "tolerance"),
        ({"tolerance": True}, "tolerance"),
        ({"rounds": 0}, "rounds"),
        ({"neighbours": 0}, "neighbours"),
        ({"mixup": -0.4}, "mixup"),
        ({"mixup": "yes"}, "mixup"),
        ({"strategy": "scratch"}, "scratch"),
        ({"validation": None}, "validation"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    labelled = toy_data(8, 0)
    options = {"validation": toy_data(8, 1), **kwargs}
    classifier = trained_classifier(labelled)
    with pytest.raises(MtkitError, match=message):
        self_train(classifier, labelled, toy_data(20, 2)[0], **options, **QUIET)


def test_a_pool_must_be_images():
    labelled = toy_data(8, 0)
    with pytest.raises(MtkitError, match="unlabelled pool"):
        self_train(trained_classifier(labelled), labelled, [1, 2, 3], validation=labelled)
