"""What `fit` records and what callbacks see, and the callbacks: code `fit` calls as it trains.

    History          what fit recorded: one dict per epoch, plus how training ended
    TrainerState     what every hook receives: the model, optimizer, History, epoch, step, ...
    Callback         subclass it and override the hooks you need
    EarlyStopping    stop when a recorded metric has not improved for `patience` epochs
    Checkpoint       save the model after each epoch (only on improvement by default)
    LambdaCallback   a callback from plain functions, handy in notebooks

    TrainingDiverged the error fit raises when the loss becomes NaN or infinite
    check_callbacks  what fit accepts as callbacks

`fit` lives in mtkit/core/train.py, which re-exports all of these.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from mtkit.core import distributed
from mtkit.core.checkpoint import save_model
from mtkit.core.utils import MtkitError, check_positive


@dataclass
class History:
    """What `fit` recorded: one dict per epoch in `records`, plus how training ended.

    Each record has epoch, train_loss, train_<metric>..., val_loss, val_<metric>... (with
    validation data), lr (first parameter group, at the start of the epoch) and seconds.
    """

    records: list[dict] = field(default_factory=list)
    monitor: str = "val_loss"
    best_epoch: int | None = None  # None without validation data
    best_value: float | None = None
    stopped_reason: str = "completed"  # or "early_stopping", "interrupted", "diverged"
    total_seconds: float = 0.0

    def __getitem__(self, key: str) -> list:
        """history["val_loss"] -> that value for every epoch (None where it was not recorded)."""
        if self.records and not any(key in record for record in self.records):
            raise KeyError(f"{key!r} was not recorded; recorded: {list(self.records[-1])}")
        return [record.get(key) for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict | None:
        """The last epoch's record, or None before the first epoch ends."""
        return self.records[-1] if self.records else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def plot(self, ax=None, metrics=("train_loss", "val_loss")):
        """Plot those of `metrics` that were recorded against epoch; returns the Axes."""
        import matplotlib.pyplot as plt  # imported here so `import mtkit` stays fast

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        for name in metrics:
            if any(name in record for record in self.records):  # e.g. no val_loss without val data
                values = [record.get(name, math.nan) for record in self.records]
                ax.plot(self["epoch"], values, marker="o", label=name)
        if self.best_epoch is not None:
            ax.axvline(self.best_epoch, color="grey", linestyle="--", label=f"best {self.monitor}")
        ax.set_xlabel("epoch")
        ax.legend()
        return ax


class TrainingDiverged(MtkitError):
    """The loss became NaN or infinite. `.history` holds the epochs recorded before that."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history


def loss_and_metrics(output) -> tuple[torch.Tensor, dict]:
    """What a loss_fn returned as (scalar loss tensor, {metric name: value})."""
    loss, metrics = output if isinstance(output, tuple) else (output, {})
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise MtkitError("loss_fn must return a scalar loss tensor, or (loss, {name: value}).")
    return loss, metrics


class RunningMeans:
    """Batch-size-weighted sums of the loss and metrics, kept as tensors: no GPU sync per batch.
    `means(prefix)` gives one epoch's values of a History record, e.g. {"train_loss": 0.3}."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, size: int, loss: torch.Tensor, metrics: dict) -> None:
        self.count += size
        for key, value in {"loss": loss, **metrics}.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            self.sums[key] = self.sums.get(key, 0.0) + value * size

    def means(self, prefix: str) -> dict:
        if self.count == 0:
            raise MtkitError(f"the {prefix}data yielded no batches")
        return {prefix + key: float(total) / self.count for key, total in self.sums.items()}


@dataclass
class TrainerState:
    """What callbacks see. Set `stop_training = True` (and `stop_reason`) to end after this epoch.

    `last_batch_loss` is a detached 0-dim tensor (call float() on it when you need a number).
    scheduler, scaler and best_weights are here so that a callback can save and restore all of
    a fit's state (mtkit.pipeline.TrainingState): a callback that sets `epoch` to E in
    on_train_begin makes fit go on with epoch E + 1.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    epochs: int
    has_validation: bool
    epoch: int = 0  # 1-based once training starts
    step: int = 0  # optimizer steps taken so far, over all epochs
    last_batch_loss: torch.Tensor | None = None
    stop_training: bool = False
    stop_reason: str | None = None
    scheduler: object | None = None
    scaler: torch.amp.GradScaler | None = None
    best_weights: dict | None = None  # a CPU copy of the best epoch's state_dict


class Callback:
    """Subclass and override the hooks you need; each receives the TrainerState."""

    def on_train_begin(self, trainer: TrainerState) -> None: ...
    def on_epoch_begin(self, trainer: TrainerState) -> None: ...
    def on_batch_end(self, trainer: TrainerState) -> None: ...
    def on_epoch_end(self, trainer: TrainerState) -> None: ...
    def on_train_end(self, trainer: TrainerState) -> None: ...


def check_callbacks(callbacks) -> list[Callback]:
    """`callbacks` (one Callback, or an iterable of them) as a list; MtkitError naming
    `callbacks` for anything else, e.g. the class EarlyStopping where EarlyStopping() belongs."""
    if isinstance(callbacks, (Callback, type)):
        _check_callback("callbacks", callbacks)
        return [callbacks]
    if isinstance(callbacks, (str, bytes, dict)) or not hasattr(callbacks, "__iter__"):
        raise MtkitError(
            "callbacks must be a Callback or a list of them, e.g. [EarlyStopping(patience=3)], "
            f"got {type(callbacks).__name__}"
        )
    callbacks = list(callbacks)
    for index, callback in enumerate(callbacks):
        _check_callback(f"callbacks[{index}]", callback)
    return callbacks


def _check_callback(name: str, callback) -> None:
    if isinstance(callback, type) and issubclass(callback, Callback):
        raise MtkitError(
            f"{name} is the class {callback.__name__}, not a callback: instantiate it, "
            f"e.g. {callback.__name__}()"
        )
    if not isinstance(callback, Callback):
        raise MtkitError(
            f"{name} must be a Callback instance (e.g. EarlyStopping(), "
            f"LambdaCallback(on_epoch_end=fn)), got {type(callback).__name__} {callback!r:.60}"
        )


def improved(value: float, best: float | None, monitor: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best`: losses are minimised, every other metric is maximised."""
    if best is None:
        return not math.isnan(value)
    return value < best - min_delta if "loss" in monitor else value > best + min_delta


class _MonitorCallback(Callback):
    """What EarlyStopping and Checkpoint share: watching one recorded metric for improvement.

    What it tracks (the best value, the epochs since) is read off the History, so a resumed fit,
    which starts with the epochs recorded before it was stopped, needs nothing else.
    """

    def __init__(self, monitor: str, min_delta: float = 0.0):
        self.monitor, self.min_delta, self.best, self.value = monitor, min_delta, None, None

    def on_train_begin(self, trainer):
        if self.monitor.startswith("val_") and not trainer.has_validation:
            name = type(self).__name__
            raise MtkitError(f"{name} monitors {self.monitor!r}; pass val_data to fit()")
        self.best, self.bad_epochs, self.seen = None, 0, 0

    def _improved(self, trainer) -> bool:
        """Read the monitored value of each epoch recorded since the last call (one, or all of
        them after a resume); True when the last is a new best."""
        is_better = False
        for record in trainer.history.records[self.seen :]:
            if self.monitor not in record:
                name = type(self).__name__
                raise MtkitError(f"{name} monitors {self.monitor!r}; recorded are {list(record)}")
            self.value = record[self.monitor]
            is_better = improved(self.value, self.best, self.monitor, self.min_delta)
            self.best = self.value if is_better else self.best
            self.bad_epochs = 0 if is_better else self.bad_epochs + 1
        self.seen = len(trainer.history.records)
        return is_better


class EarlyStopping(_MonitorCallback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0):
        super().__init__(monitor, check_positive("min_delta", min_delta, allow_zero=True))
        self.patience = check_positive("patience", patience, integer=True)

    def on_epoch_end(self, trainer):
        self._improved(trainer)
        if self.bad_epochs >= self.patience:
            trainer.stop_training, trainer.stop_reason = True, "early_stopping"


class Checkpoint(_MonitorCallback):
    """Save the model with `save_model` after each epoch (only on improvement by default).

    The file's metadata records the epoch and the monitored value, e.g. {"val_loss": 0.12}.
    """

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = True):
        super().__init__(monitor)
        self.path, self.save_best_only = path, save_best_only

    def on_epoch_end(self, trainer):
        is_better = self._improved(trainer)  # on every process, so each knows the best so far
        if (is_better or not self.save_best_only) and distributed.is_main_process():
            save_model(self.path, trainer.model, epoch=trainer.epoch, **{self.monitor: self.value})


class LambdaCallback(Callback):
    """A callback from plain functions, handy in notebooks: LambdaCallback(on_epoch_end=fn)."""

    def __init__(self, **hooks):
        for name, function in hooks.items():
            if not hasattr(Callback, name) or not name.startswith("on_"):
                raise MtkitError(f"unknown callback hook {name!r}")
            setattr(self, name, function)  # an instance attribute shadows the no-op method
