"""Checkpoints: exact round trips, atomic writes, and clear errors for every kind of bad file."""

from __future__ import annotations

import pathlib
import random
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mtkit.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    save_model,
)
from mtkit.utils import MtkitError


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
