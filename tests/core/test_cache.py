import errno
import os

import pytest
import torch

from mtkit.core import cache
from mtkit.core.cache import cache_dir, cache_key, fingerprint, load_or_build
from mtkit.core.utils import MtkitError


def _builder(calls):
    def build():
        calls.append(1)
        return {"weight": torch.arange(3.0)}, {"note": "built"}

    return build


def test_keys_depend_on_every_part():
    assert cache_key(a=1, b="x") == cache_key(b="x", a=1)
    assert cache_key(a=1) != cache_key(a=2)
    assert fingerprint(["a", "b"]) != fingerprint(["ab"])


def test_second_call_reads_the_cache(tmp_path):
    calls = []
    path = tmp_path / "entry.pt"
    first = load_or_build(path, "k1", _builder(calls))
    second = load_or_build(path, "k1", _builder(calls))
    assert calls == [1]
    assert first[2] is False and second[2] is True
    assert torch.equal(second[0]["weight"], torch.arange(3.0))
    assert second[1]["note"] == "built"


def test_corrupt_or_mismatched_entries_are_rebuilt(tmp_path, recwarn):
    calls = []
    path = tmp_path / "entry.pt"
    load_or_build(path, "k1", _builder(calls))
    path.write_bytes(path.read_bytes()[:50])  # truncated
    assert load_or_build(path, "k1", _builder(calls))[2] is False
    assert load_or_build(path, "other-key", _builder(calls))[2] is False
    assert calls == [1, 1, 1]
    assert any("rebuilding" in str(w.message) for w in recwarn)


def test_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MTKIT_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    assert cache_dir(tmp_path / "x") == tmp_path / "x"


def test_an_entry_of_another_mtkit_version_is_rebuilt(tmp_path, monkeypatch):
    calls = []
    load_or_build(tmp_path / "entry.pt", "k1", _builder(calls))
    monkeypatch.setattr(cache, "_mtkit_version", lambda: "99.0")
    with pytest.warns(UserWarning, match=r"(?s)entry\.pt.*mtkit_version: expected '99.0'"):
        assert load_or_build(tmp_path / "entry.pt", "k1", _builder(calls))[2] is False
    assert calls == [1, 1]


def test_a_failed_build_writes_nothing_and_a_later_one_succeeds(tmp_path):
    def broken():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        load_or_build(tmp_path / "entry.pt", "k1", broken)
    assert list(tmp_path.iterdir()) == []
    assert load_or_build(tmp_path / "entry.pt", "k1", _builder([]))[2] is False


# A cache never costs a result: whatever stops an entry from being written is a warning.


def _built_anyway(path, recwarn_match):
    """load_or_build at `path` warns (matching `recwarn_match`) and returns the built result."""
    calls = []
    with pytest.warns(UserWarning, match=recwarn_match) as caught:
        state, metadata, from_cache = load_or_build(path, "k1", _builder(calls))
    assert calls == [1] and from_cache is False and metadata["note"] == "built"
    assert torch.equal(state["weight"], torch.arange(3.0))
    assert caught[0].filename == __file__  # stacklevel: the warning points at the caller
    return caught


def test_mtkit_cache_naming_a_file_costs_no_result(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MTKIT_CACHE", str(tmp_path / "a-file"))
    folder = cache_dir()  # as callers do: neither creates nor raises
    _built_anyway(folder / "entry.pt", r"could not cache .*a-file.* is not a folder.*not cached")
    _built_anyway(folder / "deeper" / "entry.pt", r"could not cache .*Not a directory")
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_a_dangling_symlink_as_the_cache_folder_costs_no_result(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    _built_anyway(tmp_path / "link" / "entry.pt", r"could not cache .*link.*not a folder")


def test_a_read_only_folder_costs_no_result(tmp_path, monkeypatch):
    from mtkit.core import atomic

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    _built_anyway(tmp_path / "entry.pt", r"could not cache .*entry\.pt \(Read-only file system")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_folder_without_write_permission_costs_no_result(tmp_path):
    tmp_path.chmod(0o500)
    try:
        _built_anyway(tmp_path / "entry.pt", r"could not cache .*Permission denied")
    finally:
        tmp_path.chmod(0o700)


def test_a_full_disk_costs_no_result_and_leaves_the_old_entry(tmp_path, monkeypatch):
    path = tmp_path / "entry.pt"
    load_or_build(path, "old-key", _builder([]))
    before = path.read_bytes()

    def disk_full(obj, file, *args, **kwargs):
        file.write(b"PK" + bytes(100))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.warns(UserWarning, match="rebuilding"):  # the old entry is for another key
        _built_anyway(path, r"could not cache .*entry\.pt \(No space left on device\)")
    assert [p.name for p in tmp_path.iterdir()] == ["entry.pt"] and path.read_bytes() == before


def test_an_unreadable_entry_is_rebuilt(tmp_path, monkeypatch):
    path = tmp_path / "entry.pt"
    load_or_build(path, "k1", _builder([]))

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(cache, "load_checkpoint", unreadable)
    _built_anyway(path, r"rebuilding the cache entry .*entry\.pt: Permission denied")


def test_cache_dir_neither_creates_nor_checks_and_ignores_an_empty_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MTKIT_CACHE", "")  # not the current folder
    assert cache_dir() == tmp_path / ".cache" / "mtkit"
    monkeypatch.setenv("MTKIT_CACHE", "~/elsewhere")
    assert cache_dir() == tmp_path / "elsewhere"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "key", ["../x", "a/b", "", "..", "\udcff", "k\x00", "x" * 300, None], ids=repr
)
def test_a_cache_key_that_cannot_be_a_file_name_is_refused_before_building(key, tmp_path):
    calls = []
    with pytest.raises(MtkitError, match="a cache key names files and folders"):
        load_or_build(tmp_path / "entry.pt", key, _builder(calls))
    assert calls == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "parts",
    [("domain-adapted", "org/model"), ("x", ".."), ("x", ""), ("a\\b",), ("é" * 200,)],
    ids=repr,
)
def test_a_cache_entry_name_stays_one_file_in_the_cache_folder(parts, tmp_path):
    with pytest.raises(MtkitError, match="a cache entry's name"):
        cache.cache_path(*parts, folder=tmp_path)
    assert cache.cache_path("text-encoder", "0123", folder=tmp_path) == (
        tmp_path / "text-encoder-0123.pt"
    )
