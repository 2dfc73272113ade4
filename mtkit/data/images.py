"""Image datasets: one small container, a checked constructor, and loaders for common sets.

An `ImageDataset` is just tensors plus the class names: images float32 N×C×H×W in [0, 1] and
labels int64 (N,), or labels=None for an unlabelled pool. `load_images("digits")` works offline;
MNIST, Fashion-MNIST, KMNIST and CIFAR-10 come through torchvision and need their files on disk.
Fashion-MNIST also loads offline from Debian's package `dataset-fashion-mnist`: its IDX files are
read directly (image_files.py), with no torchvision and no download.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtkit.core.checks import check_class_labels, check_names, check_number, check_string, shown
from mtkit.core.utils import MtkitError, check_choice
from mtkit.data import image_files


class DatasetUnavailable(MtkitError):
    """A dataset's files are not on disk and could not (or were not allowed to) be downloaded."""


# ---------------------------------------------------------------------------------------------
# Helpers shared with text.py: label checks and index handling work the same for any modality.


def index_array(index, length: int) -> np.ndarray:
    """Turn a slice, list, bool mask, numpy array or tensor of indices into an int64 array.

    Negative indices count from the end, as in Python; out-of-range ones raise IndexError, and
    anything that is not an index (a float, a string) an MtkitError.
    Returns an array of positions in [0, length).
    """
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    if not isinstance(index, (slice, int, np.integer)) or isinstance(index, bool):
        array = np.asarray(index) if isinstance(index, (list, tuple, np.ndarray)) else None
        if array is not None and array.size == 0:
            index = array.astype(np.int64)
        elif array is None or array.dtype.kind not in "iub":
            raise MtkitError(
                "index must be an integer, a slice, a list of integer positions or a bool "
                f"mask, got {shown(index)}"
            )
    # Indexing an arange reuses numpy's own rules for slices, masks and negative indices.
    return np.arange(length)[index].reshape(-1).astype(np.int64)


def explicit_class_names(class_names, num_classes) -> list[str] | None:
    """The class names a caller fixed: `class_names` (distinct, as strings), or "0".."K−1" for
    `num_classes` = K; None when neither was given (then the labels decide)."""
    if num_classes is not None:
        check_number("num_classes", num_classes, integer=True, low=1)
    if class_names is None:
        return None if num_classes is None else [str(i) for i in range(num_classes)]
    names = check_names("class_names", class_names)
    if num_classes is not None and num_classes != len(names):
        raise MtkitError(f"num_classes={num_classes} but {len(names)} class_names were given")
    return names


def as_label_tensor(labels, num_examples: int, class_names: list[str] | None) -> torch.Tensor:
    """Check integer class labels and return them as an int64 tensor of shape (num_examples,).

    Labels must be 1-D integers in [0, num_classes), num_classes = len(class_names). Without
    class names every class 0..max(labels) must occur: labels {3, 7} would otherwise make
    eight classes, six of them empty, and every per-class average would count those.
    """
    known = None if class_names is None else len(class_names)
    array = check_class_labels("labels", labels, length=num_examples, num_classes=known)
    if known is None and array.size:
        present = np.unique(array)
        if len(present) != present[-1] + 1:
            missing = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))
            raise MtkitError(
                f"labels {_listed(present)} leave classes {_listed(missing)} without a single "
                "example: without class_names or num_classes, labels must be 0..K−1. Renumber "
                "them (names, labels = numpy.unique(labels, return_inverse=True)), or pass "
                "num_classes= (or class_names=) when some classes have no examples here"
            )
    return torch.as_tensor(array)


def _listed(values, limit: int = 8) -> str:
    """[3, 7] or [0, 1, 2, …] (at most `limit` values): a list that fits in a message."""
    values = [int(value) for value in values]
    return str(values) if len(values) <= limit else str(values[:limit])[:-1] + ", …]"


def check_label_tensor(labels, num_examples: int, class_names: list[str]) -> None:
    """The invariant of a dataset's labels: None, or int64 (num_examples,) in [0, num_classes)."""
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        raise MtkitError(f"labels must be an int64 tensor or None, got {type(labels).__name__}")
    if labels.shape != (num_examples,):
        raise MtkitError(f"labels must have shape ({num_examples},), got {tuple(labels.shape)}")
    if num_examples and not 0 <= int(labels.min()) <= int(labels.max()) < len(class_names):
        raise MtkitError(
            f"labels must be in [0, {len(class_names)}) to index class_names, "
            f"got values {int(labels.min())}..{int(labels.max())}"
        )


def default_class_names(labels: torch.Tensor | None) -> list[str]:
    """Class names "0", "1", ... up to the largest label; no names for unlabelled data."""
    if labels is None or len(labels) == 0:
        return []
    return [str(i) for i in range(int(labels.max()) + 1)]


def labels_repr(labels: torch.Tensor | None, class_names: list[str]) -> str:
    """The part of a dataset's repr that describes its labels."""
    if labels is None:
        return f"classes={len(class_names)}, unlabelled"
    return f"classes={len(class_names)}"


# ---------------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class ImageDataset:
    """Images with optional class labels, ready to feed a model.

    images: float32 tensor of shape (N, C, H, W) with values in [0, 1].
    labels: int64 tensor of shape (N,), or None for an unlabelled pool.
    class_names: one name per class; label i means class_names[i].
    name: where the data came from ("digits", "mnist", ... or "custom").

    Build one from raw arrays with `ImageDataset.from_tensors`, which checks and converts.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str]
    name: str = "custom"

    def __post_init__(self):
        # Cheap structural checks only; value checks (range, NaN) live in from_tensors.
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4:
            shape = getattr(self.images, "shape", None)
            raise MtkitError(f"images must be a 4-D tensor (N, C, H, W), got shape {shape}")
        if self.images.dtype != torch.float32:
            raise MtkitError(f"images must be float32, got {self.images.dtype}")
        self.class_names = check_names("class_names", self.class_names)
        check_string("name", self.name)
        check_label_tensor(self.labels, len(self.images), self.class_names)

    @classmethod
    def from_tensors(
        cls, images, labels=None, class_names=None, name: str = "custom", *, num_classes=None
    ) -> ImageDataset:
        """Check and convert raw arrays into an ImageDataset.

        images: tensor or numpy array of shape (N, H, W) (a channel dim is added) or (N, C, H, W).
            Integer images (e.g. uint8 0..255) are divided by 255; float images must already be
            finite and in [0, 1].
        labels: optional 1-D integer array of shape (N,) with values in [0, num_classes).
        class_names: optional list of distinct names, one per class.
        num_classes: optional number of classes, named "0", "1", ... (instead of class_names).
            Without either, the labels must be 0..K−1 with every class present (labels {3, 7}
            are refused: renumber them, or say how many classes there are).
        Raises MtkitError saying what was expected and what was got.
        """
        check_string("name", name)
        images = _image_tensor(images)
        class_names = explicit_class_names(class_names, num_classes)
        label_tensor = None
        if labels is not None:
            label_tensor = as_label_tensor(labels, len(images), class_names)
        if class_names is None:
            class_names = default_class_names(label_tensor)
        return cls(images=images, labels=label_tensor, class_names=class_names, name=name)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        """dataset[i] -> (image,) or (image, label), like torch's TensorDataset.

        dataset[slice | list | array | tensor | bool mask] -> a new ImageDataset with those
        examples (and their labels), keeping class names and name.
        """
        if isinstance(index, (int, np.integer)):
            return tuple(t[index] for t in self.tensors)
        positions = torch.as_tensor(index_array(index, len(self)))
        labels = None if self.labels is None else self.labels[positions]
        return dataclasses.replace(self, images=self.images[positions], labels=labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(images,) when unlabelled, else (images, labels): the same attribute TensorDataset has,
        so a training loop can take either."""
        if self.labels is None:
            return (self.images,)
        return (self.images, self.labels)

    def without_labels(self) -> ImageDataset:
        """A copy with labels=None (the image tensor is shared, not copied)."""
        return dataclasses.replace(self, labels=None)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, image_shape={self.image_shape}, "
            f"{labels_repr(self.labels, self.class_names)})"
        )


def _image_tensor(images) -> torch.Tensor:
    """Raw images (tensor or array, N×H×W or N×C×H×W) as a float32 N×C×H×W tensor in [0, 1],
    or an MtkitError saying what is wrong with them."""
    try:
        images = torch.as_tensor(images)
    except (TypeError, ValueError, RuntimeError):
        raise MtkitError(
            "images must be a tensor or array of shape (N, H, W) or (N, C, H, W), got "
            f"{type(images).__name__}"
        ) from None
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise MtkitError(
            f"images must have shape (N, H, W) or (N, C, H, W), got {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise MtkitError("images is empty: a dataset needs at least one example")
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        raise MtkitError(
            f"images of shape {tuple(images.shape)} look channels-last (N, H, W, C); "
            "expected (N, C, H, W): use images.permute(0, 3, 1, 2)"
        )
    return _to_unit_float(images)


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Integer images 0..255 -> float32 / 255; float images are checked to be finite and in
    [0, 1]. Returns float32 of the same shape."""
    if images.dtype == torch.bool or images.is_complex():
        raise MtkitError(f"images must be integer (0..255) or float (0..1), got {images.dtype}")
    if not images.is_floating_point():
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise MtkitError(
                f"integer images must have values in 0..255, got values in {low}..{high}"
            )
        return images.to(torch.float32) / 255.0
    images = images.to(torch.float32)
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        num_nan = int(torch.isnan(images).sum())
        num_inf = int((~finite).sum()) - num_nan
        raise MtkitError(
            f"float images must be finite, got {num_nan} NaN and {num_inf} infinite pixel values"
        )
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise MtkitError(
            f"float images must have values in [0, 1], got values in [{low:g}, {high:g}] "
            "(divide by 255 if they are 0..255 pixel values)"
        )
    return images


# ---------------------------------------------------------------------------------------------
# Loaders.

# name -> (torchvision class name, folder under root where torchvision keeps the files)
_TORCHVISION_SETS = {
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "kmnist": ("KMNIST", "KMNIST/raw"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
}
IMAGE_DATASETS = ("digits", *_TORCHVISION_SETS)


def default_data_root() -> Path:
    """Where downloaded datasets live: $MTKIT_DATA, else ~/.cache/mtkit/data."""
    return Path(os.environ.get("MTKIT_DATA") or Path.home() / ".cache" / "mtkit" / "data")


def load_images(
    name: str, root: str | os.PathLike | None = None, download: bool = False, train: bool = True
) -> ImageDataset:
    """Load a standard image dataset as an ImageDataset.

    name: "digits" (scikit-learn's 1797 8×8 digits, shipped with scikit-learn, no download),
        "mnist", "fashion_mnist" or "kmnist" (1×28×28) or "cifar10" (3×32×32) via torchvision.
    root: folder for the torchvision files; default $MTKIT_DATA or ~/.cache/mtkit/data.
    download: allow torchvision to fetch missing files from the internet.
    train: the training split (True) or the test split (False); "digits" has a single split.

    The files are looked for in order: torchvision's folder under root (e.g.
    root/FashionMNIST/raw), read by torchvision as before; then the system folders in
    image_files.SYSTEM_DATA_FOLDERS (for "fashion_mnist": /usr/share/datasets/fashion-mnist, from
    `sudo apt-get install dataset-fashion-mnist`), whose IDX files are read directly; then
    torchvision again, which downloads them when download=True.
    Raises DatasetUnavailable when the files are missing and cannot be downloaded.
    """
    check_choice("image dataset", name, IMAGE_DATASETS)
    if name == "digits":
        return _load_digits()
    class_name, subfolder = _TORCHVISION_SETS[name]
    root = Path(root) if root is not None else default_data_root()
    system_folder = image_files.system_idx_folder(name, root / subfolder)
    if system_folder is not None:
        images, labels = image_files.read_idx_split(system_folder, train)
        class_names = image_files.IDX_CLASS_NAMES[name]
        return ImageDataset.from_tensors(images, labels, class_names=class_names, name=name)
    # Looked up at call time (not imported by name) so tests can swap in a fake class.
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, class_name)
    try:
        raw = dataset_class(root=str(root), train=train, download=download)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ...
        if not download and not isinstance(error, RuntimeError):
            raise
        message = _unavailable_message(name, root / subfolder, download, error)
        raise DatasetUnavailable(message) from error

    images = torch.as_tensor(np.asarray(raw.data))
    if images.ndim == 4:  # CIFAR keeps (N, H, W, C) uint8; we want (N, C, H, W)
        images = images.permute(0, 3, 1, 2)
    return ImageDataset.from_tensors(
        images, np.asarray(raw.targets), class_names=list(raw.classes), name=name
    )


def _load_digits() -> ImageDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16 (counts of set pixels in 4×4 blocks), so /16 maps them to [0, 1].
    images = digits.images.astype(np.float32) / 16.0
    class_names = [str(i) for i in range(10)]
    return ImageDataset.from_tensors(images, digits.target, class_names, name="digits")


def _unavailable_message(name: str, folder: Path, download: bool, error: Exception) -> str:
    what = "could not be downloaded" if download else "are not on disk"
    return (
        f"The {name!r} files {what} ({type(error).__name__}: {error}).\n"
        f"They are expected in: {folder}\n"
        f"To get them: run load_images({name!r}, download=True) with internet access, "
        "or copy the files into that folder (set MTKIT_DATA or root= to use another folder).\n"
        f"{image_files.system_hint(name)}"
        'load_images("digits") works offline with no download.'
    )
