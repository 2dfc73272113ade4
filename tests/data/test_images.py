import re
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets

from mtkit.core.utils import MtkitError
from mtkit.data import DatasetUnavailable, ImageDataset, load_images


def small_dataset(n=6):
    images = torch.rand(n, 1, 4, 4)
    labels = torch.arange(n) % 3
    return ImageDataset.from_tensors(images, labels, class_names=["a", "b", "c"], name="toy")


def test_from_tensors_scales_uint8_and_adds_channel_dim():
    images = np.full((2, 5, 5), 255, dtype=np.uint8)
    images[1] = 51
    dataset = ImageDataset.from_tensors(images, np.array([0, 1]))
    assert dataset.images.dtype == torch.float32
    assert dataset.images.shape == (2, 1, 5, 5)
    assert dataset.images[0].max() == 1.0
    assert torch.allclose(dataset.images[1], torch.full((1, 5, 5), 0.2))
    assert dataset.labels.dtype == torch.int64
    assert dataset.class_names == ["0", "1"]


def test_from_tensors_keeps_float_images_and_unlabelled():
    images = torch.rand(3, 3, 2, 2, dtype=torch.float64)
    dataset = ImageDataset.from_tensors(images)
    assert dataset.labels is None
    assert dataset.tensors == (dataset.images,)
    assert torch.allclose(dataset.images, images.float())


def test_nan_pixels_are_counted_in_the_error():
    images = torch.rand(2, 1, 3, 3)
    images[0, 0, 0, 0] = float("nan")
    images[1, 0, 2, 2] = float("nan")
    with pytest.raises(MtkitError, match="2 NaN"):
        ImageDataset.from_tensors(images)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(2, 1, 3, 3) * 255, r"\[0, 1\]"),
        (torch.full((2, 3, 3), 300, dtype=torch.int64), "0..255"),
        (torch.zeros(0, 1, 3, 3), "empty"),
        (torch.rand(2, 3), r"\(N, H, W\)"),
        (torch.rand(2, 8, 8, 3), "channels-last"),
    ],
)
def test_bad_images_raise_clear_errors(images, message):
    with pytest.raises(MtkitError, match=message):
        ImageDataset.from_tensors(images)


@pytest.mark.parametrize(
    "labels, class_names, message",
    [
        (np.array([0, 1]), None, "expected 3 labels"),
        (np.array([0.0, 1.0, 1.0]), None, "integers"),
        (np.array([[0, 1, 1]]), None, "1-D"),
        (np.array([0, 1, 2]), ["a", "b"], r"\[0, 2\)"),
        (np.array([0, -1, 1]), None, ">= 0"),
    ],
)
def test_bad_labels_raise_clear_errors(labels, class_names, message):
    with pytest.raises(MtkitError, match=message):
        ImageDataset.from_tensors(torch.rand(3, 1, 2, 2), labels, class_names)


def test_indexing_returns_subsets_with_their_labels():
    dataset = small_dataset()
    for index in (slice(1, 4), [1, 2, 3], np.array([1, 2, 3]), torch.tensor([1, 2, 3])):
        subset = dataset[index]
        assert isinstance(subset, ImageDataset)
        assert torch.equal(subset.images, dataset.images[1:4])
        assert subset.labels.tolist() == [1, 2, 0]
        assert subset.class_names == ["a", "b", "c"] and subset.name == "toy"
    mask = dataset.labels == 2
    assert dataset[mask].labels.tolist() == [2, 2]
    image, label = dataset[4]
    assert torch.equal(image, dataset.images[4]) and int(label) == 1


def test_properties_and_without_labels():
    dataset = small_dataset()
    assert len(dataset) == 6
    assert dataset.num_classes == 3
    assert dataset.image_shape == (1, 4, 4)
    assert len(dataset.tensors) == 2
    pool = dataset.without_labels()
    assert pool.labels is None and dataset.labels is not None
    assert pool.tensors == (dataset.images,)
    assert pool[[0, 1]].labels is None
    assert "toy" in repr(dataset) and "n=6" in repr(dataset) and "unlabelled" in repr(pool)


def test_load_digits_offline():
    digits = load_images("digits")
    assert len(digits) == 1797
    assert digits.image_shape == (1, 8, 8)
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.name == "digits"
    assert 0.0 <= digits.images.min() and digits.images.max() == 1.0
    assert torch.equal(torch.unique(digits.labels), torch.arange(10))


def test_unknown_name_lists_valid_names():
    with pytest.raises(MtkitError, match="digits.*mnist|mnist.*digits"):
        load_images("imagenet")


def test_missing_files_without_download_explain_what_to_do(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_images("mnist", root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert 'load_images("mnist", download=True)' in message.replace("'", '"')
    assert 'load_images("digits")' in message


def test_data_root_comes_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MTKIT_DATA", str(tmp_path))
    with pytest.raises(DatasetUnavailable, match=re.escape(str(tmp_path))):
        load_images("cifar10")


class FailingDownload:
    def __init__(self, root, train=True, download=False):
        if download:
            raise urllib.error.URLError("no network in tests")
        raise RuntimeError("Dataset not found. You can use download=True to download it")


def test_failed_download_raises_dataset_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FailingDownload)
    with pytest.raises(DatasetUnavailable, match="could not be downloaded") as info:
        load_images("fashion_mnist", root=tmp_path, download=True)
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert 'load_images("digits")' in str(info.value)


class FakeCifar:
    classes = ["cat", "dog"]

    def __init__(self, root, train=True, download=False):
        rng = np.random.default_rng(0)
        self.data = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)  # HWC, like CIFAR
        self.targets = [0, 1, 1, 0] if train else [1, 1, 1, 1]


def test_torchvision_arrays_are_converted_to_nchw(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar)
    dataset = load_images("cifar10", root=tmp_path)
    raw = FakeCifar(tmp_path)
    assert dataset.image_shape == (3, 32, 32)
    assert dataset.class_names == ["cat", "dog"] and dataset.name == "cifar10"
    assert dataset.labels.tolist() == [0, 1, 1, 0]
    expected = torch.from_numpy(raw.data).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(dataset.images, expected)
    assert load_images("cifar10", root=tmp_path, train=False).labels.tolist() == [1, 1, 1, 1]


def test_constructor_keeps_labels_consistent_with_class_names():
    with pytest.raises(MtkitError, match=r"\[0, 2\)"):
        ImageDataset(torch.rand(2, 1, 2, 2), torch.tensor([0, 5]), ["a", "b"])
    with pytest.raises(MtkitError, match="float32"):
        ImageDataset(torch.rand(2, 1, 2, 2, dtype=torch.float64), None, [])
