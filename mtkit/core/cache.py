"""A small on-disk cache for results that take minutes to compute, such as a pretrained encoder.

Entries live under `~/.cache/mtkit` (or $MTKIT_CACHE, or an explicit folder) and are named by a
hash of everything that determines them, so a changed setting never returns a stale result; an
entry written by another mtkit version is not used either (the code that built it differed).
They are ordinary mtkit checkpoints: a corrupt or mismatched entry is rebuilt, never trusted.
A cache never costs a result: when an entry cannot be written (a read-only folder, a file where
the folder should be, a full disk), load_or_build warns and returns what it built all the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

from mtkit.core.checkpoint import CheckpointError, _mtkit_version, load_checkpoint, save_checkpoint
from mtkit.core.files import check_name
from mtkit.core.utils import MtkitError


def cache_dir(folder: str | os.PathLike | None = None) -> Path:
    """The cache folder: `folder` if given, else $MTKIT_CACHE (when set and not empty), else
    ~/.cache/mtkit; a leading "~" is expanded.

    Nothing is created or checked here, so a bad $MTKIT_CACHE (a file, a read-only place) never
    fails the caller: load_or_build creates the folder when it writes an entry, and only warns
    if it cannot.
    """
    if folder is None:
        folder = os.environ.get("MTKIT_CACHE") or "~/.cache/mtkit"  # "" would mean the cwd
    try:
        return Path(folder).expanduser()
    except RuntimeError:  # no home folder to expand "~" to (e.g. HOME unset in a container)
        return Path(tempfile.gettempdir()) / "mtkit-cache"


def cache_path(*parts: str, folder: str | os.PathLike | None = None) -> Path:
    """The path of a cache entry: cache_dir(folder) / "-".join(parts) + ".pt", e.g.
    cache_path("text-encoder", key) -> ~/.cache/mtkit/text-encoder-<key>.pt.

    The name is checked with mtkit.core.files.check_name (a model name such as "org/model"
    would otherwise become a folder, and "../x" a file outside the cache): MtkitError if it
    cannot be one plain file name.
    """
    # No resolving of symlinks here: a cache folder that cannot be searched must not fail the
    # caller (see cache_dir); a plain name cannot leave its folder by itself.
    name = "-".join(check_name("a cache entry's name (each part)", p) for p in parts)
    return cache_dir(folder) / check_name("a cache entry's name", name + ".pt")


def cache_key(**parts) -> str:
    """A short stable hash of JSON-serialisable `parts` (configs, data fingerprints, versions)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(texts) -> str:
    """A hash of a list of strings, so a cache entry is tied to the exact data it came from."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def load_or_build(path: Path, key: str, build, keep=None):
    """Return (state_dict, metadata, True) from `path` when it holds the entry for `key`;
    otherwise call `build() -> (state_dict, metadata)`, save it atomically at `path`, and return
    (state_dict, metadata, False).

    A file that is corrupt, unreadable, foreign, for another key or from another mtkit version
    is rebuilt (with a warning that says why), not trusted. If `build` fails, nothing is
    written; nor when `keep(metadata)` says False (a run that was stopped early is returned,
    but not cached as if it were the finished one). If the entry cannot be written (its folder
    cannot be created or written, the disk is full, ...), a warning says why and the built
    result is returned all the same: nothing is left behind but an old entry, if any.
    """
    path = Path(path)
    check_name("a cache key", key)  # it is part of the entry's file name (see cache_path)
    check_name("a cache entry's name", path.name)
    try:
        exists = path.exists()
    except OSError:  # e.g. a folder on the way that may not be searched
        exists = False
    if exists:
        expected = {"cache_key": key, "mtkit_version": _mtkit_version()}
        try:
            return (*load_checkpoint(path, expected=expected), True)
        except (CheckpointError, OSError) as error:
            warnings.warn(f"rebuilding the cache entry {path}: {_reason(error)}", stacklevel=2)
    state_dict, metadata = build()
    metadata = {**metadata, "cache_key": key}
    if keep is None or keep(metadata):
        try:
            save_checkpoint(path, state_dict, metadata)
        except Exception as error:  # a cache saves time; it must never cost the result
            warnings.warn(
                f"could not cache {path} ({_reason(error)}); the result is returned but not cached",
                stacklevel=2,
            )
    return state_dict, metadata, False


def _reason(error: Exception) -> str:
    """Why a cache entry could not be read or written, in a few words."""
    if isinstance(error, FileExistsError):  # mkdir(exist_ok=True) met a file or dangling link
        return f"{error.filename} exists and is not a folder"
    if isinstance(error, OSError) and error.errno is not None:
        because = error.strerror or os.strerror(error.errno)
        return f"{because}: {error.filename}" if error.filename else because
    if isinstance(error, MtkitError):
        return str(error)
    first_line = (str(error).strip().splitlines() or [""])[0][:120]
    return f"{type(error).__name__}: {first_line}"
