"""consistency_train (FixMatch): the loss, its batches, never reading pool labels, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

import mtkit
from mtkit.core.utils import MtkitError
from mtkit.models import Classifier, DenseAutoencoder
from mtkit.stages.augment import RandomShiftRotate
from mtkit.stages.consistency import ConsistencyBatches, consistency_train
from mtkit.stages.finetune import copy_encoder, predict

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


def toy_classifier(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(copy_encoder(DenseAutoencoder(hidden_sizes=(16,), latent_size=6)), 4)


def weights(module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def same_weights(first, second) -> bool:
    return all(torch.equal(first[name], second[name]) for name in first)


def identity(images):
    return images


def invert(images):
    return 1 - images


class SecretPool:
    """An unlabelled pool that raises if anything but its images is touched."""

    def __init__(self, images):
        self.images = images

    @property
    def labels(self):
        raise AssertionError("consistency_train read the pool's labels")

    @property
    def tensors(self):
        raise AssertionError("consistency_train read the pool's tensors (images and labels)")


class Recording:
    """An augmentation that records every batch it is given and returns it unchanged."""

    def __init__(self):
        self.calls = []

    def __call__(self, images):
        self.calls.append(images.clone())
        return images


def test_the_pools_labels_are_never_read_and_history_records_the_mask_rate():
    labelled, validation, pool = toy_data(8, 0), toy_data(12, 1), toy_data(40, 2)[0]
    history = consistency_train(
        toy_classifier(), labelled, SecretPool(pool), validation=validation, epochs=2,
        threshold=0.0, batch_size=4, strong=RandomShiftRotate(2, 30), **QUIET,
    )  # fmt: skip
    assert len(history) == 2 and history.best_epoch in (1, 2)
    assert history["train_mask_rate"] == [1.0, 1.0]  # threshold 0: every guess is kept
    for key in ("train_supervised_loss", "train_unlabelled_loss", "val_loss", "val_accuracy"):
        assert all(value is not None for value in history[key])


def test_threshold_one_is_supervised_only_and_threshold_zero_learns_from_the_pool():
    labelled, pool = toy_data(8, 0), toy_data(40, 2)[0]
    start = toy_classifier()
    runs = {}
    for name, options in {
        "supervised": {"unlabelled_weight": 0.0, "threshold": 0.5},
        "threshold 1": {"threshold": 1.0},
        "threshold 0": {"threshold": 0.0},
    }.items():
        classifier = copy.deepcopy(start)
        history = consistency_train(
            classifier, labelled, pool, epochs=3, batch_size=4, strong=invert, seed=0,
            **options, **QUIET,
        )  # fmt: skip
        runs[name] = (weights(classifier), history)
    # Nothing is confident enough for threshold 1: the pool adds nothing to the loss.
    assert runs["threshold 1"][1]["train_mask_rate"] == [0.0] * 3
    assert runs["threshold 1"][1]["train_unlabelled_loss"] == [0.0] * 3
    assert same_weights(runs["threshold 1"][0], runs["supervised"][0])
    # Same seed, same batches, same augmentations: only the pool's loss tells them apart.
    assert runs["threshold 0"][1]["train_mask_rate"] == [1.0] * 3
    assert not same_weights(runs["threshold 0"][0], runs["supervised"][0])


def test_the_unlabelled_loss_is_on_the_strong_view_against_the_weak_views_guess():
    labelled, pool = toy_data(8, 0), toy_data(20, 2)[0]
    classifier = toy_classifier()
    start = copy.deepcopy(classifier)
    # One epoch of one step (20 pool images ≤ 7 × 8): the metrics are those of the start.
    history = consistency_train(
        classifier, labelled, pool, epochs=1, batch_size=8, threshold=0.0, weak=identity,
        strong=invert, **QUIET,
    )  # fmt: skip
    with torch.no_grad():
        guesses = start(pool).argmax(dim=1)
        on_strong = F.cross_entropy(start(invert(pool)), guesses).item()
        on_weak = F.cross_entropy(start(pool), guesses).item()
        supervised = F.cross_entropy(start(labelled[0]), labelled[1]).item()
    assert abs(on_strong - on_weak) > 1e-3  # far beyond the tolerance below: views differ
    assert history["train_unlabelled_loss"][0] == pytest.approx(on_strong, rel=1e-5)
    assert history["train_supervised_loss"][0] == pytest.approx(supervised, rel=1e-5)
    assert history["train_loss"][0] == pytest.approx(supervised + on_strong, rel=1e-5)


def test_the_strong_view_is_of_each_pool_image_once_per_epoch_and_never_of_labelled_ones():
    labelled, pool = toy_data(8, 0), toy_data(30, 2)[0]
    strong = Recording()
    consistency_train(
        toy_classifier(), labelled, pool, epochs=2, batch_size=2, unlabelled_ratio=4,
        strong=strong, **QUIET,
    )  # fmt: skip
    seen = torch.cat(strong.calls)
    assert [len(call) for call in strong.calls] == [8, 8, 8, 6] * 2  # ceil(30 / (4 × 2)) steps
    # Which pool image each strong view is (-1: none, e.g. a labelled image).
    matches = (seen.flatten(1)[:, None] == pool.flatten(1)[None]).all(dim=2)
    index = torch.where(matches.any(dim=1), matches.float().argmax(dim=1), -1)
    for epoch in index.split(len(pool)):
        assert sorted(epoch.tolist()) == list(range(len(pool)))


def test_batches_have_fixed_sizes_and_see_labelled_images_equally_often():
    images, labels = toy_data(10, 0)
    pool = toy_data(30, 1)[0]
    batches = ConsistencyBatches(images, labels, pool, batch_size=4, pool_batch_size=8)
    torch.manual_seed(0)
    epoch = list(batches)
    assert len(batches) == len(epoch) == 4
    assert [len(batch[0]) for batch in epoch] == [4] * 4
    assert [len(batch[2]) for batch in epoch] == [8, 8, 8, 6]
    drawn = torch.cat([batch[0] for batch in epoch]).flatten(1)
    counts = (drawn[:, None] == images.flatten(1)[None]).all(dim=2).sum(dim=0)
    assert counts.sum() == 16 and counts.max() - counts.min() <= 1


def test_linear_probe_trains_only_the_head():
    labelled, pool = toy_data(8, 0), toy_data(20, 2)[0]
    classifier = toy_classifier()
    encoder, head = weights(classifier.encoder), weights(classifier.head)
    consistency_train(
        classifier, labelled, pool, strategy="linear_probe", epochs=2, batch_size=4,
        threshold=0.0, strong=invert, **QUIET,
    )  # fmt: skip
    assert same_weights(encoder, weights(classifier.encoder))
    assert not same_weights(head, weights(classifier.head))


@pytest.mark.parametrize(
    "options, name",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"unlabelled_ratio": 0}, "unlabelled_ratio"),
        ({"unlabelled_ratio": 2.5}, "unlabelled_ratio"),
        ({"unlabelled_weight": -1.0}, "unlabelled_weight"),
        ({"strong": "heavy"}, "strong"),
        ({"weak": 3}, "weak"),
        ({"strategy": "everything"}, "strategy"),
        ({"monitor": "accuracy"}, "monitor"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"epochs": 0, "strategy": "scratch"}, "epochs"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_arguments_are_named_and_leave_the_classifier_alone(options, name):
    classifier = toy_classifier()
    before = weights(classifier)
    with pytest.raises(MtkitError, match=name):
        consistency_train(
            classifier, toy_data(8, 0), toy_data(20, 2)[0], **{"strong": invert, **options}, **QUIET
        )
    assert same_weights(before, weights(classifier))


def test_a_pool_of_other_shapes_is_refused():
    with pytest.raises(MtkitError, match="unlabelled pool"):
        consistency_train(
            toy_classifier(), toy_data(8, 0), torch.rand(20, 1, 4, 4), strong=invert, **QUIET
        )


def test_the_pool_lifts_test_accuracy_on_few_labelled_digits():
    # 3 labels per class and 400 pool images. Over seeds 0-7 (split, start and training) the
    # pool added 1 to 7 points of test accuracy, 4 for seed 0: 2 points keeps clear of noise.
    split = mtkit.few_labels(mtkit.load_images("digits"), 3, seed=0)
    pool = split.unlabelled.images[:400]
    torch.manual_seed(0)
    start = Classifier(DenseAutoencoder(hidden_sizes=(32,), latent_size=16).encoder, 10)
    accuracy = {}
    for unlabelled_weight in (0.0, 1.0):
        classifier = copy.deepcopy(start)
        consistency_train(
            classifier, split.labelled, pool, unlabelled_weight=unlabelled_weight, epochs=150,
            strong=RandomShiftRotate(1, 20), seed=0, **QUIET,
        )  # fmt: skip
        guesses = predict(classifier, split.test.images).argmax(dim=1)
        accuracy[unlabelled_weight] = (guesses == split.test.labels).float().mean().item()
    assert accuracy[1.0] >= accuracy[0.0] + 0.02, accuracy
