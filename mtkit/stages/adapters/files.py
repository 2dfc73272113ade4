"""Adapter files: only the adapter's weights, plus what is needed to rebuild it.

A fine-tuned model is saved whole; an adapter is saved alone, in kilobytes: its tensors and,
as metadata, where each piece sits in the model (original names, see wrapper.py), its kind and
configuration, and a description of the backbone it was trained on. Loading rebuilds the
adapter in a model with the same backbone, so one backbone file plus one small file per task
is all there is to share. The backbone check catches the two ways this goes wrong:

    another architecture           the model class, or the names or shapes of the base's
                                   tensors, differ: an error that lists the differences
    the same architecture with     a hash of the base's weights differs: a warning (the adapter
    other weights                  runs, but does not give what it was trained to give)
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

from torch import nn

from mtkit.core.checkpoint import CheckpointError, content_hash, load_checkpoint, save_checkpoint
from mtkit.core.utils import MtkitError
from mtkit.stages.adapters.bottleneck import AdaptedBlock
from mtkit.stages.adapters.lora import _LORA_LAYERS, LoRAConv2d, LoRALinear
from mtkit.stages.adapters.prompt import PromptTuning
from mtkit.stages.adapters.tasks import (
    TaskHeads,
    adapter_names,
    base_state_dict,
    freeze_base,
    set_active_adapter,
)
from mtkit.stages.adapters.wrapper import (
    AdaptedModule,
    _adapted_modules,
    _check_adapter_name,
    _listed,
    _place,
    _unwrapped,
    _wrap,
    _wrapper_of,
)

ADAPTER_FORMAT = "mtkit-adapter/1"


def save_adapter(model: nn.Module, path, name: str) -> Path:
    """Save adapter `name` of `model` alone (weights and config) to `path`; returns the path.

    The file holds the adapter's tensors (kilobytes) and, as metadata, where each piece sits and
    how it was configured, the model class, the names and shapes of the base's tensors (so
    loading into another architecture fails clearly) and a hash of the base's weights (so
    loading onto a differently trained backbone warns). Written with save_checkpoint (atomic).
    """
    layers = [(path_, layer) for path_, layer in _adapted_modules(model) if name in layer.adapters]
    if not layers:
        raise MtkitError(f"no adapter called {name!r}; the model has {adapter_names(model)}")
    _refuse_merged(model, "saving")
    state, specs = {}, []
    for layer_path, layer in layers:
        adapter = layer.adapters[name]
        specs.append({"path": layer_path, "kind": layer.kind, "config": adapter.config})
        for key, tensor in adapter.state_dict().items():
            state[f"{layer_path}.{key}"] = tensor.detach().cpu().clone()
    base = base_state_dict(model, _replaced_prefixes(specs))
    metadata = {
        "adapter_format": ADAPTER_FORMAT,
        "adapter_name": name,
        "model_class": type(model).__name__,
        "layers": specs,
        "base_shapes": {key: list(tensor.shape) for key, tensor in base.items()},
        "base_hash": content_hash(base),
    }
    return save_checkpoint(path, state, metadata)


def load_adapter(model: nn.Module, path, name: str | None = None) -> str:
    """Add the adapter saved in `path` to `model` (in place) and make it active; returns its name.

    name: what to call it here (default: the name it was saved under).
    Raises CheckpointError when the file is not an adapter file, or `model` is not the
    architecture the adapter was trained on (the message names the differences); MtkitError
    when the model already has an adapter of that name. Warns when the architecture fits but
    the backbone's weights differ from those the adapter was trained with.
    """
    state, metadata = load_checkpoint(path)
    if metadata.get("adapter_format") != ADAPTER_FORMAT:
        raise CheckpointError(
            f"{path} is not an adapter file (it has no {ADAPTER_FORMAT!r} stamp); whole models "
            "are loaded with load_model_state"
        )
    _check_adapter_metadata(metadata, path)
    name = metadata["adapter_name"] if name is None else name  # "" is a bad name, not None
    _check_adapter_name(name)
    if name in adapter_names(model):
        raise MtkitError(f"the model already has an adapter called {name!r}; pass name=...")
    _refuse_merged(model, "loading")
    specs = metadata["layers"]
    base = base_state_dict(model, _replaced_prefixes(specs))
    problems = _architecture_mismatches(metadata, model, base)
    if problems:
        raise CheckpointError(
            f"adapter {metadata['adapter_name']!r} in {path} was trained on another architecture "
            f"than this {type(model).__name__}:\n  " + "\n  ".join(problems)
        )

    for spec in specs:
        layer = _adapted_layer_at(model, spec, path)
        adapter = layer.add(name, **spec["config"])
        keys = adapter.state_dict().keys()
        adapter.load_state_dict({key: state.pop(f"{spec['path']}.{key}") for key in keys})
    if state:  # everything in the file must have found its place
        raise CheckpointError(f"{path}: tensors that belong to no layer: {_listed(list(state))}")
    set_active_adapter(model, name)
    freeze_base(model)
    if content_hash(base) != metadata["base_hash"]:
        warnings.warn(
            f"adapter {name!r} was trained on a backbone with other weights (same architecture); "
            "its outputs here will not be the ones it was trained to give",
            stacklevel=2,
        )
    return name


# What an adapter file's metadata must hold (save_adapter writes it), and of which type.
_METADATA = {"adapter_name": str, "model_class": str, "layers": list, "base_shapes": dict,
             "base_hash": str}  # fmt: skip
_LAYER = {"path": str, "kind": str, "config": dict}


def _check_adapter_metadata(metadata: dict, path) -> None:
    """CheckpointError naming `path` and the field unless the metadata has every field
    save_adapter writes, of its type (an edited or foreign file: not a KeyError or TypeError)."""
    for key, kind in _METADATA.items():
        _check_field(metadata.get(key), kind, key, path)
    for index, layer in enumerate(metadata["layers"]):
        if not isinstance(layer, dict):
            raise CheckpointError(f"{path}: its adapter metadata layers[{index}] is not an object")
        for key, kind in _LAYER.items():
            _check_field(layer.get(key), kind, f"layers[{index}].{key}", path)


def _check_field(value, kind: type, name: str, path) -> None:
    if not isinstance(value, kind):
        raise CheckpointError(
            f"{path}: its adapter metadata field {name} must be a {kind.__name__}, "
            f"got {value!r:.60}"
        )


def _refuse_merged(model: nn.Module, doing: str) -> None:
    merged = [n for n, layer in _adapted_modules(model) if getattr(layer, "merged_adapter", None)]
    if merged:
        raise MtkitError(f"unmerge_lora(model) before {doing} adapters (merged: {merged})")


def _replaced_prefixes(specs: list[dict]) -> tuple[str, ...]:
    """Heads the adapter brings replace the base's: their base weights do not matter."""
    return tuple(spec["path"] + "." for spec in specs if spec["kind"] == TaskHeads.kind)


def _architecture_mismatches(metadata: dict, model: nn.Module, base: dict) -> list[str]:
    problems = []
    if metadata.get("model_class") != type(model).__name__:
        problems.append(f"model class: {metadata.get('model_class')!r} vs {type(model).__name__!r}")
    saved = metadata["base_shapes"]
    missing = [key for key in saved if key not in base]
    extra = [key for key in base if key not in saved]
    shapes = [
        f"{key} {tuple(saved[key])} in the adapter's backbone vs {tuple(base[key].shape)} here"
        for key in saved
        if key in base and list(base[key].shape) != saved[key]
    ]
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {_listed(shapes)}")
    if missing:
        problems.append(f"tensors missing here ({len(missing)}): {_listed(missing)}")
    if extra:
        problems.append(
            f"tensors the adapter's backbone did not have ({len(extra)}): {_listed(extra)}"
        )
    return problems


_KINDS = {cls.kind: cls for cls in (LoRALinear, LoRAConv2d, AdaptedBlock, PromptTuning, TaskHeads)}


def _adapted_layer_at(model: nn.Module, spec: dict, path) -> AdaptedModule:
    """The wrapper of the kind `spec` names at its place, wrapping the layer there if needed."""
    kind = _KINDS.get(spec["kind"])
    if kind is None:
        raise CheckpointError(f"{path}: unknown adapter kind {spec['kind']!r}")
    module = _place(model, spec["path"])
    if module is None:
        raise CheckpointError(f"{path}: this model has no module {spec['path']!r}")
    wrapper = _wrapper_of(module, kind)
    if wrapper is not None:
        return wrapper
    layer = _unwrapped(module)
    if kind is PromptTuning or (kind in _LORA_LAYERS.values() and type(layer) not in _LORA_LAYERS):
        raise CheckpointError(
            f"{path}: {spec['path']!r} is a {type(layer).__name__}, but the adapter needs a "
            f"{kind.__name__} there"
        )
    if kind in _LORA_LAYERS.values():  # empty (rank=None): the adapter comes from the file
        return _wrap(model, spec["path"], partial(kind, rank=None), innermost=True)
    return _wrap(model, spec["path"], kind)
