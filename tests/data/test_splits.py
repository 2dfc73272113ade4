import numpy as np
import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.data import FewLabelSplit, ImageDataset, TextDataset, few_labels

PARTS = ("labelled", "validation", "unlabelled", "test")


def image_dataset(per_class=(40, 30, 20)):
    labels = np.repeat(np.arange(len(per_class)), per_class)
    images = torch.rand(len(labels), 1, 2, 2, generator=torch.Generator().manual_seed(0))
    return ImageDataset.from_tensors(images, labels, class_names=["a", "b", "c"])


def text_dataset():
    labels = [i % 2 for i in range(60)]
    return TextDataset.from_lists([f"text {i}" for i in range(60)], labels, ["no", "yes"])


def indices_of(split: FewLabelSplit) -> dict[str, np.ndarray]:
    return {part: getattr(split, f"{part}_indices") for part in PARTS}


def test_same_seeds_give_identical_splits():
    dataset = image_dataset()
    first, second = (
        indices_of(few_labels(dataset, 5, seed=3)),
        indices_of(few_labels(dataset, 5, seed=3)),
    )
    for part in PARTS:
        assert np.array_equal(first[part], second[part])


def test_a_new_seed_changes_the_labels_but_not_the_test_set():
    dataset = image_dataset()
    a, b = few_labels(dataset, 5, seed=0), few_labels(dataset, 5, seed=1)
    assert not np.array_equal(a.labelled_indices, b.labelled_indices)
    assert np.array_equal(a.test_indices, b.test_indices)
    c = few_labels(dataset, 5, seed=0, test_seed=1)
    assert not np.array_equal(a.test_indices, c.test_indices)


def test_parts_are_disjoint_and_cover_every_example_once():
    dataset = image_dataset()
    split = few_labels(dataset, 4, validation_per_class=3, test_size=0.2)
    everything = np.concatenate(list(indices_of(split).values()))
    assert np.array_equal(np.sort(everything), np.arange(len(dataset)))
    for part in PARTS:
        assert len(getattr(split, part)) == len(getattr(split, f"{part}_indices"))


def test_counts_are_exact_per_class():
    dataset = image_dataset()
    split = few_labels(dataset, 4, validation_per_class=2, test_size=0.25)
    assert torch.bincount(split.labelled.labels).tolist() == [4, 4, 4]
    assert torch.bincount(split.validation.labels).tolist() == [2, 2, 2]
    assert torch.bincount(split.test.labels).tolist() == [
        10,
        8,
        5,
    ]  # 25% of 40, 30, 20; 22.5 rounds up
    assert len(split.test) == 23
    assert few_labels(dataset, 1).validation_per_class == 1  # defaults to labels_per_class


def test_test_size_can_be_a_count():
    split = few_labels(image_dataset(), 2, test_size=9)
    assert torch.bincount(split.test.labels).tolist() == [4, 3, 2]


def test_pool_labels_are_hidden_but_kept_for_evaluation():
    dataset = image_dataset()
    split = few_labels(dataset, 5)
    assert split.unlabelled.labels is None
    true_labels = split.unlabelled_labels_for_evaluation()
    assert torch.equal(true_labels, dataset.labels[torch.as_tensor(split.unlabelled_indices)])
    assert f"unlabelled={len(split.unlabelled)}" in repr(split)
    assert f"unlabelled: {len(split.unlabelled):>7}" in split.summary()


def test_too_many_labels_names_the_class_and_counts():
    dataset = image_dataset(per_class=(40, 30, 8))
    with pytest.raises(MtkitError, match=r"'c' has 6 examples.*8 labelled \+ 8 validation"):
        few_labels(dataset, 8, test_size=0.25)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels_per_class": 0}, "labels_per_class"),
        ({"test_size": 1.5}, "test_size"),
        ({"test_size": 0}, "test_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(MtkitError, match=message):
        few_labels(image_dataset(), **kwargs)


def test_unlabelled_dataset_is_rejected():
    with pytest.raises(MtkitError, match="labelled dataset"):
        few_labels(image_dataset().without_labels())


def test_works_on_text_datasets():
    dataset = text_dataset()
    split = few_labels(dataset, 3, test_size=0.5)
    assert isinstance(split.labelled, TextDataset) and isinstance(split.unlabelled, TextDataset)
    assert torch.bincount(split.labelled.labels).tolist() == [3, 3]
    assert split.unlabelled.labels is None
    assert split.labelled.texts == [dataset.texts[i] for i in split.labelled_indices]


def test_fixed_test_indices_are_the_test_set_for_every_seed():
    from mtkit.data import load_images

    digits = load_images("digits")
    official_test = np.arange(1500, 1797)  # e.g. a dataset's own test images, appended
    for seed in (0, 1):
        split = few_labels(digits, 5, seed=seed, test_indices=official_test)
        assert np.array_equal(split.test_indices, official_test)
        others = np.concatenate(
            [split.labelled_indices, split.validation_indices, split.unlabelled_indices]
        )
        assert not set(others) & set(official_test)
        assert len(others) + len(official_test) == len(digits)
