"""The one safe way to save and load weights in mtkit.

A checkpoint file is `torch.save({"state_dict": ..., "metadata_json": "..."})`:
- tensors only, plus metadata as a JSON *string*, so `torch.load(weights_only=True)` can always
  read it and loading never runs code from the file;
- written atomically (temp file + fsync + rename), so a crash never leaves half a checkpoint;
- stamped with a content hash, so damaged or edited weights are caught on load;
- with `save_model` / `load_model_state`, stamped with the model's class and config, so loading
  weights into the wrong architecture fails with a short, readable message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mtkit.utils import MtkitError

FORMAT = "mtkit-checkpoint/1"
_SHOW_AT_MOST = 5  # how many offending keys an error message lists


class CheckpointError(MtkitError):
    """A checkpoint is missing, damaged, foreign, or does not fit what was asked for."""


def _mtkit_version() -> str:
    try:
        return importlib.metadata.version("mtkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _json_default(value):
    """How json.dumps stores what it does not know: dataclasses as dicts, the rest as str()."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _as_json(value):
    """`value` as it comes back from JSON: tuples become lists, dataclasses dicts."""
    return json.loads(json.dumps(value, default=_json_default))


def content_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 hex digest over the sorted names, shapes, dtypes and raw bytes of the tensors."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        # Viewing as bytes works for every dtype, including bfloat16 which NumPy lacks.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _check_state_dict(state_dict, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise CheckpointError(f"{where}: state_dict must be a dict of name -> Tensor")
    return dict(state_dict)


def save_checkpoint(path, state_dict: dict, metadata: dict | None = None) -> Path:
    """Atomically write `state_dict` and `metadata` to `path`; returns the path.

    `metadata` should be JSON-friendly: tuples come back as lists, dataclasses as dicts, other
    objects as their str().
    The keys `format`, `mtkit_version` and `content_hash` are added (and overwritten).
    Parent directories are created. If anything fails, no partial file is left behind.
    """
    path = Path(path)
    state_dict = _check_state_dict(state_dict, f"cannot save checkpoint {path}")
    metadata = {
        **(metadata or {}),
        "format": FORMAT,
        "mtkit_version": _mtkit_version(),
        "content_hash": content_hash(state_dict),
    }
    payload = {
        "state_dict": state_dict,
        "metadata_json": json.dumps(metadata, default=_json_default),
    }

    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file lives in the same directory so os.replace is an atomic rename.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp_name, path)
    except BaseException:  # includes KeyboardInterrupt: never leave a half-written temp file
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _metadata_mismatches(metadata: dict, expected: dict) -> list[str]:
    """One readable line per key of `expected` whose value differs in `metadata`."""
    problems = []
    for key, wanted in expected.items():
        wanted = _as_json(wanted)
        if key not in metadata:
            problems.append(f"{key}: expected {wanted!r}, but the checkpoint does not record it")
            continue
        found = metadata[key]
        if found == wanted:
            continue
        if isinstance(found, dict) and isinstance(wanted, dict):  # name the differing fields
            fields = sorted(set(found) | set(wanted))
            diffs = [
                f"{f}={wanted.get(f, '<absent>')!r} vs {found.get(f, '<absent>')!r}"
                for f in fields
                if found.get(f, "<absent>") != wanted.get(f, "<absent>")
            ]
            problems.append(f"{key}: expected vs found differ in {', '.join(diffs)}")
        else:
            problems.append(f"{key}: expected {wanted!r}, found {found!r}")
    return problems


def load_checkpoint(path, expected: dict | None = None) -> tuple[dict, dict]:
    """Read a checkpoint written by `save_checkpoint`; returns (state_dict, metadata).

    Tensors are loaded onto the CPU with `weights_only=True`. `expected` maps metadata keys to
    the values they must have, e.g. {"model_class": "DenseAutoencoder"}.
    Raises CheckpointError when the file is missing, truncated or corrupt, is not an mtkit
    checkpoint, its weights do not match the stored hash, or `expected` is not met.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's own text here advises weights_only=False
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is not a torch file, or it holds Python objects "
            "that loading would have to run (only tensors and plain data are allowed)"
        ) from error
    except Exception as error:  # torch raises many types here; the first line is what matters
        reason = (str(error).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupt "
            f"({type(error).__name__}: {reason})"
        ) from error

    if not isinstance(payload, dict) or set(payload) != {"state_dict", "metadata_json"}:
        what = type(payload).__name__
        raise CheckpointError(
            f"{path} is not an mtkit checkpoint (it holds a {what}, not the dict written by "
            "save_checkpoint); was it written with plain torch.save?"
        )
    try:
        metadata = json.loads(payload["metadata_json"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({error})") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise CheckpointError(f"{path}: unknown checkpoint format {found!r}; expected {FORMAT!r}")

    state_dict = _check_state_dict(payload["state_dict"], f"{path}")
    if content_hash(state_dict) != metadata.get("content_hash"):
        raise CheckpointError(
            f"{path}: content hash mismatch; the weights were changed or damaged after saving"
        )
    problems = _metadata_mismatches(metadata, expected or {})
    if problems:
        raise CheckpointError(
            f"{path} does not match what was expected:\n  " + "\n  ".join(problems)
        )
    return state_dict, metadata


def _model_identity(model: nn.Module) -> dict:
    """{"model_class": ..., "model_config": ...}; the config only when it is a dataclass."""
    identity = {"model_class": type(model).__name__}
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        identity["model_config"] = dataclasses.asdict(config)
    return identity


def save_model(path, model: nn.Module, **metadata) -> Path:
    """Save `model`'s weights with its class name and dataclass config; returns the path.

    Extra keyword arguments (epoch=3, val_loss=0.12, ...) are stored as metadata too.
    """
    return save_checkpoint(path, model.state_dict(), {**metadata, **_model_identity(model)})


def _state_dict_mismatches(found: dict, model_state: dict) -> list[str]:
    """Readable lines for missing, unexpected and wrongly shaped keys (the first few of each)."""

    def listed(keys):
        shown = ", ".join(keys[:_SHOW_AT_MOST])
        return shown + (
            f", ... ({len(keys) - _SHOW_AT_MOST} more)" if len(keys) > _SHOW_AT_MOST else ""
        )

    missing = [k for k in model_state if k not in found]
    unexpected = [k for k in found if k not in model_state]
    shapes = [
        f"{k} {tuple(found[k].shape)} in checkpoint vs {tuple(model_state[k].shape)} in model"
        for k in model_state
        if k in found and found[k].shape != model_state[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {listed(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {listed(shapes)}")
    return problems


def load_model_state(path, model: nn.Module) -> dict:
    """Load weights saved by `save_model` into `model` (in place); returns the metadata.

    Checks, and reports together in one CheckpointError: the class name and dataclass config
    (when the checkpoint records them), and the state_dict keys and shapes.
    """
    state_dict, metadata = load_checkpoint(path)
    identity = _model_identity(model)
    wanted = {k: v for k, v in identity.items() if k in metadata}
    problems = _metadata_mismatches(metadata, wanted)
    problems += _state_dict_mismatches(state_dict, model.state_dict())
    if problems:
        raise CheckpointError(
            f"{path} does not fit this {identity['model_class']}:\n  " + "\n  ".join(problems)
        )
    model.load_state_dict(state_dict)
    return metadata
