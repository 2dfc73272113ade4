"""`fit`: one training loop with validation, best-weight restore and callbacks.

`fit` reads as its phases, each a function below it: check the arguments, move the data to the
device, configure the optimizer and schedule, then run the epochs: per epoch, train on every
batch (`_train_epoch`), validate (`_validate`), record one row of History, let callbacks react.
It is as fast as a hand-written loop: in-memory data moves to the device once and is indexed
there, and batch losses are summed as tensors, not turned into Python floats batch by batch.
The one per-batch GPU sync left is the NaN check, which stops a bad step before it touches the
weights. History and the callbacks live in mtkit/core/callbacks.py (re-exported here).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from mtkit.core import distributed
from mtkit.core.callbacks import (  # noqa: F401
    Callback,
    Checkpoint,
    EarlyStopping,
    History,
    LambdaCallback,
    RunningMeans,
    TrainerState,
    TrainingDiverged,
    check_callbacks,
    improved,
    loss_and_metrics,
)
from mtkit.core.interrupts import hold_interrupts, import_lazy_torch_modules
from mtkit.core.utils import MtkitError, check_choice, check_positive, get_device, seed_everything

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = (None, "cosine", "one_cycle")


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
    Raises MtkitError for bad arguments (e.g. a callback class, not an instance; an optimizer
    holding none of the model's trainable parameters), and TrainingDiverged (after restoring the
    best weights) as soon as a training loss is NaN or infinite, before that step touches them.
    A KeyboardInterrupt (Ctrl-C, Jupyter's stop) ends training cleanly, restores the best weights
    and returns the History so far; one during the setup waits for the setup's end (lazy imports
    must not be cut, interrupts.py) and propagates. on_train_end runs unless an exception leaves.
    Under torchrun (after mtkit.core.distributed.setup()), each process trains on its own share of
    every epoch's shuffled in-memory data, batch_size examples per process and step, through
    DistributedDataParallel; each validates on all of val_data (see mtkit/distributed.py).
    A DataLoader is used as given: shard it yourself with a DistributedSampler.
    """
    callbacks = _check_arguments(
        epochs, lr, batch_size, weight_decay, schedule, grad_clip, optimizer, monitor, callbacks
    )
    params = _trainable_parameters(model, optimizer)
    device = device if isinstance(device, torch.device) else get_device(device)
    use_amp = _use_amp(amp, device)
    # Checks done. A Ctrl-C waits for the setup's end: it may import torch lazily (interrupts.py).
    with hold_interrupts():
        train_data, val_data = _prepare_inputs(train_data, val_data, batch_size, schedule, device)
        if seed is not None:
            seed_everything(seed)
        import_lazy_torch_modules()
        model.to(device)
        optimizer, max_lr = _configure_optimizer(optimizer, params, lr, weight_decay)
        run = _Run(
            train_data, val_data, batch_size, device, loss_fn, params, grad_clip, max_lr, use_amp,
            # Under torchrun: the loss goes through DistributedDataParallel (distributed.py).
            train_loss_fn=distributed.parallel_loss(model, loss_fn),
        )  # fmt: skip
        state = TrainerState(
            model, optimizer, History(monitor=monitor), epochs, val_data is not None,
            scheduler=_configure_scheduler(schedule, optimizer, run, epochs),
            scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        )  # fmt: skip
    _train(state, run, callbacks, progress and distributed.is_main_process(), restore_best)
    for callback in callbacks:
        callback.on_train_end(state)
    return state.history


def _use_amp(amp: bool, device: torch.device) -> bool:
    """Whether to train in mixed precision: asked for, and on CUDA (elsewhere: a warning)."""
    if amp and device.type != "cuda":
        warnings.warn(f"amp=True is ignored on {device.type}; it needs CUDA", stacklevel=3)
    return amp and device.type == "cuda"


def _check_arguments(
    epochs, lr, batch_size, weight_decay, schedule, grad_clip, optimizer, monitor, callbacks
) -> list[Callback]:
    """Raise MtkitError for a bad argument of fit; return the callbacks as a list."""
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
    return check_callbacks(callbacks)


def _trainable_parameters(model: nn.Module, optimizer) -> list[nn.Parameter]:
    """The model's trainable parameters. MtkitError when there are none, or when a built
    optimizer holds none of them (built on another model or a copy: fit would change nothing).
    Holding only some of them is fine (e.g. an adapter's), as is leaving frozen ones out."""
    if not isinstance(model, nn.Module):
        raise MtkitError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise MtkitError("the model has no trainable parameters (all frozen?)")
    if isinstance(optimizer, torch.optim.Optimizer):
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not any(id(p) in held for p in params):  # by identity: a copy's are other tensors
            raise MtkitError(
                f"optimizer: the {type(optimizer).__name__} holds none of this "
                f"{type(model).__name__}'s trainable parameters, so fit would train nothing; "
                "build it on this model, e.g. torch.optim.AdamW(model.parameters(), lr=1e-3)"
            )
    return params


def _prepare_inputs(train_data, val_data, batch_size: int, schedule, device: torch.device):
    """(train_data, val_data) ready for `_batches`: in-memory tensors moved to `device` once,
    loaders as they are. Raises MtkitError when batch_size or schedule cannot work with them."""
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
    return train_data, val_data


def _configure_optimizer(optimizer, params: list, lr: float, weight_decay: float):
    """(optimizer, max_lr): a built optimizer as given, with each group's lr as the peak;
    otherwise the named one over `params`, with `lr` as the peak."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer, [group["lr"] for group in optimizer.param_groups]
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay), lr
    optimizer_class = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(params, lr=lr, weight_decay=weight_decay), lr


def _configure_scheduler(schedule, optimizer, run: _Run, epochs: int):
    """The learning-rate schedule, stepped once per batch over all epochs; None without one."""
    if schedule is None:
        return None
    if isinstance(run.train_data, tuple):  # in memory: each process's share, in batches
        examples = distributed.shard_size(len(run.train_data[0]))
        steps_per_epoch = math.ceil(examples / run.batch_size)
    else:
        steps_per_epoch = len(run.train_data)
    total_steps = epochs * steps_per_epoch
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, run.max_lr, total_steps)


@dataclass
class _Run:
    """What every epoch of one fit needs besides the TrainerState, fixed once it is set up."""

    train_data: object  # a tuple of tensors on the device, or a loader
    val_data: object | None
    batch_size: int
    device: torch.device
    loss_fn: object  # for validation
    params: list  # the trainable parameters, for gradient clipping
    grad_clip: float | None
    max_lr: float | list  # the peak lr (per group for a built optimizer), for error messages
    use_amp: bool
    train_loss_fn: object  # loss_fn, through DistributedDataParallel under torchrun
    stepped: bool = False  # whether this fit took an optimizer step yet

    def autocast(self):
        """float16 autocast with amp on CUDA, else nothing."""
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()


def _train(state: TrainerState, run: _Run, callbacks, show_progress: bool, restore_best: bool):
    """on_train_begin, then epoch after epoch until the last or until a callback stops training.

    A KeyboardInterrupt (e.g. Jupyter's stop button) ends training cleanly; whatever ends it,
    the best weights are loaded back with restore_best.
    """
    history = state.history
    bar = tqdm(total=state.epochs, desc="fit", unit="epoch", disable=not show_progress)
    started = time.perf_counter()
    try:
        for callback in callbacks:
            callback.on_train_begin(state)
        # A callback may have resumed an interrupted fit (mtkit.pipeline.TrainingState): restored
        # the weights, optimizer, History, ... of epoch state.epoch, or of a fit that had stopped.
        bar.update(state.epoch)
        for epoch in range(state.epoch + 1, state.epochs + 1):
            if state.stop_training:  # only a resumed fit that had already stopped
                break
            _run_epoch(state, run, callbacks, epoch, bar)
            if state.stop_training:
                history.stopped_reason = state.stop_reason or "early_stopping"
                break
    except KeyboardInterrupt:  # keep what was learned so far
        history.stopped_reason = "interrupted"
        message = f"fit: interrupted during epoch {state.epoch}"
        if restore_best and state.best_weights is not None:
            message += f"; restoring the best weights (epoch {history.best_epoch})"
        print(message)
    finally:
        bar.close()
        history.total_seconds = time.perf_counter() - started
        if restore_best and state.best_weights is not None:
            state.model.load_state_dict(state.best_weights)


def _run_epoch(state: TrainerState, run: _Run, callbacks, epoch: int, bar) -> None:
    """One epoch: train, validate, append its record to the History, call the callbacks."""
    epoch_started, state.epoch = time.perf_counter(), epoch
    record = {"epoch": epoch}
    lr_at_start = state.optimizer.param_groups[0]["lr"]
    for callback in callbacks:
        callback.on_epoch_begin(state)
    record.update(_train_epoch(state, run, callbacks))
    if run.val_data is not None:
        _validate(state, run, record)
    record.update(lr=lr_at_start, seconds=time.perf_counter() - epoch_started)
    state.history.records.append(record)
    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.endswith("loss")})
    bar.update()
    for callback in callbacks:
        callback.on_epoch_end(state)


def _train_epoch(state: TrainerState, run: _Run, callbacks) -> dict:
    """One optimizer step per batch of the shuffled training data; the epoch's train_ means.

    Raises TrainingDiverged before a step with a NaN or infinite loss touches the weights.
    """
    model = state.model
    model.train()
    totals = RunningMeans()
    for batch in _batches(run.train_data, run.batch_size, run.device, shuffle=True):
        with run.autocast():
            loss, metrics = loss_and_metrics(run.train_loss_fn(model, batch))
        if not torch.isfinite(loss):  # check before stepping, so weights stay finite
            raise _diverged(state, run, loss, batch)
        _step(state, run, loss)
        state.last_batch_loss = loss.detach()
        totals.add(batch[0].shape[0], loss, metrics)
        for callback in callbacks:
            callback.on_batch_end(state)
        if state.stop_training:
            break
    # Floats now: the one GPU sync of the epoch. Averaged over processes under torchrun.
    return distributed.average(totals.means("train_"))


def _step(state: TrainerState, run: _Run, loss: torch.Tensor) -> None:
    """Backpropagate `loss` (scaled under amp), clip, step the optimizer and the schedule.
    A fit's first step holds Ctrl-C until it is done: it may import parts of torch lazily."""
    optimizer, scaler = state.optimizer, state.scaler
    with contextlib.nullcontext() if run.stepped else hold_interrupts():
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if run.grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(run.params, run.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if state.scheduler is not None:
            state.scheduler.step()
        state.step, run.stepped = state.step + 1, True


def _diverged(state: TrainerState, run: _Run, loss, batch) -> TrainingDiverged:
    """The error for a NaN or infinite training loss, with the likely cause."""
    state.history.stopped_reason = "diverged"
    current_lr = state.optimizer.param_groups[0]["lr"]
    peak_lr = max(run.max_lr) if isinstance(run.max_lr, list) else run.max_lr
    why = f" (lr={current_lr:g}); the learning rate is probably too high: try lr={peak_lr / 10:g}"
    if any(t.is_floating_point() and not t.isfinite().all() for t in batch):
        why = "; the batch holds NaN or infinite values: check the data"
    return TrainingDiverged(
        f"loss became {loss.item()} at epoch {state.epoch}, step {state.step + 1}{why}",
        state.history,
    )


@torch.no_grad()
def _validate(state: TrainerState, run: _Run, record: dict) -> None:
    """Add the val_ means to the epoch's `record`; keep a CPU copy of the weights if best."""
    history, monitor, model = state.history, state.history.monitor, state.model
    model.eval()
    totals = RunningMeans()
    for batch in _batches(run.val_data, run.batch_size, run.device, shuffle=False):
        with run.autocast():
            loss, metrics = loss_and_metrics(run.loss_fn(model, batch))
        totals.add(batch[0].shape[0], loss, metrics)
    record.update(distributed.average(totals.means("val_")))
    if monitor not in record:
        raise MtkitError(f"monitor={monitor!r} is not recorded: {list(record)}")
    if improved(record[monitor], history.best_value, monitor):
        history.best_epoch, history.best_value = state.epoch, record[monitor]
        weights = model.state_dict()
        state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
