"""MNIST-style image sets read straight from IDX files, with no torchvision.

MNIST, Fashion-MNIST and KMNIST ship as four IDX files: train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each plain or
gzipped (.gz). `read_idx` reads one such file. `system_idx_folder` finds a set installed by the
system's package manager (Debian's `dataset-fashion-mnist` puts Fashion-MNIST in
/usr/share/datasets/fashion-mnist), so `load_images` works offline without a download.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from mtkit.core.utils import MtkitError

# Folders where system packages install a dataset's IDX files, searched in order. Tests
# monkeypatch this to point at their own folders.
SYSTEM_DATA_FOLDERS: dict[str, tuple[Path, ...]] = {
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
# The Debian package that fills a dataset's system folder, for the missing-data message.
SYSTEM_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}

# The same class names torchvision's MNIST, FashionMNIST and KMNIST classes give, so a set
# loads the same whichever way its files are found.
# fmt: off
IDX_CLASS_NAMES = {
    "mnist": ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
              "7 - seven", "8 - eight", "9 - nine"],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}
# fmt: on
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# IDX type code (third magic byte) -> numpy dtype; all multi-byte types are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (plain, or gzipped: recognised by its content, not its name).

    Layout: magic bytes 0, 0, type code (0x08 = uint8), ndim; then ndim big-endian int32 sizes;
    then the values, row-major. Returns a writable array in native byte order with those sizes.
    Raises MtkitError naming the file when it is not IDX, is truncated or has bytes left over.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise MtkitError(f"{path}: broken gzip file ({error})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise MtkitError(
            f"{path}: not an IDX file: magic bytes {data[:4].hex(' ') or 'missing'}, "
            "expected 00 00 <type code: 08 for uint8> <number of dims>"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MtkitError(f"{path}: truncated IDX file: the header of {ndim} sizes is cut off")
    shape = tuple(int(size) for size in np.frombuffer(data, ">i4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        what = "truncated IDX file" if len(data) - header < expected else "IDX file too long"
        raise MtkitError(
            f"{path}: {what}: shape {shape} needs {expected} bytes of values, "
            f"found {len(data) - header}"
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _idx_path(folder: Path, stem: str) -> Path | None:
    """The file `stem` or `stem.gz` in folder, or None when neither exists."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def system_idx_folder(name: str, torchvision_folder: Path) -> Path | None:
    """The system folder to read `name`'s IDX files from, or None to leave it to torchvision.

    None when torchvision's own folder has the four (unpacked) files, as torchvision wants
    them, or when no folder in SYSTEM_DATA_FOLDERS[name] has all four, plain or gzipped.
    """
    if name not in IDX_CLASS_NAMES:
        return None
    if all((torchvision_folder / stem).is_file() for stem in IDX_FILES):
        return None
    for folder in SYSTEM_DATA_FOLDERS.get(name, ()):
        if all(_idx_path(Path(folder), stem) for stem in IDX_FILES):
            return Path(folder)
    return None


def read_idx_split(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) and labels (N,) of the train (True) or t10k test (False) split."""
    prefix = "train" if train else "t10k"
    images = read_idx(_idx_path(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_path(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise MtkitError(
            f"{folder}: the {prefix} files do not match: images of shape {images.shape} "
            f"(expected (N, H, W)) and labels of shape {labels.shape} (expected (N,))"
        )
    return images, labels


def system_hint(name: str) -> str:
    """A line for the missing-data message: the system folders searched and the Debian package
    that fills them ("" when `name` has none)."""
    folders = ", ".join(str(folder) for folder in SYSTEM_DATA_FOLDERS.get(name, ()))
    if not folders:
        return ""
    package = SYSTEM_PACKAGES.get(name)
    if not package:
        return f"Also looked in {folders}.\n"
    return (
        f"Also looked in {folders}, where Debian's package puts them; install it (no download "
        f"from here): sudo apt-get install {package}\n"
    )
