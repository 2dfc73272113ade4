"""Atomic file writes: `path` holds either the old file or the whole new one, never a part.

`write_atomically(path, write)` writes into a temp file beside `path`, named
".{path.name}.XXXXXXXX.tmp" (tempfile.mkstemp's 8 random characters), fsyncs it and renames it
over `path`. What each way of failing leaves behind:
- `write` raises, the disk fills up, Ctrl-C: the temp file is removed, `path` is unchanged, and
  the error is raised again; a full disk as DiskFullError, "cannot write ...: no space left on
  device", where torch alone would say "unexpected pos 1024 vs 918".
- the process is killed mid-write: the temp file stays. The next write of the same `path`
  removes it, but only once it is older than STALE_AFTER_S: a younger one may belong to another
  process writing `path` right now, and deleting it would make that write fail.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mtkit.core.utils import MtkitError

# A killed write's temp file is swept once it has not changed for this long. A live write
# touches its file every few milliseconds, so ten minutes is far beyond any live writer's
# pause (a long fsync included) and still sweeps what a killed run left at the next run.
STALE_AFTER_S = 600.0
# torch's serializer reports a failed write as RuntimeError("... unexpected pos ...") and does
# not always keep the OSError behind it; a folder with less than this free is then taken as full.
_NEARLY_FULL_BYTES = 1 << 20
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFullError(MtkitError, OSError):
    """A write failed because the device (or the user's disk quota) is full.

    Also an OSError with errno ENOSPC (or EDQUOT), so code that catches OSError still does.
    """


def write_atomically(path, write: Callable, mode: str = "wb") -> Path:
    """Create `path` by calling write(file) on a temp file beside it, then renaming it over
    `path`; returns the path.

    The bytes are flushed and fsynced before the rename, and the folder after it, so `path`
    holds either the old file or the whole new one, never a part, even if the process is
    killed or the machine loses power. If anything fails, the temp file is removed, `path` is
    left as it was and the error is raised (a full disk as DiskFullError). Parent folders are
    created; stale temp files of earlier, killed writes of `path` are removed (see the module
    docstring).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale_temp_files(path)
        # The temp file lives in the same folder so os.replace is an atomic rename.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        _raise_if_disk_full(error, path)
        raise
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}  # as written
        with os.fdopen(fd, mode, **text) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp_name, path)
    except BaseException as error:  # includes KeyboardInterrupt: never leave a half-written file
        # Ask whether the disk is full before the temp file is removed and frees its space.
        full = _disk_full(error, path.parent)
        try:
            os.unlink(tmp_name)
        except OSError:  # already gone (the rename happened), or the folder refuses: keep going
            pass
        if full:
            raise _disk_full_error(path, *full) from error
        raise
    _fsync_folder(path.parent)
    return path


def _disk_full_error(path: Path, code: int, note: str = "") -> DiskFullError:
    error = DiskFullError(f"cannot write {path}: {_FULL[code]}{note}; any old file is unchanged")
    error.errno = code  # not passed to the constructor, which would reformat the message
    return error


def _raise_if_disk_full(error: BaseException, path: Path) -> None:
    full = _disk_full(error, path.parent)
    if full:
        raise _disk_full_error(path, *full) from error


def _disk_full(error: BaseException, folder: Path) -> tuple[int, str] | None:
    """(ENOSPC or EDQUOT, a note) when `error`, or an error it arose from, says the disk is
    full; or when torch's writer failed (a RuntimeError) and `folder` has (almost) no space
    left. None otherwise."""
    seen, cause = set(), error
    while cause is not None and id(cause) not in seen:  # torch keeps the OSError as __context__
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _FULL:
            return cause.errno, ""
        cause = cause.__cause__ or cause.__context__
    if not isinstance(error, RuntimeError):
        return None
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    return (errno.ENOSPC, f" ({free} bytes free)") if free < _NEARLY_FULL_BYTES else None


def _sweep_stale_temp_files(path: Path) -> None:
    """Remove the temp files that killed writes of `path` left: regular files named exactly
    ".{path.name}.XXXXXXXX.tmp" and unchanged for STALE_AFTER_S. Failures are ignored."""
    # mkstemp's random part is 8 of [a-z0-9_], never a dot: another target's temp cannot match.
    own = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    now = time.time()
    try:
        entries = os.scandir(path.parent)
    except OSError:
        return
    with entries:
        for entry in entries:
            if not own.fullmatch(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_AFTER_S:
                    os.unlink(entry.path)
            except OSError:
                pass


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); some systems cannot open folders: skip."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
