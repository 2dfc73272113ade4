"""One frozen backbone, many tasks: task heads, switching between adapters, what trains.

Every adapter has a name, and a model may hold several, one per task (a task may touch
different layers than another). One name is active at a time: `set_active_adapter(model,
"digit")` makes every layer holding a "digit" adapter use it, and all other layers behave as
their base. The backbone stays frozen (`freeze_base`) and only the active adapter trains.

An adapter changes the features; the classes are a property of the task: 10 digits for one
task, 2 answers for "is it >= 5?" for another. So a task's head belongs to its adapter: the
classifier's `head` becomes a TaskHeads module that holds one Linear head per adapter name and
uses the active one *instead of* the original head. Saving an adapter saves its head with it.

    TaskHeads, add_task_head                   each task brings its own output layer
    adapter_names, active_adapter,             which adapters there are; switching
        set_active_adapter
    freeze_base                                only the active adapter trains
    trainable_parameters, ParameterCount       what trains, of what the active task uses
    base_state_dict                            the backbone's own tensors, without adapters
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mtkit.core.utils import MtkitError
from mtkit.stages.adapters.wrapper import (
    AdaptedModule,
    _adapted_modules,
    _place,
    _unwrapped,
    _walk,
    _wrap,
    _wrapper_of,
)


class TaskHeads(AdaptedModule):
    """The original head (`base`) and one head per task; the active task's head replaces it.

    forward(features N×F) → N×num_classes logits of the active task (of the base without one).
    """

    kind = "head"
    replaces_base = True

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (self.active or self.base)(features)

    def add(self, name: str, num_classes: int) -> nn.Linear:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise MtkitError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        head = nn.Linear(_unwrapped(self.base).in_features, num_classes)
        head.config = {"num_classes": num_classes}  # what save_adapter records to rebuild it
        return self._add(name, head)

    @property
    def num_classes(self) -> int:
        return (self.active or _unwrapped(self.base)).out_features


def add_task_head(model: nn.Module, adapter_name: str, num_classes: int) -> nn.Linear:
    """Give adapter `adapter_name` its own new head with `num_classes` outputs (in place).

    model: a Classifier (anything whose `head` is an nn.Linear or TaskHeads). The head is part of
    the named adapter: active, trained, switched and saved together with its LoRA or bottleneck
    layers. A task may also be a head alone (that is a linear probe that can be switched).
    The model's `num_classes` follows the active head. Returns the new head.
    """
    place = _place(model, "head")
    if not isinstance(_unwrapped(place), nn.Linear):
        raise MtkitError(
            "add_task_head needs a model whose `head` is an nn.Linear (a mtkit Classifier), "
            f"got {type(_unwrapped(place)).__name__}"
        )
    heads = _wrapper_of(place, TaskHeads) or _wrap(model, "head", TaskHeads)
    new_head = heads.add(adapter_name, num_classes)
    set_active_adapter(model, adapter_name)
    freeze_base(model)
    return new_head


# ---------------------------------------------------------------------------------------------
# Switching, freezing, counting.


def adapter_names(model: nn.Module) -> list[str]:
    """Every adapter name in `model`, sorted."""
    return sorted({name for _, layer in _adapted_modules(model) for name in layer.adapters})


def active_adapter(model: nn.Module) -> str | None:
    """The name of the active adapter (None when adapters are switched off or there are none)."""
    layers = _adapted_modules(model)
    return layers[0][1].active_adapter if layers else None


def set_active_adapter(model: nn.Module, name: str | None) -> None:
    """Use adapter `name` everywhere in `model`: one backbone, the task picked by name.

    Layers holding `name` use it; all other layers behave as their base. The active adapter's
    parameters become trainable and every other adapter's frozen; the base is left as it is
    (freeze_base freezes it; the add_* functions do that for you). name=None switches all
    adapters off: the original model. A Classifier's `num_classes` follows the active head.
    Raises MtkitError for an unknown name, and while LoRA weights are merged.
    """
    layers = _adapted_modules(model)
    if not layers:
        raise MtkitError("this model has no adapters; add some with add_lora or add_adapters")
    if name is not None and name not in adapter_names(model):
        raise MtkitError(f"no adapter called {name!r}; the model has {adapter_names(model)}")
    merged = [n for n, layer in layers if getattr(layer, "merged_adapter", None) is not None]
    if merged:
        raise MtkitError(
            f"LoRA weights are merged into {merged}; call unmerge_lora(model) before switching"
        )
    for _, layer in layers:
        layer.active_adapter = name
        for adapter_name, adapter in layer.adapters.items():
            adapter.requires_grad_(adapter_name == name)
    heads = _wrapper_of(_place(model, "head"), TaskHeads) if hasattr(model, "head") else None
    if heads is not None and hasattr(model, "num_classes"):
        model.num_classes = heads.num_classes


def freeze_base(model: nn.Module) -> None:
    """Freeze every parameter of `model` except those of the active adapter."""
    model.requires_grad_(False)
    for _, layer in _adapted_modules(model):
        if layer.active is not None:
            layer.active.requires_grad_(True)


@dataclass(frozen=True)
class ParameterCount:
    """How many parameters train, of how many the model uses: str() reads like peft's summary."""

    trainable: int
    total: int
    percent: float = field(init=False)

    def __post_init__(self):
        object.__setattr__(
            self, "percent", 100.0 * self.trainable / self.total if self.total else 0.0
        )

    def __str__(self) -> str:
        return f"trainable params {self.trainable:,} of {self.total:,} ({self.percent:.2f}%)"


def trainable_parameters(model: nn.Module) -> ParameterCount:
    """Count the parameters the model uses now, and how many of those are trainable.

    "Uses now": the base plus the active adapter. Inactive adapters (other tasks) and a head
    replaced by the active task's head are not counted, so the percentage is the cost of one
    task, as a fraction of what that task runs. Shared (tied) parameters count once.
    """
    in_use = {id(p): p for p in _parameters_in_use(model)}.values()
    trainable = sum(p.numel() for p in in_use if p.requires_grad)
    return ParameterCount(trainable, sum(p.numel() for p in in_use))


def base_state_dict(model: nn.Module, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The backbone's tensors: {original name: tensor} for the parameters and buffers of the
    model as it was before any adapter (wrappers and adapters left out; no copies). Names that
    start with one of `skip` are left out too. Handy to check that training left it alone."""
    tensors = {}
    for name, module in _walk(model):
        layer = _unwrapped(module)
        prefix = f"{name}." if name else ""
        for key, tensor in [
            *layer.named_parameters(recurse=False),
            *layer.named_buffers(recurse=False),
        ]:
            if tensor is not None and not (prefix + key).startswith(skip):
                tensors[prefix + key] = tensor.detach()
    return tensors


def _parameters_in_use(module: nn.Module):
    """Yield the parameters a forward pass uses now: bases, active adapters, plain layers."""
    if isinstance(module, AdaptedModule):
        if not (module.replaces_base and module.active is not None):
            yield from _parameters_in_use(module.base)
        if module.active is not None:
            yield from module.active.parameters()
        return
    yield from module.parameters(recurse=False)
    for child in module.children():
        yield from _parameters_in_use(child)
