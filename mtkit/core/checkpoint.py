"""The one safe way to save and load weights (and any other training state) in mtkit.

A checkpoint file is `torch.save({"state_dict": ..., "metadata_json": "..."})`:
- tensors only, plus metadata as a JSON *string*, so `torch.load(weights_only=True)` can always
  read it and loading never runs code from the file;
- written atomically (temp file + fsync + rename), so a crash never leaves half a checkpoint;
- stamped with two hashes, one of the tensors and one of the metadata, so a damaged or edited
  file is caught on load (torch's zip reader does not check its own checksums: without these, a
  flipped bit in the metadata would load silently);
- with `save_model` / `load_model_state`, stamped with the model's class and config, so loading
  weights into the wrong architecture fails with a short, readable message.

`save_state` / `load_state` store nested training state (an optimizer's state_dict, random
number generator states, a History) the same way: the tensors as a flat state_dict, the
structure around them as JSON. `write_atomically` (from mtkit.core.atomic) is the
temp-file-and-rename step on its own, for JSON and text files; a full disk raises DiskFullError.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Re-exported, so `from mtkit.core.checkpoint import write_atomically` keeps working.
from mtkit.core.atomic import DiskFullError as DiskFullError
from mtkit.core.atomic import write_atomically
from mtkit.core.files import check_json_depth, parse_json
from mtkit.core.utils import MtkitError

FORMAT = "mtkit-checkpoint/2"
# Version 1 had no metadata hash; its files are still read (the tensors are still checked).
_READABLE_FORMATS = ("mtkit-checkpoint/1", FORMAT)
_SHOW_AT_MOST = 5  # how many offending keys an error message lists


class CheckpointError(MtkitError):
    """A checkpoint is missing, damaged, foreign, or does not fit what was asked for."""


@functools.lru_cache(maxsize=1)  # importlib.metadata takes about a millisecond per call
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


def _metadata_hash(metadata: dict) -> str:
    """sha256 hex digest of the metadata (without its own hash) as canonical JSON."""
    rest = {key: value for key, value in metadata.items() if key != "metadata_hash"}
    text = json.dumps(rest, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


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
    The keys `format`, `mtkit_version`, `content_hash` and `metadata_hash` are added (and
    overwritten). Parent directories are created. If anything fails, no partial file is left
    behind and an old file at `path` is unchanged (see write_atomically); a full disk raises
    DiskFullError.
    """
    path = Path(path)
    state_dict = _check_state_dict(state_dict, f"cannot save checkpoint {path}")
    if path.is_dir():
        raise CheckpointError(f"cannot save checkpoint {path}: it is a folder; name a file in it")
    metadata = {
        **(metadata or {}),
        "format": FORMAT,
        "mtkit_version": _mtkit_version(),
        "content_hash": content_hash(state_dict),
    }
    where = f"cannot save checkpoint {path}: its metadata"
    try:  # never write what load_checkpoint would refuse to read back
        metadata["metadata_hash"] = _metadata_hash(metadata)
        metadata_json = json.dumps(metadata, default=_json_default)
        check_json_depth(metadata_json, where)
    except RecursionError:  # json.dumps met metadata nested thousands of levels deep
        raise CheckpointError(f"{where} is nested too deeply") from None
    except MtkitError as error:
        raise CheckpointError(str(error)) from None
    payload = {"state_dict": state_dict, "metadata_json": metadata_json}
    return write_atomically(path, lambda file: torch.save(payload, file))


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
    with path.open("rb") as file:
        head = file.read(16)
    # torch.save writes a zip archive ("PK..."); torch before 1.6 a pickle ("\x80...").
    if not head.startswith((b"PK", b"\x80")):
        what = "it is empty" if not head else f"it starts with {head!r}"
        raise CheckpointError(f"cannot read checkpoint {path}: it is not a torch file ({what})")
    try:
        with warnings.catch_warnings():  # a damaged file can make torch warn before it fails
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
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
    try:  # bounded nesting: metadata nested thousands deep is an error, not a RecursionError
        metadata = parse_json(payload["metadata_json"], f"{path}: its metadata")
    except MtkitError as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(metadata, dict) or metadata.get("format") not in _READABLE_FORMATS:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise CheckpointError(f"{path}: unknown checkpoint format {found!r}; expected {FORMAT!r}")
    if metadata["format"] != "mtkit-checkpoint/1" and _metadata_hash(metadata) != metadata.get(
        "metadata_hash"
    ):
        raise CheckpointError(
            f"{path}: metadata hash mismatch; the metadata was changed or damaged after saving"
        )

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


def _check_module(model, what: str) -> None:
    if not isinstance(model, nn.Module):
        raise CheckpointError(
            f"{what} an nn.Module, got {type(model).__name__} (for a dict of tensors, use "
            "save_checkpoint / load_checkpoint)"
        )


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
    _check_module(model, "save_model saves")
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
    _check_module(model, "load_model_state loads into")
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


# ---------------------------------------------------------------------------------------------
# Nested state: an optimizer's state_dict, random number generator states, a History, ...
# The tensors go into the state_dict under their path ("optimizer/state/0/exp_avg"); the
# structure around them goes into the JSON metadata, with markers for what JSON lacks.


def save_state(path, state, metadata: dict | None = None) -> Path:
    """Atomically save nested `state` (dicts, lists, tuples of tensors, NumPy arrays, numbers,
    strings, booleans, None) to `path`, as a checkpoint; returns the path.

    Dict keys may be strings or integers (an optimizer's state is keyed by parameter index).
    Raises CheckpointError, before writing anything, for a value of another type.
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(state, tensors, "state", path)
    return save_checkpoint(path, tensors, {**(metadata or {}), "state": skeleton})


def load_state(path, expected: dict | None = None) -> tuple[object, dict]:
    """Read what `save_state` wrote; returns (state, metadata). Checks as `load_checkpoint`."""
    tensors, metadata = load_checkpoint(path)
    if "state" not in metadata:
        raise CheckpointError(f"{path} holds weights, not a saved state (written by save_model?)")
    problems = _metadata_mismatches(metadata, expected or {})
    if problems:
        raise CheckpointError(f"{path} is not the state expected:\n  " + "\n  ".join(problems))
    try:
        return _unpack(metadata.pop("state"), tensors), metadata
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: its saved state is malformed ({error!r})") from error


def _pack(value, tensors: dict, where: str, path):
    """`value` as JSON, its tensors moved into `tensors` (named by where they sit)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        name = where
        while name in tensors:  # only if a dict key itself holds a "/"
            name += "'"
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu()
            return {"__tensor__": name}
        # e.g. NumPy's random state (uint32): int64 and float64 hold any such array exactly
        kind = np.int64 if np.issubdtype(value.dtype, np.integer) else np.float64
        tensors[name] = torch.from_numpy(value.astype(kind))
        return {"__ndarray__": name, "dtype": str(value.dtype)}
    if isinstance(value, (tuple, list)):
        if all(type(v) in (int, float) for v in value):  # e.g. Python's random state: fast path
            items = list(value)
        else:
            items = [_pack(v, tensors, f"{where}/{i}", path) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if any(not isinstance(key, (str, int)) or isinstance(key, bool) for key in value):
            raise CheckpointError(f"cannot save {where} to {path}: dict keys must be str or int")
        items = [[key, _pack(v, tensors, f"{where}/{key}", path)] for key, v in value.items()]
        return {"__dict__": items}  # keeps integer keys integers, and the order
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(
        f"cannot save {where} to {path}: {type(value).__name__} is not tensors or plain data"
    )


def _unpack(value, tensors: dict):
    """The inverse of _pack."""
    if isinstance(value, list):
        return [_unpack(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy().astype(value["dtype"])
    if "__tuple__" in value:
        return tuple(_unpack(v, tensors) for v in value["__tuple__"])
    return {key: _unpack(v, tensors) for key, v in value["__dict__"]}
