"""Bottleneck adapters (Houlsby et al., 2019): a small residual MLP after a block.

After a block of the frozen model, its output h becomes

    h ↦ h + up(relu(down(h)))        down: features → size,  up: size → features

with a small `size` (the bottleneck), so the adapter costs about 2 · features · size numbers.
`up` starts at zero: a fresh adapter adds 0 and leaves the block's output exactly as it was.
Where LoRA changes the weights inside a layer, a bottleneck adapter works on what a whole block
outputs, so it fits any block whose output width is known (tokens and images too).

    BottleneckAdapter   the small MLP with its residual connection
    AdaptedBlock        a block followed by its active adapter (an AdaptedModule, see wrapper.py)
    add_adapters        put adapters after the named blocks of a model and freeze the rest
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from mtkit.core.utils import MtkitError, check_choice, check_positive
from mtkit.stages.adapters.tasks import freeze_base, set_active_adapter
from mtkit.stages.adapters.wrapper import (
    AdaptedModule,
    _check_adapter_name,
    _listed,
    _unwrapped,
    _walk,
    _wrap,
    _wrapper_of,
)


class BottleneckAdapter(nn.Module):
    """h ↦ h + up(activation(down(h))), with up = 0 at the start (Houlsby et al., 2019).

    features: width of h; size: the bottleneck width (small: that is what keeps it cheap).
    forward(h): N×features, N×T×features (tokens), or N×features×H×W (then the adapter mixes
    the channels of every pixel, like a 1×1 convolution). Returns a tensor of h's shape.
    """

    def __init__(self, features: int, size: int, activation: str = "relu"):
        super().__init__()
        check_positive("adapter features", features, integer=True)
        check_positive("adapter size", size, integer=True)
        check_choice("adapter activation", activation, ("relu", "gelu"))
        self.config = {"features": features, "size": size, "activation": activation}
        self.down = nn.Linear(features, size)
        self.activation = nn.ReLU() if activation == "relu" else nn.GELU()
        self.up = nn.Linear(size, features)
        # Zero up-projection: the adapter adds 0, so a fresh one leaves the block unchanged.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        channels_first = h.dim() == 4  # images: N×C×H×W; move C last for the Linear layers
        x = h.movedim(1, -1) if channels_first else h
        change = self.up(self.activation(self.down(x)))
        return h + (change.movedim(-1, 1) if channels_first else change)


class AdaptedBlock(AdaptedModule):
    """A block of the original model followed by the active BottleneckAdapter, if any."""

    kind = "bottleneck"

    def forward(self, x):
        output = self.base(x)
        return output if self.active is None else self.active(output)

    def add(self, name: str, features: int, size: int, activation: str = "relu"):
        return self._add(name, BottleneckAdapter(features, size, activation))


def add_adapters(
    model: nn.Module,
    after,
    size: int = 16,
    activation: str = "relu",
    adapter_name: str = "default",
    features: int | None = None,
) -> list[str]:
    """Put a BottleneckAdapter after each block named in `after` (in place).

    after: a module name or a list of names, e.g. ["encoder.block0", "encoder.latent"];
        fnmatch wildcards stay within one level and skip blocks without a Linear or Conv2d
        ("encoder.*": each block of the encoder).
    size: the bottleneck width. features: the width of the blocks' output; by default read
        from the last Linear (out_features) or Conv2d (out_channels) inside each block.
    As with add_lora, `adapter_name` becomes the active adapter and the only thing that trains.
    Returns the names of the blocks that got an adapter. Raises MtkitError (changing nothing)
    for a name that matches no module (the message lists the names there are).
    """
    _check_adapter_name(adapter_name)
    check_positive("adapter size", size, integer=True)
    check_choice("adapter activation", activation, ("relu", "gelu"))
    modules = {name: module for name, module in _walk(model) if name}
    patterns = [after] if isinstance(after, str) else list(after)
    chosen = []
    for pattern in patterns:
        # A wildcard stays within one level: "encoder.*" is each block, not each layer in one.
        matches = [
            name
            for name in modules
            if name.count(".") == pattern.count(".") and fnmatch.fnmatchcase(name, pattern)
        ]
        if any(char in pattern for char in "*?["):  # wildcards skip blocks without weights
            matches = [name for name in matches if _holds_weights(modules[name])]
        if not matches:
            raise MtkitError(
                f"add_adapters: no module is called {pattern!r}; modules: "
                + _listed([name for name in modules if name])
            )
        chosen += [name for name in matches if name not in chosen]
    widths = {name: features or _output_features(modules[name], name) for name in chosen}
    for name in chosen:
        block = _wrapper_of(modules[name], AdaptedBlock)
        if block is not None and adapter_name in block.adapters:
            raise MtkitError(f"block {name!r} already has an adapter called {adapter_name!r}")
    for name in chosen:
        block = _wrapper_of(modules[name], AdaptedBlock) or _wrap(model, name, AdaptedBlock)
        block.add(adapter_name, widths[name], size, activation)
    set_active_adapter(model, adapter_name)
    freeze_base(model)
    return chosen


def _holds_weights(block: nn.Module) -> bool:
    return any(isinstance(_unwrapped(m), (nn.Linear, nn.Conv2d)) for _, m in _walk(block))


def _output_features(block: nn.Module, name: str) -> int:
    """The width of a block's output, read from the last Linear or Conv2d in it."""
    for _, module in reversed(_walk(block)):
        module = _unwrapped(module)
        if isinstance(module, nn.Linear):
            return module.out_features
        if isinstance(module, nn.Conv2d):
            return module.out_channels
    raise MtkitError(
        f"cannot tell how wide the output of {name!r} is (it has no Linear or Conv2d); "
        "pass features=..."
    )
