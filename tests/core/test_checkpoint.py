"""Checkpoints: exact round trips, atomic writes, and clear errors for every kind of bad file."""

from __future__ import annotations

import io
import json
import os
import pathlib
import pickle
import random
import re
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mtkit.core.checkpoint import (
    FORMAT,
    CheckpointError,
    DiskFullError,
    load_checkpoint,
    load_model_state,
    load_state,
    save_checkpoint,
    save_model,
    save_state,
)
from mtkit.core.utils import MtkitError


@dataclass
class TinyConfig:
    sizes: tuple[int, ...] = (4, 8, 2)


class TinyNet(nn.Module):
    """An MLP whose shape comes from a dataclass config, like mtkit's models."""

    def __init__(self, config: TinyConfig | None = None):
        super().__init__()
        self.config = config or TinyConfig()
        sizes = self.config.sizes
        self.layers = nn.Sequential(
            *[nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )


def mixed_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "weight": torch.randn(3, 4),
        "half": torch.randn(5).to(torch.bfloat16),
        "count": torch.tensor(7),  # 0-dim
        "ids": torch.arange(6).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
    }


def test_round_trip_is_exact_for_every_dtype(tmp_path):
    state = mixed_state_dict()
    path = save_checkpoint(
        tmp_path / "deep" / "dir" / "c.pt", state, {"note": "hi", "dims": (1, 2)}
    )
    assert path == tmp_path / "deep" / "dir" / "c.pt"  # parent directories were created

    loaded, metadata = load_checkpoint(path)

    assert list(loaded) == list(state)
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor)
    assert metadata["note"] == "hi"
    assert metadata["dims"] == [1, 2]  # JSON has no tuples
    assert metadata["format"] == FORMAT
    assert metadata["mtkit_version"]
    assert len(metadata["content_hash"]) == 64


def test_checkpoint_is_readable_by_plain_weights_only_torch_load(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2)}, {"epoch": 3})
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"state_dict", "metadata_json"}
    assert isinstance(payload["metadata_json"], str)


def test_save_model_round_trip_records_class_and_config(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    save_model(tmp_path / "m.pt", model, epoch=4)
    torch.manual_seed(1)
    fresh = TinyNet()

    metadata = load_model_state(tmp_path / "m.pt", fresh)

    assert metadata["model_class"] == "TinyNet"
    assert metadata["model_config"] == {"sizes": [4, 8, 2]}
    assert metadata["epoch"] == 4
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor)


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_leaves_no_temp_file_and_keeps_the_old_checkpoint(
    tmp_path, monkeypatch, failure
):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(2)})

    def broken_save(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(type(failure)):
        save_checkpoint(path, {"w": torch.ones(2)})
    monkeypatch.undo()

    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    state, _ = load_checkpoint(path)
    assert torch.equal(state["w"], torch.zeros(2))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_save_model_on_a_full_disk_says_so_and_keeps_the_old_file(tmp_path, monkeypatch):
    """torch's own C++ writer meets a real ENOSPC (writing to /dev/full) and says only
    "unexpected pos ..."; the error names the file and the cause."""
    from mtkit.core import atomic

    path = save_model(tmp_path / "model.pt", TinyNet())
    before = path.read_bytes()
    real_mkstemp = atomic.tempfile.mkstemp

    def temp_file_on_a_full_disk(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)  # the temp file exists, as on a real disk
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(atomic.tempfile, "mkstemp", temp_file_on_a_full_disk)
    with pytest.raises(DiskFullError, match=r"model\.pt: no space left on device"):
        save_model(path, TinyNet(TinyConfig((4, 64, 2))))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.pt"] and path.read_bytes() == before


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.pt does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_truncated_file(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", mixed_state_dict())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.pt: the file is truncated or corrupt"):
        load_checkpoint(path)


def test_checkpoint_error_is_an_mtkit_error(tmp_path):
    with pytest.raises(MtkitError):
        load_checkpoint(tmp_path / "nothing.pt")


def test_plain_tensor_file_is_not_an_mtkit_checkpoint(tmp_path):
    torch.save(torch.ones(3), tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match=r"t\.pt is not an mtkit checkpoint.*Tensor"):
        load_checkpoint(tmp_path / "t.pt")


def test_plain_state_dict_file_is_not_an_mtkit_checkpoint(tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not an mtkit checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")


def test_random_bytes_file(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(random.Random(0).randbytes(1000))
    with pytest.raises(CheckpointError, match=r"noise\.pt: it is not a torch file"):
        load_checkpoint(path)


class _RunsCodeWhenUnpickled:
    """A pickle that would create a file if loading ran code from it."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {}, "metadata_json": _RunsCodeWhenUnpickled(marker)}, tmp_path / "x")
    with pytest.raises(
        CheckpointError, match="holds Python objects that loading would have to run"
    ):
        load_checkpoint(tmp_path / "x")
    assert not marker.exists()


def test_changed_weights_fail_the_hash_check(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(4)})
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["w"][0] = 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"c\.pt: content hash mismatch"):
        load_checkpoint(path)


def test_expected_metadata_mismatch_names_key_expected_and_found(tmp_path):
    path = save_model(tmp_path / "m.pt", TinyNet())
    assert load_checkpoint(path, expected={"model_config": TinyConfig()})  # tuples match lists
    with pytest.raises(CheckpointError, match="model_class: expected 'Other', found 'TinyNet'"):
        load_checkpoint(path, expected={"model_class": "Other"})
    with pytest.raises(CheckpointError, match=r"model_config: .*sizes=\[4, 16, 2\] vs \[4, 8, 2\]"):
        load_checkpoint(path, expected={"model_config": {"sizes": (4, 16, 2)}})
    with pytest.raises(CheckpointError, match="does not record it"):
        load_checkpoint(path, expected={"dataset": "digits"})


def test_loading_into_another_architecture_lists_the_keys(tmp_path):
    path = save_model(tmp_path / "m.pt", TinyNet(TinyConfig((4, 8, 2))))
    other = TinyNet(TinyConfig((4, 16, 2, 2)))
    before = {k: v.clone() for k, v in other.state_dict().items()}

    with pytest.raises(CheckpointError) as error:
        load_model_state(path, other)

    message = str(error.value)
    assert "does not fit this TinyNet" in message
    assert "model_config" in message
    assert "missing keys (2): layers.2.weight, layers.2.bias" in message
    assert "layers.0.weight (8, 4) in checkpoint vs (16, 4) in model" in message
    assert len(message.splitlines()) <= 5  # a short summary, not torch's wall of text
    for name, tensor in other.state_dict().items():  # nothing was half-loaded
        assert torch.equal(tensor, before[name])


def test_loading_a_different_class_names_both(tmp_path):
    path = save_model(tmp_path / "m.pt", nn.Linear(4, 2))
    with pytest.raises(CheckpointError, match="model_class: expected 'TinyNet', found 'Linear'"):
        load_model_state(path, TinyNet())


def test_state_dict_must_hold_tensors(tmp_path):
    with pytest.raises(CheckpointError, match="dict of name -> Tensor"):
        save_checkpoint(tmp_path / "c.pt", {"w": [1, 2, 3]})
    assert not list(tmp_path.iterdir())


# --- every kind of file against every kind of damage ---------------------------------------------
# Each kind is written, then loaded the way mtkit loads it, from damaged copies: truncated, with
# a flipped bit, replaced by a foreign file, or holding another architecture. Every damaged copy
# must fail with a CheckpointError that names the file (a cache entry: be rebuilt, with a warning
# that names it), or load exactly what was saved (a flipped bit in zip padding changes nothing).


def adapter_base(hidden: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def adapter_model(hidden: int = 8) -> nn.Module:
    from mtkit.stages.adapters import add_lora

    model = adapter_base(hidden)
    add_lora(model, nn.Linear, rank=2)
    return model


class FileKind:
    """How one kind of file is written, loaded, and told apart from what was saved."""

    def __init__(self, tmp_path, kind: str):
        self.kind, self.folder = kind, tmp_path
        self.path = tmp_path / f"{kind}.pt"
        torch.manual_seed(0)
        if kind == "model":
            self.saved = TinyNet()
            save_model(self.path, self.saved)
        elif kind == "adapter":
            from mtkit.stages.adapters import save_adapter

            self.saved = adapter_model()
            with torch.no_grad():
                for name, parameter in self.saved.named_parameters():
                    if ".B" in name:
                        parameter.normal_()  # as if trained: B is zero when fresh
            save_adapter(self.saved, self.path, "default")
        elif kind == "stage":  # a pipeline stage's checkpoint, as rollback reads it
            self.path = tmp_path / "run" / "checkpoints" / "finetune.pt"
            self.saved = TinyNet()
            save_model(self.path, self.saved, stage="finetune", scores={"val_accuracy": 0.5})
        elif kind == "cache":  # a text encoder in the cache, as pretrained_text_encoder left it
            from mtkit.stages.pretrain import TextPretrainConfig, pretrained_text_encoder

            texts = ["the cat sat", "a dog ran", "the dog sat", "a cat ran"] * 4
            config = TextPretrainConfig(vocab_size=50, max_length=6, width=8, heads=2, epochs=1)
            pretrained_text_encoder(texts, config, cache=tmp_path / "cache", progress=False)
            (self.path,) = (tmp_path / "cache").iterdir()
            self.saved, self.metadata = load_checkpoint(self.path)
        self.data = self.path.read_bytes()

    def load(self):
        """Load the file as mtkit does; returns what came out, for `same`."""
        if self.kind == "model":
            model = TinyNet(TinyConfig())
            load_model_state(self.path, model)
            return model.state_dict()
        if self.kind == "adapter":
            from mtkit.stages.adapters import load_adapter

            model = adapter_base()
            load_adapter(model, self.path)
            return model.state_dict()
        if self.kind == "stage":
            from mtkit.pipeline import rollback

            return rollback(self.path.parent.parent, "finetune", model=TinyNet()).state_dict()
        from mtkit.core.cache import load_or_build

        key = self.path.stem.removeprefix("text-encoder-")
        built = []

        def build():
            built.append(1)
            return {"w": torch.ones(1)}, {}

        state, metadata, from_cache = load_or_build(self.path, key, build)
        assert from_cache != bool(built)
        return None if built else (state, metadata)

    def same(self, loaded) -> bool:
        if self.kind == "cache":
            state, metadata = loaded
            return metadata == self.metadata and _equal(state, self.saved)
        return _equal(loaded, self.saved.state_dict())

    def write(self, data: bytes) -> None:
        self.path.write_bytes(data)

    def check_damaged(self, data: bytes, match: str = "") -> str:
        """Write `data` over the file and load it: returns "error" or "same" (or fails)."""
        self.write(data)
        if self.kind == "cache":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = self.load()
            if loaded is None:  # rebuilt, and the warning says which file and why
                (warning,) = [w for w in caught if "rebuilding the cache entry" in str(w.message)]
                assert self.path.name in str(warning.message)
                assert re.search(match, str(warning.message), re.S), str(warning.message)
                self.write(self.data)
                return "error"
        else:
            try:
                loaded = self.load()
            except CheckpointError as error:
                assert self.path.name in str(error), str(error)
                assert re.search(match, str(error), re.S), str(error)
                return "error"
        assert self.same(loaded), "a damaged file loaded as something else"
        return "same"


def _equal(state: dict, expected: dict) -> bool:
    return state.keys() == expected.keys() and all(
        torch.equal(state[k], expected[k]) for k in expected
    )


KINDS = ["model", "adapter", "stage", "cache"]


@pytest.fixture(params=KINDS)
def file_kind(request, tmp_path) -> FileKind:
    return FileKind(tmp_path, request.param)


def test_an_undamaged_file_loads_as_saved(file_kind):
    assert file_kind.check_damaged(file_kind.data) == "same"


def test_a_truncated_file_is_refused(file_kind):
    data = file_kind.data
    for length in (0, 1, 30, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        outcome = file_kind.check_damaged(data[:length], "truncated or corrupt|not a torch file")
        assert outcome == "error", length


def test_a_flipped_bit_anywhere_is_caught_or_changes_nothing(file_kind):
    data, generator = file_kind.data, random.Random(0)
    # About 120 positions, evenly spread, one random bit each: every part of the file is hit.
    outcomes = []
    for position in range(0, len(data), max(1, len(data) // 120)):
        damaged = bytearray(data)
        damaged[position] ^= 1 << generator.randrange(8)
        outcomes.append(file_kind.check_damaged(bytes(damaged)))
    assert outcomes.count("error") > len(outcomes) // 4


def test_a_flipped_bit_in_the_metadata_is_caught(file_kind):
    # The metadata JSON is stored as plain text inside the zip: flip bits all along it.
    text = torch.load(io.BytesIO(file_kind.data), weights_only=True)["metadata_json"].encode()
    start = file_kind.data.index(text)
    for offset in range(0, len(text), max(1, len(text) // 60)):
        damaged = bytearray(file_kind.data)
        damaged[start + offset] ^= 0x01
        outcome = file_kind.check_damaged(bytes(damaged), "hash mismatch|not valid JSON|format")
        assert outcome == "error", offset


class _Anything:
    def __init__(self):
        self.value = [1, 2, 3]


@pytest.mark.parametrize(
    "foreign, message",
    [
        (lambda: pickle.dumps(_Anything()), "not a torch file"),
        (lambda: b"just some text\nin a file\n", "not a torch file"),
        (lambda: _torch_bytes(TinyNet().state_dict()), "not an mtkit checkpoint"),
        (lambda: _torch_bytes({"state_dict": {}, "metadata_json": "{}"}), "unknown .*format"),
    ],
    ids=["pickle", "text", "plain-state-dict", "look-alike"],
)
def test_a_foreign_file_is_refused_and_nothing_is_unpickled(file_kind, foreign, message):
    assert file_kind.check_damaged(foreign(), message) == "error"


def _torch_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_another_architecture_is_refused_with_the_differences(file_kind, tmp_path):
    kind = file_kind.kind
    if kind in ("model", "stage"):
        save_model(file_kind.path, TinyNet(TinyConfig((4, 16, 2))))
        message = r"does not fit this TinyNet:\n.*sizes=\[4, 8, 2\] vs \[4, 16, 2\]"
    elif kind == "adapter":
        from mtkit.stages.adapters import save_adapter

        save_adapter(adapter_model(hidden=16), file_kind.path, "default")
        message = r"another architecture .*\(16, 4\) in the adapter's backbone vs \(8, 4\) here"
    else:  # an entry for another config, where this config's entry belongs
        other = save_checkpoint(tmp_path / "other.pt", {"w": torch.ones(2)}, {"cache_key": "x"})
        file_kind.write(other.read_bytes())
        outcome = file_kind.check_damaged(file_kind.path.read_bytes(), "cache_key: expected")
        assert outcome == "error"
        return
    assert file_kind.check_damaged(file_kind.path.read_bytes(), message) == "error"


def test_a_version_1_checkpoint_without_a_metadata_hash_still_loads(tmp_path):
    path = save_checkpoint(tmp_path / "old.pt", {"w": torch.arange(3.0)}, {"note": "old"})
    payload = torch.load(path, weights_only=True)
    metadata = json.loads(payload["metadata_json"])
    metadata["format"] = "mtkit-checkpoint/1"
    del metadata["metadata_hash"]
    payload["metadata_json"] = json.dumps(metadata)
    torch.save(payload, path)
    state, metadata = load_checkpoint(path)
    assert torch.equal(state["w"], torch.arange(3.0)) and metadata["note"] == "old"


def test_nested_state_round_trips_exactly(tmp_path):
    import numpy as np

    state = {
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "groups": [{"betas": (0.9, 1.0)}]},
        "numpy": ("MT19937", np.arange(5, dtype=np.uint32), 2, 0, 0.5),
        "python": (3, tuple(range(7)), None),
        "nan": float("nan"),
        "text": "a/b",
        "a/b": torch.ones(1),
        "a": {"b": torch.zeros(1)},  # the same path as the key above: kept apart
    }
    path = save_state(tmp_path / "s.pt", state, {"kind": "test"})
    loaded, metadata = load_state(path, expected={"kind": "test"})
    assert metadata["kind"] == "test"
    assert loaded["optimizer"]["state"][0]["step"] == 3.0 and 0 in loaded["optimizer"]["state"]
    assert loaded["optimizer"]["groups"][0]["betas"] == (0.9, 1.0)
    assert loaded["numpy"][1].dtype == np.uint32 and loaded["numpy"][1].tolist() == [0, 1, 2, 3, 4]
    assert loaded["python"] == (3, tuple(range(7)), None)
    assert loaded["nan"] != loaded["nan"] and loaded["text"] == "a/b"
    assert torch.equal(loaded["a/b"], torch.ones(1))
    assert torch.equal(loaded["a"]["b"], torch.zeros(1))
    with pytest.raises(CheckpointError, match=r"cannot save state/x .* object is not tensors"):
        save_state(tmp_path / "bad.pt", {"x": object()})
    assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(CheckpointError, match=r"s\.pt is not the state expected"):
        load_state(path, expected={"kind": "other"})


DEEP_METADATA = {
    "arrays": "[" * 5000 + "]" * 5000,
    "objects": '{"a": ' * 5000 + "1" + "}" * 5000,
    "just too deep": "[" * 101 + "]" * 101,
}


@pytest.mark.parametrize("text", DEEP_METADATA.values(), ids=DEEP_METADATA.keys())
def test_deeply_nested_metadata_is_a_checkpoint_error_not_a_recursion_error(text, tmp_path):
    path = tmp_path / "deep.pt"
    torch.save({"state_dict": {}, "metadata_json": text}, path)
    with pytest.raises(CheckpointError, match=r"deep\.pt: its metadata is nested more than 100"):
        load_checkpoint(path)


@pytest.mark.parametrize("depth", [101, 5000])
def test_metadata_too_deep_to_read_back_is_never_written(depth, tmp_path):
    nested: list = []
    for _ in range(depth - 1):
        nested = [nested]
    with pytest.raises(CheckpointError, match="cannot save checkpoint .*its metadata is nested"):
        save_checkpoint(tmp_path / "a.pt", {"w": torch.zeros(1)}, {"nested": nested})
    assert list(tmp_path.iterdir()) == []
    shallow: list = []
    for _ in range(20):
        shallow = [shallow]
    save_checkpoint(tmp_path / "a.pt", {"w": torch.zeros(1)}, {"nested": shallow})
    assert load_checkpoint(tmp_path / "a.pt")[1]["nested"] == shallow
