"""LoRA (Hu et al., 2021): a low-rank change to a layer's weight.

A Linear layer computes y = x Wᵀ + b with W of shape out×in. Fine-tuning learns a change ΔW of
the same shape: out·in numbers. LoRA bets that the useful change has low rank and writes it as

    ΔW = (alpha / rank) · B A        A: rank×in (random),  B: out×rank (zeros)

so only rank·(in + out) numbers train, and the layer computes y = x Wᵀ + b + x ΔWᵀ with W frozen.
B starts at zero, so ΔW = 0 and a fresh adapter changes nothing; A starts random, so the
gradient of B is not zero and learning can begin. alpha / rank scales the update: keeping alpha
fixed while trying several ranks keeps the size of the update, and so a good learning rate,
roughly the same. A Conv2d gets the same treatment, its weight seen as a matrix out×(in·kh·kw).

Read top to bottom:
    LoRAWeights, LoRAConvWeights   the update alone: A, B and x ↦ (alpha / rank) · B A x
    LoRALinear, LoRAConv2d         a layer plus its updates (an AdaptedModule, see wrapper.py):
                                   output = base(x) + active update(x)
    add_lora                       wrap the chosen layers of a model and freeze the rest
    merge_lora, unmerge_lora       fold ΔW into W for inference, and take it out again
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.utils import MtkitError, check_positive
from mtkit.stages.adapters.tasks import freeze_base, set_active_adapter
from mtkit.stages.adapters.wrapper import (
    AdaptedModule,
    _adapted_modules,
    _check_adapter_name,
    _select_layers,
    _unwrapped,
    _walk,
    _wrap,
    _wrapper_of,
)


class LoRAWeights(nn.Module):
    """One LoRA update for one Linear layer: x ↦ (alpha / rank) · B A x, no bias.

    A: rank×in_features (random), B: out_features×rank (zeros).
    forward(x): ...×in_features → ...×out_features, the change to add to the layer's output.
    """

    def __init__(self, in_features, out_features, rank, alpha=None, dropout=0.0):
        super().__init__()
        alpha = float(rank if alpha is None else alpha)
        self.config = {"rank": rank, "alpha": alpha, "dropout": dropout}
        self.scaling = alpha / rank
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        # The same initialisation nn.Linear gives its weight (and that peft gives A).
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two thin matrix products (in → rank → out), never the full out×in matrix.
        return self.scaling * F.linear(F.linear(self.dropout(x), self.A), self.B)

    def extra_repr(self) -> str:
        out_features, rank = self.B.shape
        return (
            f"in={self.A.shape[1]}, out={out_features}, rank={rank}, alpha={self.config['alpha']}"
        )

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (alpha / rank) · B A, out_features×in_features: what merging adds to W."""
        return self.scaling * (self.B @ self.A)


class LoRAConvWeights(nn.Module):
    """One LoRA update for one Conv2d layer (same stride, padding and dilation as the layer).

    A: rank×in_channels×kh×kw, a convolution down to `rank` channels; B: out_channels×rank, a
    1×1 convolution back up (zeros). forward(x): N×in×H×W → N×out×H'×W', the change to add.
    """

    def __init__(self, conv: nn.Conv2d, rank, alpha=None, dropout=0.0):
        super().__init__()
        alpha = float(rank if alpha is None else alpha)
        self.config = {"rank": rank, "alpha": alpha, "dropout": dropout}
        self.scaling = alpha / rank
        self.conv_options = {"stride": conv.stride, "padding": conv.padding}
        self.conv_options["dilation"] = conv.dilation
        self.A = nn.Parameter(torch.empty(rank, conv.in_channels, *conv.kernel_size))
        self.B = nn.Parameter(torch.zeros(conv.out_channels, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = F.conv2d(self.dropout(x), self.A, **self.conv_options)
        return self.scaling * F.conv2d(down, self.B[:, :, None, None])

    def extra_repr(self) -> str:
        rank, channels_in, height, width = self.A.shape
        out_channels = self.B.shape[0]
        return (
            f"in={channels_in}, out={out_channels}, kernel={height}×{width}, rank={rank}, "
            f"alpha={self.config['alpha']}"
        )

    def delta_weight(self) -> torch.Tensor:
        """ΔW, out×in×kh×kw: B (1×1) after A is one convolution whose kernel is B · A."""
        return self.scaling * torch.einsum("or,rihw->oihw", self.B, self.A)


class _LoRALayer(AdaptedModule):
    """What LoRALinear and LoRAConv2d share: output = base(x) + active LoRA update(x), and merging.

    merge() adds the active ΔW into the base weight, so inference costs exactly as much as the
    original layer; unmerge() subtracts it again (equal up to float rounding, ~1e-7). While
    merged, forward is just the base layer, and the adapter cannot learn: merge for inference.
    """

    def __init__(self, base, rank=4, alpha=None, dropout=0.0, adapter_name="default"):
        super().__init__(base)
        self.merged_adapter: str | None = None
        if rank is not None:  # None: start empty (load_adapter fills it from a file)
            self.add(adapter_name, rank=rank, alpha=alpha, dropout=dropout)
            self.active_adapter = adapter_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.base(x)
        if self.active is not None and self.merged_adapter is None:
            output = output + self.active(x)
        return output

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the active adapter into the base weight (no-op without one or when merged)."""
        if self.active is not None and self.merged_adapter is None:
            self.base.weight += self.active.delta_weight()
            self.merged_adapter = self.active_adapter

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the merged adapter back out of the base weight."""
        if self.merged_adapter is not None:
            self.base.weight -= self.adapters[self.merged_adapter].delta_weight()
            self.merged_adapter = None


class LoRALinear(_LoRALayer):
    """An nn.Linear plus LoRA adapters: y = base(x) + (alpha / rank) · B A x.

    base: the Linear to adapt (its weights are not copied; freeze them with freeze_base).
    rank: inner size of the update, 1 <= rank <= min(in_features, out_features).
    alpha: scale of the update (default: rank, so the scaling alpha / rank is 1).
    dropout: dropout on the adapter's input, during training only.
    adapter_name: name of this first adapter; `add(name, rank=...)` adds more (rank=None
        starts without one).
    forward: ...×in_features → ...×out_features.
    """

    kind = "lora_linear"

    def __init__(self, base: nn.Linear, rank=4, alpha=None, dropout=0.0, adapter_name="default"):
        if not isinstance(base, nn.Linear):
            raise MtkitError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        super().__init__(base, rank, alpha, dropout, adapter_name)

    def add(self, name: str, rank=4, alpha=None, dropout=0.0) -> LoRAWeights:
        _check_lora_options(self.base, rank, alpha, dropout)
        base = self.base
        return self._add(
            name, LoRAWeights(base.in_features, base.out_features, rank, alpha, dropout)
        )


class LoRAConv2d(_LoRALayer):
    """An nn.Conv2d plus LoRA adapters: a rank-channel convolution, then a 1×1 one back up.

    The layer's weight out×in×kh×kw is seen as a matrix out×(in·kh·kw), so 1 <= rank <=
    min(out_channels, in_channels·kh·kw). Arguments as for LoRALinear.
    forward: N×in×H×W → N×out×H'×W', the shape the base convolution gives.
    """

    kind = "lora_conv2d"

    def __init__(self, base: nn.Conv2d, rank=4, alpha=None, dropout=0.0, adapter_name="default"):
        if not isinstance(base, nn.Conv2d):
            raise MtkitError(f"LoRAConv2d wraps an nn.Conv2d, got {type(base).__name__}")
        if base.groups != 1 or base.padding_mode != "zeros":
            raise MtkitError(
                "LoRAConv2d supports convolutions with groups=1 and padding_mode='zeros', got "
                f"groups={base.groups}, padding_mode={base.padding_mode!r}"
            )
        super().__init__(base, rank, alpha, dropout, adapter_name)

    def add(self, name: str, rank=4, alpha=None, dropout=0.0) -> LoRAConvWeights:
        _check_lora_options(self.base, rank, alpha, dropout)
        return self._add(name, LoRAConvWeights(self.base, rank, alpha, dropout))


def add_lora(
    model: nn.Module,
    targets,
    rank: int = 4,
    alpha: float | None = None,
    dropout: float = 0.0,
    adapter_name: str = "default",
) -> list[str]:
    """Give the targeted Linear and Conv2d layers of `model` a LoRA adapter (in place).

    targets: a layer type (nn.Linear, nn.Conv2d), a name pattern, or a list of either. A layer
        is targeted when its own name or the name of a module containing it matches the pattern
        (fnmatch wildcards: "encoder" and "encoder.*" both mean every layer of the encoder).
    rank, alpha, dropout: as for LoRALinear.
    adapter_name: layers already wrapped get this adapter beside the ones they have, so one base
        can hold an adapter per task (see set_active_adapter).
    Afterwards `adapter_name` is the active adapter and, as in peft, the only thing that trains
    (everything else is frozen with freeze_base). Returns the names of the adapted layers.
    Raises MtkitError for a bad rank, alpha or dropout, or a target that matches no layer (the
    message lists the layers there are); nothing is changed then.
    """
    _check_adapter_name(adapter_name)
    candidates = _lora_candidates(model)
    chosen = _select_layers(candidates, targets, "add_lora")
    # Check every layer before changing any, so a bad rank leaves the model untouched.
    for name in chosen:
        layer = candidates[name]
        if isinstance(layer, _LoRALayer) and adapter_name in layer.adapters:
            raise MtkitError(f"layer {name!r} already has an adapter called {adapter_name!r}")
        _check_lora_options(_unwrapped(layer), rank, alpha, dropout, where=f" (layer {name!r})")
    for name in chosen:
        layer = candidates[name]
        if isinstance(layer, _LoRALayer):
            layer.add(adapter_name, rank=rank, alpha=alpha, dropout=dropout)
        else:
            options = dict(rank=rank, alpha=alpha, dropout=dropout, adapter_name=adapter_name)
            _wrap(model, name, partial(_LORA_LAYERS[type(layer)], **options), innermost=True)
    set_active_adapter(model, adapter_name)
    freeze_base(model)
    return chosen


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every active LoRA update into its layer's weight; returns the merged layers' names.

    The merged model computes the same outputs (up to float rounding) at the cost of the original
    network: no extra matrix products. Call unmerge_lora before training or switching adapters.
    """
    names = []
    for name, layer in _adapted_modules(model):
        if isinstance(layer, _LoRALayer) and layer.active is not None:
            layer.merge()
            names.append(name)
    return names


def unmerge_lora(model: nn.Module) -> list[str]:
    """Take merged LoRA updates back out of the weights; returns the unmerged layers' names."""
    names = []
    for name, layer in _adapted_modules(model):
        if isinstance(layer, _LoRALayer) and layer.merged_adapter is not None:
            layer.unmerge()
            names.append(name)
    return names


_LORA_LAYERS = {nn.Linear: LoRALinear, nn.Conv2d: LoRAConv2d}


def _check_lora_options(base: nn.Module, rank, alpha, dropout, where: str = "") -> None:
    """Raise MtkitError unless 1 <= rank <= min(in, out) of `base`, alpha > 0, 0 <= dropout < 1."""
    if isinstance(base, nn.Linear):
        fan_in, fan_out = base.in_features, base.out_features
    else:  # a convolution's weight, seen as a matrix: out × (in · kernel height · kernel width)
        fan_in, fan_out = base.in_channels * math.prod(base.kernel_size), base.out_channels
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise MtkitError(f"LoRA rank must be a positive integer, got {rank!r}")
    if rank > min(fan_in, fan_out):
        raise MtkitError(
            f"LoRA rank {rank} is larger than min(in, out) = min({fan_in}, {fan_out}) of this "
            f"{type(base).__name__}{where}; the update could not be low-rank: use a rank of at "
            f"most {min(fan_in, fan_out)}"
        )
    if alpha is not None:
        check_positive("LoRA alpha", alpha)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise MtkitError(f"LoRA dropout must be in [0, 1), got {dropout!r}")


def _lora_candidates(model: nn.Module) -> dict[str, nn.Module]:
    """{name: layer} for every layer LoRA can adapt: a plain Linear or Conv2d, or the LoRA
    wrapper already around one."""
    candidates, attention = {}, []
    for name, module in _walk(model):
        if any(name.startswith(prefix) for prefix in attention):
            continue
        lora = _wrapper_of(module, _LoRALayer)
        if lora is not None:
            candidates[name] = lora
        elif type(_unwrapped(module)) in _LORA_LAYERS and name:
            candidates[name] = _unwrapped(module)
        elif isinstance(_unwrapped(module), nn.MultiheadAttention):
            # It reads out_proj.weight directly instead of calling out_proj: a wrapper there
            # would be skipped (or break it). Target the feed-forward layers instead.
            attention.append(name + ".")
    return candidates
