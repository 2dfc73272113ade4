import gzip
import re
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from mtkit.core.utils import MtkitError
from mtkit.data import DatasetUnavailable, ImageDataset, image_files, load_images
from mtkit.data.image_files import read_idx

REAL_SYSTEM_FOLDERS = dict(image_files.SYSTEM_DATA_FOLDERS)
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
REAL_MNIST_CLASSES = list(torchvision.datasets.MNIST.classes)


@pytest.fixture(autouse=True)
def no_system_folders(monkeypatch):
    """Tests never read the machine's installed datasets unless they ask for them."""
    monkeypatch.setattr(image_files, "SYSTEM_DATA_FOLDERS", {})


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


# ---------------------------------------------------------------------------------------------
# IDX files: the reader, and loading MNIST-style sets from a system folder.


def write_idx(path, array, compress=False):
    """Write `array` as an IDX file (uint8 code 0x08, or big-endian int32 code 0x0C)."""
    array = np.asarray(array)
    code, dtype = (0x08, ">u1") if array.dtype == np.uint8 else (0x0C, ">i4")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_idx_set(folder, n_train=6, n_test=4, compress=True, seed=0):
    """The four MNIST-style files of a tiny 5×5 set; returns {split: (images, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 5, 5), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        written[prefix] = (images, labels)
    return written


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    read = read_idx(write_idx(tmp_path / "images.idx", images, compress))
    assert read.dtype == np.uint8 and read.shape == (3, 4, 5)
    assert np.array_equal(read, images) and read.flags.writeable
    counts = np.array([1, -2, 70000], dtype=np.int32)
    read = read_idx(write_idx(tmp_path / "counts.idx", counts, compress))
    assert read.dtype == np.int32 and read.tolist() == [1, -2, 70000]


def test_read_idx_bad_magic_names_file_and_problem(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(MtkitError, match=r"not-idx: not an IDX file: magic bytes 89 50 4e 47"):
        read_idx(path)
    path.write_bytes(b"")
    with pytest.raises(MtkitError, match="not an IDX file: magic bytes missing"):
        read_idx(path)


def test_read_idx_truncated_files_give_clear_errors(tmp_path):
    good = write_idx(tmp_path / "good", np.zeros((3, 4, 4), dtype=np.uint8)).read_bytes()
    path = tmp_path / "short"
    path.write_bytes(good[:-5])
    with pytest.raises(MtkitError, match=r"short: truncated IDX file: .*needs 48 bytes.*found 43"):
        read_idx(path)
    path.write_bytes(good[:9])  # the magic and part of the three sizes
    with pytest.raises(MtkitError, match="short: truncated IDX file: the header"):
        read_idx(path)
    path.write_bytes(good + b"extra")
    with pytest.raises(MtkitError, match="IDX file too long"):
        read_idx(path)
    path.write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(MtkitError, match="short: broken gzip file"):
        read_idx(path)


class ForbiddenTorchvision:
    def __init__(self, *args, **kwargs):
        raise AssertionError("torchvision must not be used when a system folder has the files")


def test_fashion_mnist_loads_from_a_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "system"
    written = write_idx_set(system, compress=True)
    monkeypatch.setattr(image_files, "SYSTEM_DATA_FOLDERS", {"fashion_mnist": (system,)})
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", ForbiddenTorchvision)
    for train, prefix in ((True, "train"), (False, "t10k")):
        dataset = load_images("fashion_mnist", root=tmp_path / "root", train=train)
        images, labels = written[prefix]
        assert dataset.name == "fashion_mnist" and dataset.image_shape == (1, 5, 5)
        assert dataset.class_names[0] == "T-shirt/top" and dataset.num_classes == 10
        assert dataset.labels.tolist() == labels.tolist()
        assert torch.allclose(dataset.images[:, 0], torch.from_numpy(images).float() / 255)


def test_mnist_uses_the_same_lookup_with_plain_files(tmp_path, monkeypatch):
    first, second = tmp_path / "empty", tmp_path / "second"
    first.mkdir()
    write_idx_set(second, n_train=3, compress=False)
    monkeypatch.setattr(image_files, "SYSTEM_DATA_FOLDERS", {"mnist": (first, second)})
    monkeypatch.setattr(torchvision.datasets, "MNIST", ForbiddenTorchvision)
    dataset = load_images("mnist", root=tmp_path / "root")
    assert len(dataset) == 3 and dataset.class_names == REAL_MNIST_CLASSES


class FakeFashion:
    classes = ["a", "b"]

    def __init__(self, root, train=True, download=False):
        self.data = torch.zeros(2, 28, 28, dtype=torch.uint8)
        self.targets = torch.tensor([1, 0])


def test_torchvision_folder_is_preferred_when_it_has_the_files(tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_idx_set(system)
    monkeypatch.setattr(image_files, "SYSTEM_DATA_FOLDERS", {"fashion_mnist": (system,)})
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashion)
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in image_files.IDX_FILES:  # torchvision keeps them unpacked
        (raw / stem).write_bytes(b"")
    dataset = load_images("fashion_mnist", root=tmp_path / "root")
    assert dataset.class_names == ["a", "b"] and dataset.labels.tolist() == [1, 0]


def test_mismatched_idx_files_are_reported(tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_idx_set(system, compress=False)
    write_idx(system / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    monkeypatch.setattr(image_files, "SYSTEM_DATA_FOLDERS", {"fashion_mnist": (system,)})
    with pytest.raises(MtkitError, match=r"system: the train files do not match"):
        load_images("fashion_mnist", root=tmp_path / "root")


def test_missing_everywhere_names_both_ways_to_get_the_data(tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_idx_set(system)
    (system / "t10k-labels-idx1-ubyte.gz").unlink()  # an incomplete set is not used
    monkeypatch.setattr(image_files, "SYSTEM_DATA_FOLDERS", {"fashion_mnist": (system,)})
    with pytest.raises(DatasetUnavailable) as info:
        load_images("fashion_mnist", root=tmp_path / "root")
    message = str(info.value).replace("'", '"')
    assert str(tmp_path / "root" / "FashionMNIST" / "raw") in message
    assert str(system) in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert 'load_images("fashion_mnist", download=True)' in message
    assert 'load_images("digits") works offline' in message


def test_kmnist_is_a_torchvision_set_without_a_debian_package(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_images("kmnist", root=tmp_path)
    assert str(tmp_path / "KMNIST" / "raw") in str(info.value)
    assert "apt-get" not in str(info.value)


@pytest.mark.skipif(
    not DEBIAN_FOLDER.is_dir(), reason="Debian's dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(image_files, "SYSTEM_DATA_FOLDERS", REAL_SYSTEM_FOLDERS)
    train = load_images("fashion_mnist", root=tmp_path)
    test = load_images("fashion_mnist", root=tmp_path, train=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.num_classes == test.num_classes == 10
    assert train.class_names == torchvision.datasets.FashionMNIST.classes
    assert torch.equal(torch.unique(test.labels), torch.arange(10))
