"""A small on-disk cache for results that take minutes to compute, such as a pretrained encoder.

Entries live under `~/.cache/mtkit` (or $MTKIT_CACHE, or an explicit folder) and are named by a
hash of everything that determines them, so a changed setting never returns a stale result; an
entry written by another mtkit version is not used either (the code that built it differed).
They are ordinary mtkit checkpoints: a corrupt or mismatched entry is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from mtkit.core.checkpoint import CheckpointError, _mtkit_version, load_checkpoint, save_checkpoint


def cache_dir(folder: str | os.PathLike | None = None) -> Path:
    """The cache folder: `folder` if given, else $MTKIT_CACHE, else ~/.cache/mtkit."""
    if folder is not None:
        return Path(folder)
    return Path(os.environ.get("MTKIT_CACHE", Path.home() / ".cache" / "mtkit"))


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

    A file that is corrupt, foreign, for another key or from another mtkit version is rebuilt
    (with a warning that says why), not trusted. If `build` fails, nothing is written; nor when
    `keep(metadata)` says False (a run that was stopped early is returned, but not cached as if
    it were the finished one).
    """
    path = Path(path)
    if path.exists():
        expected = {"cache_key": key, "mtkit_version": _mtkit_version()}
        try:
            return (*load_checkpoint(path, expected=expected), True)
        except CheckpointError as error:
            warnings.warn(f"rebuilding the cache entry {path}: {error}", stacklevel=2)
    state_dict, metadata = build()
    metadata = {**metadata, "cache_key": key}
    if keep is None or keep(metadata):
        save_checkpoint(path, state_dict, metadata)
    return state_dict, metadata, False
