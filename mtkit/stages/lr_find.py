"""`lr_find`: the learning-rate range test (Smith 2017), as fastai's and Lightning's lr_find.

Train a copy of the model for `num_steps` optimizer steps while the learning rate grows
exponentially from `start_lr` to `end_lr`, and record the loss of every step. Too small a
learning rate barely moves the loss; a good one makes it fall fast; too large a one makes it
blow up. The suggestion is where the (smoothed) loss falls fastest.

    result = mt.lr_find(model, loss_fn, train_data)   # the same loss_fn and data as mt.fit
    result.suggestion                                  # e.g. 3e-3
    result.plot()                                      # the curve, the suggestion marked

How it is done, and why:
- It trains a deep copy of the model through `fit` itself (same data handling, device, batch
  size, optimizer names, AMP), so the caller's model, its optimizer and their state are never
  touched; only a callback sets the learning rate before each step and reads each step's loss.
- The losses are smoothed by an exponential moving average with bias correction
  (beta=`smoothing`, 0.98 as in fastai): one batch's loss is too noisy to take a slope of.
- The sweep stops early once the smoothed loss exceeds `diverge_threshold` (4, as fastai and
  Lightning) times its best: the rest of the curve would only be explosion.
- The suggestion is the learning rate of the steepest descent of the smoothed loss against
  log10(lr) (fastai's `steep`, and in spirit Lightning's suggestion), looked for only before
  the loss's minimum and after the first tenth of the sweep (up to 10 steps), where the average
  is still settling. None when the curve is too short to say (a warning says so).
The random-number state is forked: calling lr_find does not change what later code draws.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mtkit.core.train import OPTIMIZERS, Callback, TrainingDiverged, fit
from mtkit.core.utils import MtkitError, check_choice, check_positive, get_device


@dataclass
class LRFinderResult:
    """The range test's curve: `lrs[i]` was the learning rate of step i, `losses[i]` the smoothed
    loss up to it (`raw_losses[i]` that step's own batch loss); `suggestion` the learning rate
    where the smoothed loss falls fastest, or None.
    stopped_reason: "completed", "diverged" or "interrupted" (Ctrl-C or Jupyter's stop button).
    """

    lrs: list[float]
    losses: list[float]
    suggestion: float | None
    raw_losses: list[float]
    stopped_reason: str = "completed"

    def plot(self, ax=None):
        """The smoothed loss against the learning rate (log scale), the suggestion marked with
        a dot and a dashed line; returns the Axes."""
        import matplotlib.pyplot as plt  # imported here so `import mtkit` stays fast

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        ax.plot(self.lrs, self.losses, label="smoothed loss")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        if self.suggestion is not None:
            loss = self.losses[self.lrs.index(self.suggestion)]
            label = f"suggestion: lr={self.suggestion:.2g}"
            ax.plot([self.suggestion], [loss], "o", color="red", label=label)
            ax.axvline(self.suggestion, color="red", linestyle="--", alpha=0.5)
        ax.legend()
        return ax


class _RangeTest(Callback):
    """Record each step's learning rate and loss, then set the next step's learning rate; stop
    after `num_steps` steps or once the smoothed loss exceeds diverge_threshold × its best."""

    def __init__(self, lrs: list[float], smoothing: float, diverge_threshold: float):
        self.lrs, self.smoothing, self.diverge_threshold = lrs, smoothing, diverge_threshold
        self.raw, self.smoothed, self.average, self.best = [], [], 0.0, math.inf
        self.stopped_reason = "completed"

    def on_batch_end(self, trainer):
        step = len(self.raw)  # the step just taken was made with self.lrs[step]
        loss = float(trainer.last_batch_loss)
        self.average = self.smoothing * self.average + (1 - self.smoothing) * loss
        smoothed = self.average / (1 - self.smoothing ** (step + 1))  # bias correction
        self.raw.append(loss)
        self.smoothed.append(smoothed)
        self.best = min(self.best, smoothed)
        if smoothed > self.diverge_threshold * self.best:
            self.stop(trainer, "diverged")
        elif step + 1 == len(self.lrs):
            self.stop(trainer, "completed")
        else:
            for group in trainer.optimizer.param_groups:
                group["lr"] = self.lrs[step + 1]

    def stop(self, trainer, reason: str) -> None:
        trainer.stop_training, trainer.stop_reason, self.stopped_reason = True, reason, reason


def lr_find(
    model: nn.Module,
    loss_fn,
    train_data,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    batch_size: int = 64,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    smoothing: float = 0.98,
    diverge_threshold: float = 4.0,
    device=None,
    amp: bool = False,
    seed: int | None = None,
) -> LRFinderResult:
    """Sweep the learning rate exponentially from start_lr to end_lr over num_steps optimizer
    steps on a copy of `model`; returns the LRFinderResult (curve and suggestion).

    model, loss_fn, train_data, batch_size, weight_decay, device, amp: as for `fit`; the data
        is reshuffled and gone through again if it has fewer than num_steps batches.
    optimizer: "adamw", "adam" or "sgd" (a name, not a built optimizer: lr_find builds its own
        on the copy, so that the caller's optimizer stays as it is).
    smoothing: beta of the loss's moving average, in [0, 1); 0 means no smoothing.
    diverge_threshold: stop once the smoothed loss exceeds this times its best (> 1).
    seed: makes the sweep repeatable; the caller's random-number state is left as it was.
    Raises MtkitError for bad arguments (with fit's messages for the data and loss_fn).
    """
    _check_arguments(start_lr, end_lr, num_steps, optimizer, smoothing, diverge_threshold)
    if seed is not None:
        check_positive("seed", seed, integer=True, allow_zero=True)
    ratios = np.linspace(0.0, 1.0, num_steps)
    lrs = [float(start_lr * (end_lr / start_lr) ** ratio) for ratio in ratios]
    sweep = _RangeTest(lrs, smoothing, diverge_threshold)
    device = device if isinstance(device, torch.device) else get_device(device)
    options = dict(
        epochs=num_steps,  # at least one step per epoch: the callback stops it after num_steps
        lr=lrs[0], batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay,
        callbacks=[sweep], device=device, amp=amp, restore_best=False, progress=False,
    )  # fmt: skip
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            fit(copy.deepcopy(model), loss_fn, train_data, **options)
        except TrainingDiverged as error:  # a NaN or infinite loss: the curve ends there
            if not sweep.raw:
                raise MtkitError(
                    f"lr_find: the first step's loss is not finite: {error}"
                ) from error
            sweep.stopped_reason = "diverged"
    if not sweep.raw:  # interrupted before the first step ended
        raise MtkitError("lr_find was stopped before it took a step; nothing to suggest")
    if len(sweep.raw) < num_steps and sweep.stopped_reason == "completed":
        sweep.stopped_reason = "interrupted"  # fit stops cleanly on Ctrl-C / Jupyter's stop
    recorded = lrs[: len(sweep.raw)]
    return LRFinderResult(
        recorded, sweep.smoothed, steepest_descent(recorded, sweep.smoothed), sweep.raw,
        sweep.stopped_reason,
    )  # fmt: skip


def _cuda_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose random state lr_find must fork: all of them once CUDA is in use
    (torch.manual_seed seeds every one), none on a CPU-only run that has not started CUDA."""
    if device.type == "cuda" or torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


def _check_arguments(start_lr, end_lr, num_steps, optimizer, smoothing, diverge_threshold):
    """Raise MtkitError for a bad argument of lr_find."""
    check_positive("start_lr", start_lr)
    check_positive("end_lr", end_lr)
    if end_lr <= start_lr:
        raise MtkitError(f"end_lr must be larger than start_lr={start_lr:g}, got {end_lr:g}")
    check_positive("num_steps", num_steps, integer=True)
    if num_steps < 2:
        raise MtkitError(f"num_steps must be at least 2 to sweep a range, got {num_steps}")
    if isinstance(optimizer, torch.optim.Optimizer):
        raise MtkitError(
            "lr_find builds its own optimizer on a copy of the model, so that yours stays as it "
            f"is: give optimizer as one of {list(OPTIMIZERS)}, not a built optimizer"
        )
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise MtkitError(f"smoothing must be a number in [0, 1), got {smoothing!r}")
    check_positive("diverge_threshold", diverge_threshold)
    if diverge_threshold <= 1:
        raise MtkitError(f"diverge_threshold must be larger than 1, got {diverge_threshold!r}")


def steepest_descent(lrs: list[float], losses: list[float]) -> float | None:
    """The learning rate at which `losses` fall fastest against log10(lr), looked for after the
    first tenth of the curve (at most 10 points: the average is still settling there) and before
    its minimum (the loss can only be falling before it); None, with a warning, when fewer than
    3 points are left to take a slope over.
    """
    skip = min(10, len(lrs) // 10)
    stop = int(np.argmin(losses)) + 1  # the minimum itself ends the falling part
    if stop - skip < 3:
        warnings.warn(
            "lr_find: too few steps before the loss's minimum to suggest a learning rate; "
            "try a smaller start_lr or more num_steps",
            stacklevel=3,
        )
        return None
    slopes = np.gradient(np.asarray(losses[:stop]), np.log10(lrs[:stop]))
    return lrs[skip + int(np.argmin(slopes[skip:]))]
