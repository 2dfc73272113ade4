"""Small shared helpers: reproducibility, device choice, trainable parameters, argument checks
(the full set of checkers is mtkit.core.checks)."""

from __future__ import annotations

import numbers
import os
import random

import numpy as np
import torch


class MtkitError(ValueError):
    """Base class for mtkit's own errors: bad input a user can fix, always with a clear message."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and all GPUs) so a run can be repeated exactly."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise MtkitError(f"seed must be a non-negative integer, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    `prefer` ("cuda", "mps", "cpu") forces a choice and fails clearly when it is unavailable.
    The environment variable MTKIT_DEVICE does the same without touching code.
    """
    prefer = prefer or os.environ.get("MTKIT_DEVICE")
    if prefer is not None:
        prefer = str(prefer).lower()
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available(),
            "mps": torch.backends.mps.is_available(),
        }
        if prefer.split(":")[0] not in available:
            raise MtkitError(f"unknown device {prefer!r}; choose one of {sorted(available)}")
        if not available[prefer.split(":")[0]]:
            raise MtkitError(f"device {prefer!r} was asked for but is not available here")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_trainable(module: torch.nn.Module, trainable: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of `module`."""
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


def count_trainable(model: torch.nn.Module) -> int:
    """How many parameter values would receive gradients (requires_grad=True)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False):
    """Raise MtkitError unless `value` is a positive (or non-negative) number; returns it."""
    # numbers.Integral / Real: NumPy's int64 and float64 are numbers too; a bool is not.
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, (bool, np.bool_))
    if ok and not np.isfinite(value):
        ok = False
    if ok:
        ok = value >= 0 if allow_zero else value > 0
    if not ok:
        what = "integer" if integer else "number"
        sign = "non-negative" if allow_zero else "positive"
        raise MtkitError(f"{name} must be a {sign} {what}, got {value!r}")
    return value


def check_choice(name: str, value, choices) -> str:
    """Raise MtkitError unless `value` is one of `choices`; returns it."""
    if value not in choices:
        raise MtkitError(f"unknown {name} {value!r}; choose one of {list(choices)}")
    return value
