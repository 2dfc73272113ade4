"""Atomic writes: a failed write (a full disk included) leaves the old file and no temp file, says
"no space left on device" when that is the cause, and stale temp files of killed writes go."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections import namedtuple

import pytest

from mtkit.core import atomic, checkpoint
from mtkit.core.atomic import STALE_AFTER_S, DiskFullError, write_atomically
from mtkit.core.utils import MtkitError


def _disk_full(file):
    file.write(b"half of it")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_reported_as_such_and_the_old_file_survives(tmp_path):
    path = tmp_path / "results.json"
    write_atomically(path, lambda file: file.write(b"old"))
    with pytest.raises(DiskFullError, match=r"results\.json: no space left on device") as caught:
        write_atomically(path, _disk_full)
    # Still an OSError with the errno, so code that catches OSError keeps working.
    assert isinstance(caught.value, OSError) and isinstance(caught.value, MtkitError)
    assert caught.value.errno == errno.ENOSPC
    assert isinstance(caught.value.__cause__, OSError)  # the original is kept
    assert os.listdir(tmp_path) == ["results.json"] and path.read_bytes() == b"old"


def test_a_full_disk_while_creating_the_temp_file_is_reported_too(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", no_space)
    with pytest.raises(DiskFullError, match="no space left on device"):
        write_atomically(tmp_path / "a.txt", lambda file: file.write("x"), mode="w")


@pytest.mark.parametrize("failure", [ValueError("bad value"), PermissionError(13, "denied")])
def test_other_errors_are_raised_unchanged_and_leave_no_temp_file(tmp_path, failure):
    def broken(file):
        file.write(b"part")
        raise failure

    with pytest.raises(type(failure)) as caught:
        write_atomically(tmp_path / "a.bin", broken)
    assert caught.value is failure
    assert os.listdir(tmp_path) == []


def _save_that_fails_like_torch(free_bytes, monkeypatch):
    """torch.save, as when its C++ writer hits a full disk without keeping the OSError: it
    writes part of the file, then raises RuntimeError; the folder reports `free_bytes` free."""

    def save(obj, file, *args, **kwargs):
        file.write(b"PK" + bytes(1000))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1024 vs 918")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9, free_bytes))


def test_torch_failing_on_a_full_disk_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    import torch

    path = checkpoint.save_checkpoint(tmp_path / "model.pt", {"w": torch.zeros(2)})
    _save_that_fails_like_torch(0, monkeypatch)
    with pytest.raises(DiskFullError, match=r"model\.pt: no space left on device \(0 bytes free"):
        checkpoint.save_checkpoint(path, {"w": torch.ones(2)})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.pt"]
    assert torch.equal(checkpoint.load_checkpoint(path)[0]["w"], torch.zeros(2))


def test_torch_failing_with_space_left_is_not_called_a_full_disk(tmp_path, monkeypatch):
    import torch

    _save_that_fails_like_torch(10**9, monkeypatch)
    with pytest.raises(RuntimeError, match="unexpected pos") as caught:
        checkpoint.save_checkpoint(tmp_path / "model.pt", {"w": torch.ones(2)})
    assert not isinstance(caught.value, DiskFullError)
    assert os.listdir(tmp_path) == []


def _touch(path, age_s: float):
    path.write_bytes(b"left by a killed write")
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def test_stale_temp_files_of_the_same_target_are_swept(tmp_path):
    old = STALE_AFTER_S + 60
    stale = _touch(tmp_path / ".model.pt.k3x_9a0z.tmp", old)
    fresh = _touch(tmp_path / ".model.pt.fr35h000.tmp", 5)  # maybe a live concurrent write
    others = [
        _touch(tmp_path / ".other.pt.k3x_9a0z.tmp", old),  # another target's temp
        _touch(tmp_path / ".model.pt.v2.k3x_9a0z.tmp", old),  # target "model.pt.v2"
        _touch(tmp_path / ".model.pt.k3x_9a0z.tmp.bak", old),  # not the kit's pattern
        _touch(tmp_path / "model.pt.k3x_9a0z.tmp", old),  # no leading dot
    ]
    write_atomically(tmp_path / "model.pt", lambda file: file.write(b"new"))
    assert not stale.exists()
    assert fresh.exists() and all(path.exists() for path in others)
    assert (tmp_path / "model.pt").read_bytes() == b"new"


def test_a_failed_write_still_sweeps_and_leaves_only_what_it_found(tmp_path):
    _touch(tmp_path / ".a.bin.abcdefgh.tmp", STALE_AFTER_S + 60)
    with pytest.raises(DiskFullError):
        write_atomically(tmp_path / "a.bin", _disk_full)
    assert os.listdir(tmp_path) == []


def test_checkpoint_still_exports_the_same_write_atomically():
    assert checkpoint.write_atomically is write_atomically
    assert checkpoint.DiskFullError is DiskFullError
