import pytest
import torch

from mtkit.core import cache
from mtkit.core.cache import cache_dir, cache_key, fingerprint, load_or_build


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
