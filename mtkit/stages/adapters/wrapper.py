"""The wrapper every adapter lives in, and how to find places in a wrapped model.

An adapter changes some layers of a frozen model, and each of them is wrapped the same way,
whatever the kind of adapter: the layer is replaced, at the same place in the model, by an
`AdaptedModule` that keeps the layer as `base` and the adapters beside it, by name (one per task):

    encoder.latent                Linear(256, 64)
        ↓  add_lora(model, "encoder.latent", adapter_name="digit")
    encoder.latent                LoRALinear               the wrapper
    encoder.latent.base           Linear(256, 64)          the same layer, frozen
    encoder.latent.adapters       {"digit": LoRAWeights}   what trains

At most one adapter is active (set_active_adapter picks one for the whole model). A subclass
says what the active adapter does to the base (`forward`) and how to build one (`add`):
LoRALinear adds a low-rank update to the base's output, AdaptedBlock puts a small MLP after the
block, TaskHeads uses a new head instead of the base.

Wrapping moves a layer: LoRA on encoder.latent puts the Linear at encoder.latent.base, and a
bottleneck adapter around that moves it again. So adapters name a *place* by the name it had in
the original model, and every wrapper at a place (there may be a chain: a block around a LoRA
layer) stands there. The helpers below the class (_walk, _place, _wrap, ...) look through
wrappers to the original layers; the add_* functions use them to put adapters in place.
"""

from __future__ import annotations

import fnmatch

from torch import nn

from mtkit.core.files import check_name
from mtkit.core.utils import MtkitError


class AdaptedModule(nn.Module):
    """An original layer (`base`) plus named adapters (`adapters`), at most one of them active.

    forward: the base layer, changed by the active adapter. With no active adapter, or one this
    layer does not hold, it is exactly the base layer: each task's adapter may touch different
    layers, and the others stay as they were.
    Subclasses say how an adapter changes the base (`forward`) and how to build one (`add`).
    """

    kind = ""  # names the subclass in adapter files: "lora_linear", "bottleneck", ...
    replaces_base = False  # True when an active adapter is used *instead of* the base (heads)

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict()
        self.active_adapter: str | None = None

    @property
    def active(self) -> nn.Module | None:
        """The adapter in use here, or None (then this module is its base)."""
        if self.active_adapter in self.adapters:
            return self.adapters[self.active_adapter]
        return None

    def add(self, name: str, **config) -> nn.Module:
        """Build an adapter from `config` (what its `config` attribute records) as `name`."""
        raise NotImplementedError

    def _add(self, name: str, adapter: nn.Module) -> nn.Module:
        _check_adapter_name(name)
        if name in self.adapters:
            raise MtkitError(f"this layer already has an adapter called {name!r}")
        reference = next(iter(self.base.parameters()), None)
        if reference is not None:  # live where the base lives: same device, same dtype
            adapter = adapter.to(device=reference.device, dtype=reference.dtype)
        self.adapters[name] = adapter
        return adapter


def _check_adapter_name(name) -> None:
    # A name may also name the adapter's file (f"{name}.pt"): the one check of file names.
    check_name("an adapter name", name)
    # Names become keys of state_dicts and of nn.ModuleDict, where a "." would mean nesting.
    if "." in name:
        raise MtkitError(f"an adapter name must be a non-empty string without dots, got {name!r}")


# ---------------------------------------------------------------------------------------------
# Places in the model, by the names they had in the original model.


def _unwrapped(module: nn.Module) -> nn.Module:
    """The original layer under any chain of wrappers."""
    while isinstance(module, AdaptedModule):
        module = module.base
    return module


def _wrappers(module: nn.Module) -> list[AdaptedModule]:
    """The chain of wrappers at one place, outermost first (empty for a plain layer)."""
    chain = []
    while isinstance(module, AdaptedModule):
        chain.append(module)
        module = module.base
    return chain


def _walk(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(original name, what sits there now) for every place in the model, the root as "".

    Looks through wrappers to the original layers' children; never into adapters.
    """
    places = []

    def visit(module, name):
        places.append((name, module))
        for key, child in _unwrapped(module).named_children():
            visit(child, f"{name}.{key}" if name else key)

    visit(model, "")
    return places


def _adapted_modules(model: nn.Module) -> list[tuple[str, AdaptedModule]]:
    """[(original name, wrapper), ...] for every adapter wrapper in `model`."""
    return [(name, wrapper) for name, module in _walk(model) for wrapper in _wrappers(module)]


def _place(model: nn.Module, name: str) -> nn.Module | None:
    """What sits at the place with this original name now (None if there is no such place)."""
    module = model
    for key in name.split(".") if name else []:
        module = _unwrapped(module)._modules.get(key)
        if module is None:
            return None
    return module


def _wrap(model: nn.Module, name: str, make, innermost: bool = False) -> AdaptedModule:
    """Put make(layer) at a place: around all that is there, or (innermost=True, for LoRA,
    which must hold the Linear itself) around the original layer, inside other wrappers."""
    module = _place(model, name)
    chain = _wrappers(module)
    if innermost and chain:
        wrapper = make(chain[-1].base)
        chain[-1].base = wrapper
        return wrapper
    if not name:
        raise MtkitError("cannot wrap the model itself; target a layer inside it")
    parent_name, _, key = name.rpartition(".")
    wrapper = make(module)
    setattr(_unwrapped(_place(model, parent_name)), key, wrapper)
    return wrapper


def _wrapper_of(module: nn.Module, kind: type) -> AdaptedModule | None:
    return next((w for w in _wrappers(module) if isinstance(w, kind)), None)


def _select_layers(candidates: dict[str, nn.Module], targets, caller: str) -> list[str]:
    """The names of the candidates that `targets` (types, patterns, or a list) pick."""
    if isinstance(targets, (str, type)):
        targets = [targets]
    chosen = []
    for target in targets:
        if isinstance(target, type):
            matches = [
                n for n, layer in candidates.items() if isinstance(_unwrapped(layer), target)
            ]
        elif isinstance(target, str):
            matches = [name for name in candidates if _name_matches(name, target)]
        else:
            raise MtkitError(
                f"{caller}: a target is a layer type or a name pattern, got {target!r}"
            )
        if not matches:
            described = [
                f"{name} ({type(_unwrapped(layer)).__name__})" for name, layer in candidates.items()
            ]
            raise MtkitError(
                f"{caller}: target {getattr(target, '__name__', target)!r} matches no layer "
                f"LoRA can adapt; the Linear and Conv2d layers are: {_listed(described, 40)}"
            )
        chosen += [name for name in matches if name not in chosen]
    return chosen


def _name_matches(name: str, pattern: str) -> bool:
    """True when `name` or the name of a module containing it matches `pattern`."""
    parts = name.split(".")
    return any(
        fnmatch.fnmatchcase(".".join(parts[:end]), pattern) for end in range(1, len(parts) + 1)
    )


def _listed(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
