"""`fit`: one training loop with validation, best-weight restore and callbacks.

Read `fit` top to bottom: check the arguments, set up, then per epoch: train on every batch,
validate, record one row of History, let callbacks react. It is as fast as a hand-written loop:
in-memory data moves to the device once and is indexed there, and batch losses are summed as
tensors, not turned into Python floats batch by batch. The one per-batch GPU sync left is the
NaN check, which stops a bad step before it touches the weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from mtkit.core import distributed
from mtkit.core.checkpoint import save_model
from mtkit.core.utils import MtkitError, check_choice, check_positive, get_device, seed_everything

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = (None, "cosine", "one_cycle")


class TrainingDiverged(MtkitError):
    """The loss became NaN or infinite. `.history` holds the epochs recorded before that."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history


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


def _improved(value: float, best: float | None, monitor: str, min_delta: float = 0.0) -> bool:
    """Losses are minimised, every other metric (accuracy, ...) is maximised."""
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
        improved = False
        for record in trainer.history.records[self.seen :]:
            if self.monitor not in record:
                name = type(self).__name__
                raise MtkitError(f"{name} monitors {self.monitor!r}; recorded are {list(record)}")
            self.value = record[self.monitor]
            improved = _improved(self.value, self.best, self.monitor, self.min_delta)
            self.best = self.value if improved else self.best
            self.bad_epochs = 0 if improved else self.bad_epochs + 1
        self.seen = len(trainer.history.records)
        return improved


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
        improved = self._improved(trainer)  # on every process, so each knows the best so far
        if (improved or not self.save_best_only) and distributed.is_main_process():
            save_model(self.path, trainer.model, epoch=trainer.epoch, **{self.monitor: self.value})


class LambdaCallback(Callback):
    """A callback from plain functions, handy in notebooks: LambdaCallback(on_epoch_end=fn)."""

    def __init__(self, **hooks):
        for name, function in hooks.items():
            if not hasattr(Callback, name) or not name.startswith("on_"):
                raise MtkitError(f"unknown callback hook {name!r}")
            setattr(self, name, function)  # an instance attribute shadows the no-op method


def _prepare_data(data, name: str, device: torch.device):
    """In-memory data as a tuple of tensors on `device`; a loader is returned unchanged."""
    if isinstance(data, torch.Tensor):
        data = (data,)
    elif hasattr(data, "tensors"):  # TensorDataset, mtkit's ImageDataset
        data = tuple(data.tensors)
    if isinstance(data, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in data):
        if not data or data[0].dim() == 0:
            raise MtkitError(f"{name} is empty: give at least one tensor with a batch dimension")
        sizes = [t.shape[0] if t.dim() else None for t in data]
        if len(set(sizes)) > 1:
            raise MtkitError(f"{name} tensors differ in their first dimension: {sizes}")
        if sizes[0] == 0:
            raise MtkitError(f"{name} has no examples")
        return tuple(t.to(device) for t in data)  # once, not once per batch
    if not hasattr(data, "__iter__"):
        kind = type(data).__name__
        raise MtkitError(f"{name} must be tensors, a TensorDataset or a DataLoader, not {kind}")
    return data


def _batches(data, batch_size: int, device: torch.device, shuffle: bool):
    """Yield batches (tuples of tensors on `device`) from in-memory tensors or a loader."""
    if isinstance(data, tuple):  # already on the device: index it there, no per-sample work
        count = data[0].shape[0]
        order = torch.randperm(count, device=device) if shuffle else None
        if order is not None and distributed.is_distributed():
            order = distributed.shard_order(order)  # this process's share (distributed.py)
            count = len(order)
        for start in range(0, count, batch_size):  # the last, partial batch is kept
            rows = slice(start, start + batch_size)  # validation: a cheap view, in order
            if shuffle:
                rows = order[rows]
            yield tuple(t[rows] for t in data)
        return
    for batch in data:
        batch = (batch,) if isinstance(batch, torch.Tensor) else batch
        if not all(isinstance(t, torch.Tensor) for t in batch):
            kinds = [type(t).__name__ for t in batch]
            raise MtkitError(f"batches must be tensors or tuples of tensors, got {kinds}")
        yield tuple(t.to(device, non_blocking=True) for t in batch)


def _make_optimizer(name: str, params: list, lr: float, weight_decay: float):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    optimizer_class = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return optimizer_class(params, lr=lr, weight_decay=weight_decay)


def _make_scheduler(schedule, optimizer, max_lr, total_steps: int):
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)


def _loss_and_metrics(output) -> tuple[torch.Tensor, dict]:
    loss, metrics = output if isinstance(output, tuple) else (output, {})
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise MtkitError("loss_fn must return a scalar loss tensor, or (loss, {name: value}).")
    return loss, metrics


class _RunningMeans:
    """Batch-size-weighted sums of the loss and metrics, kept as tensors: no GPU sync per batch."""

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


@torch.no_grad()
def _evaluate(model, loss_fn, batches, autocast) -> dict:
    model.eval()
    totals = _RunningMeans()
    for batch in batches:
        with autocast():
            loss, metrics = _loss_and_metrics(loss_fn(model, batch))
        totals.add(batch[0].shape[0], loss, metrics)
    return totals.means("val_")


def fit(
    model: nn.Module,
    loss_fn,
    train_data,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    optimizer="adamw",
    weight_decay: float = 0.0,
    val_data=None,
    callbacks=(),
    schedule: str | None = None,
    grad_clip: float | None = None,
    device=None,
    amp: bool = False,
    monitor: str = "val_loss",
    restore_best: bool = True,
    progress: bool = True,
    seed: int | None = None,
) -> History:
    """Train `model` in place and return its History.

    loss_fn(model, batch) -> loss, or (loss, {"accuracy": value, ...}); `batch` is a tuple of
        tensors already on the device, e.g. (x, y).
    train_data, val_data: a Tensor, a tuple/list of Tensors sharing the first dimension, a
        dataset with `.tensors`, or a DataLoader / re-iterable of batches (then batch_size is
        the loader's business and is not used).
    optimizer: "adamw", "adam", "sgd" (momentum 0.9), or a built torch.optim.Optimizer (e.g. with
        per-group learning rates); then `lr` and `weight_decay` are not used, and "one_cycle"
        peaks at each group's own lr.
    schedule: None, "cosine" (to 0 over all steps) or "one_cycle" (peak lr); stepped per batch.
    monitor: the validation metric whose best epoch's weights are kept and, with restore_best,
        loaded back at the end. "loss" metrics are minimised, others maximised.
    amp: mixed precision on CUDA; ignored with a warning elsewhere.
    Raises MtkitError for bad arguments, and TrainingDiverged (after restoring the best weights)
    as soon as a training loss is NaN or infinite, before that step touches the weights.
    A KeyboardInterrupt stops training cleanly, restores the best weights and returns the
    History so far. Callbacks' on_train_end runs unless an exception leaves fit.
    Under torchrun (after mtkit.core.distributed.setup()), each process trains on its own share of
    every epoch's shuffled in-memory data, batch_size examples per process and step, through
    DistributedDataParallel; each validates on all of val_data (see mtkit/distributed.py).
    A DataLoader is used as given: shard it yourself with a DistributedSampler.
    """
    # 1. Check everything we can before spending any time.
    check_positive("epochs", epochs, integer=True)
    check_positive("lr", lr)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    if schedule not in SCHEDULES:
        raise MtkitError(f"unknown schedule {schedule!r}; choose None, 'cosine' or 'one_cycle'")
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip)
    if not isinstance(optimizer, torch.optim.Optimizer):
        check_choice("optimizer", optimizer, OPTIMIZERS)
    if not isinstance(monitor, str) or not monitor.startswith("val_"):
        raise MtkitError(f"monitor must be a validation metric like 'val_loss', got {monitor!r}")
    callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise MtkitError("the model has no trainable parameters (all frozen?)")
    device = device if isinstance(device, torch.device) else get_device(device)
    train_data = _prepare_data(train_data, "train_data", device)
    val_data = None if val_data is None else _prepare_data(val_data, "val_data", device)
    in_memory = isinstance(train_data, tuple)
    if in_memory and batch_size > len(train_data[0]):
        count = len(train_data[0])
        raise MtkitError(
            f"batch_size={batch_size} is larger than the {count} training examples; "
            f"use at most {count}"
        )
    if schedule is not None and not (in_memory or hasattr(train_data, "__len__")):
        raise MtkitError(f"schedule={schedule!r} needs train_data with a known length")

    # 2. Set up: seed, device, optimizer, schedule, mixed precision.
    if seed is not None:
        seed_everything(seed)
    model.to(device)
    if isinstance(optimizer, torch.optim.Optimizer):
        max_lr = [group["lr"] for group in optimizer.param_groups]
    else:
        max_lr, optimizer = lr, _make_optimizer(optimizer, params, lr, weight_decay)
    scheduler = None
    if schedule is not None:
        steps_per_epoch = (
            math.ceil(distributed.shard_size(len(train_data[0])) / batch_size)
            if in_memory
            else len(train_data)
        )
        scheduler = _make_scheduler(schedule, optimizer, max_lr, epochs * steps_per_epoch)
    use_amp = amp and device.type == "cuda"
    if amp and not use_amp:
        warnings.warn(f"amp=True is ignored on {device.type}; it needs CUDA", stacklevel=2)

    def autocast():
        return torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()

    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    # Under torchrun: the loss goes through DistributedDataParallel (distributed.py).
    train_loss_fn = distributed.parallel_loss(model, loss_fn)

    # 3. The loop.
    history = History(monitor=monitor)
    state = TrainerState(
        model, optimizer, history, epochs, val_data is not None, scheduler=scheduler, scaler=scaler
    )
    show_progress = progress and distributed.is_main_process()
    bar = tqdm(total=epochs, desc="fit", unit="epoch", disable=not show_progress)
    started = time.perf_counter()
    try:
        for callback in callbacks:
            callback.on_train_begin(state)
        # A callback may have resumed an interrupted fit (mtkit.pipeline.TrainingState): restored
        # the weights, optimizer, History, ... of epoch state.epoch, or of a fit that had stopped.
        bar.update(state.epoch)
        for epoch in range(state.epoch + 1, epochs + 1):
            if state.stop_training:  # only a resumed fit that had already stopped
                break
            epoch_started, state.epoch = time.perf_counter(), epoch
            record = {"epoch": epoch}
            lr_at_start = optimizer.param_groups[0]["lr"]
            for callback in callbacks:
                callback.on_epoch_begin(state)

            model.train()
            totals = _RunningMeans()
            for batch in _batches(train_data, batch_size, device, shuffle=True):
                with autocast():
                    loss, metrics = _loss_and_metrics(train_loss_fn(model, batch))
                if not torch.isfinite(loss):  # check before stepping, so weights stay finite
                    history.stopped_reason = "diverged"
                    current_lr = optimizer.param_groups[0]["lr"]
                    peak_lr = max(max_lr) if isinstance(max_lr, list) else max_lr
                    why = (
                        f" (lr={current_lr:g}); the learning rate is probably too high: "
                        f"try lr={peak_lr / 10:g}"
                    )
                    if any(t.is_floating_point() and not t.isfinite().all() for t in batch):
                        why = "; the batch holds NaN or infinite values: check the data"
                    raise TrainingDiverged(
                        f"loss became {loss.item()} at epoch {epoch}, step {state.step + 1}{why}",
                        history,
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                    nn.utils.clip_grad_norm_(params, grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if scheduler is not None:
                    scheduler.step()
                state.step += 1
                state.last_batch_loss = loss.detach()
                totals.add(batch[0].shape[0], loss, metrics)
                for callback in callbacks:
                    callback.on_batch_end(state)
                if state.stop_training:
                    break
            # Floats now: the one GPU sync of the epoch. Averaged over processes under torchrun.
            record.update(distributed.average(totals.means("train_")))

            if val_data is not None:
                val_batches = _batches(val_data, batch_size, device, shuffle=False)
                record.update(distributed.average(_evaluate(model, loss_fn, val_batches, autocast)))
                if monitor not in record:
                    raise MtkitError(f"monitor={monitor!r} is not recorded: {list(record)}")
                if _improved(record[monitor], history.best_value, monitor):
                    history.best_epoch, history.best_value = epoch, record[monitor]
                    state.best_weights = {
                        k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                    }
            record.update(lr=lr_at_start, seconds=time.perf_counter() - epoch_started)
            history.records.append(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.endswith("loss")})
            bar.update()

            for callback in callbacks:
                callback.on_epoch_end(state)
            if state.stop_training:
                history.stopped_reason = state.stop_reason or "early_stopping"
                break
    except KeyboardInterrupt:  # e.g. Jupyter's stop button: keep what was learned so far
        history.stopped_reason = "interrupted"
        message = f"fit: interrupted during epoch {state.epoch}"
        if restore_best and state.best_weights is not None:
            message += f"; restoring the best weights (epoch {history.best_epoch})"
        print(message)
    finally:
        bar.close()
        history.total_seconds = time.perf_counter() - started
        if restore_best and state.best_weights is not None:
            model.load_state_dict(state.best_weights)
    for callback in callbacks:
        callback.on_train_end(state)
    return history
