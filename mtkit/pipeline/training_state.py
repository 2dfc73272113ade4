"""Resuming: a fit's whole state saved as it trains, so a killed run goes on exactly.

To carry on after epoch E as if it had never stopped, `fit` needs, as they were after epoch E:

    the model's weights          the optimizer's moments        the schedule's position
    the gradient scaler (AMP)    the History so far             the best epoch's weights
    every random number generator (torch, CUDA, NumPy, Python): the next epoch's shuffling,
                                 dropout and noise then come out as they would have

`TrainingState` (a Callback) writes all of it atomically at the end of an epoch: at most once
a second (a save takes milliseconds, an epoch on digits not many more), and always when fit
stops. Given the same file at the start of a later fit (a new process, after a crash or a
kill -9), it reads it back, and fit goes on with epoch E + 1 (see TrainerState in train.py).
Callbacks that track a metric (EarlyStopping, Checkpoint) read what they need off the restored
History. A fit that had already stopped (early stopping, a target, its last epoch) is restored
as stopped, so nothing trains again and fit returns what it returned the first time.

Pipeline.run puts one in every stage (the file is <run folder>/resume/<stage>.pt) and
Pipeline.resume uses them; used on its own:

    state = TrainingState("state.pt")        # restores when the file exists
    fit(model, loss_fn, data, epochs=50, lr=1e-3, callbacks=[..., state])   # last in the list

Exact on one process; under torchrun the file is written by rank 0 only.
"""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from mtkit.core import distributed
from mtkit.core.checkpoint import CheckpointError, _state_dict_mismatches, load_state, save_state
from mtkit.core.train import Callback, TrainerState

KIND = "fit-state"
SAVE_EVERY_SECONDS = 1.0  # the default: at most this much training is lost to a kill


class TrainingState(Callback):
    """Save fit's whole state to `path` as epochs end; restore it at the start of a fit.

    path: the file (an mtkit checkpoint: tensors plus JSON, written atomically).
    restore: read `path` back, when it exists, at the start of the first fit this callback
        sees (False: always start afresh, overwriting it).
    every_seconds: save after an epoch only when this long has passed since the last save
        (None: SAVE_EVERY_SECONDS; 0: after every epoch); the epoch fit stops after is always
        saved. Resuming from any saved epoch gives the same result.
    Put it last in fit's callbacks: it records each epoch after the other callbacks have had
    their say (e.g. EarlyStopping deciding to stop).
    `restored` is the epoch the last fit started after (0 when it started afresh).
    A callback serves one fit at a time; if the same one is handed to several fits in turn
    (a stage that trains twice), only a state saved by the first of them is restored: a later
    one would need the earlier fits redone first, so the file is then ignored, with a warning.
    """

    def __init__(self, path, restore: bool = True, every_seconds: float | None = None):
        self.path = Path(path)
        self.restore = restore
        self.every_seconds = SAVE_EVERY_SECONDS if every_seconds is None else every_seconds
        self.calls = 0  # fits seen so far
        self.restored = 0

    def on_train_begin(self, trainer: TrainerState) -> None:
        self.calls += 1
        self.restored = 0
        self.last_save = time.monotonic()
        if self.calls == 1 and self.restore and self.path.exists():
            state = self.load()
            if state["call"] != 1:
                warnings.warn(
                    f"not resuming from {self.path}: it was saved by fit number {state['call']} "
                    "of those this callback served, and the fits before it must run again first",
                    stacklevel=2,
                )
                return
            self._restore(trainer, state)
            self.restored = trainer.epoch
            self.on_restore(trainer)

    def on_epoch_end(self, trainer: TrainerState) -> None:
        stopping = trainer.stop_training or trainer.epoch >= trainer.epochs
        if stopping or time.monotonic() - self.last_save >= self.every_seconds:
            self.save(trainer)

    def on_train_end(self, trainer: TrainerState) -> None:
        # Ctrl-C ends fit cleanly ("interrupted") and whoever called it goes on: record that
        # this fit is over, so a resume does not train it further than it went the first time.
        if trainer.history.stopped_reason == "interrupted":
            trainer.stop_training, trainer.stop_reason = True, "interrupted"
            self.save(trainer)

    def on_restore(self, trainer: TrainerState) -> None:
        """Called after a state was restored (for subclasses, e.g. to rewrite a metrics file)."""

    # --- the file -----------------------------------------------------------------------------

    def save(self, trainer: TrainerState) -> None:
        """Write the state after the epoch that just ended (rank 0 only)."""
        if not distributed.is_main_process():
            return
        history = trainer.history
        best_is_model = history.best_epoch is not None and history.best_epoch == trainer.epoch
        state = {
            "call": self.calls,
            "epoch": trainer.epoch,
            "step": trainer.step,
            "stopped": trainer.stop_training,
            # What fit will record as the reason once it leaves its loop.
            "stopped_reason": (trainer.stop_reason or "early_stopping")
            if trainer.stop_training
            else history.stopped_reason,
            "history": {
                "records": history.records,
                "best_epoch": history.best_epoch,
                "best_value": history.best_value,
            },
            "model": trainer.model.state_dict(),
            # Not stored twice when the best epoch is the last one (often, while it learns).
            "best_is_model": best_is_model,
            "best_weights": None if best_is_model else trainer.best_weights,
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": None if trainer.scheduler is None else trainer.scheduler.state_dict(),
            "scaler": None
            if trainer.scaler is None or not trainer.scaler.is_enabled()
            else trainer.scaler.state_dict(),
            "rng": _rng_states(),
        }
        save_state(self.path, state, {"kind": KIND, "model_class": type(trainer.model).__name__})
        self.last_save = time.monotonic()

    def load(self) -> dict:
        """The saved state; CheckpointError if the file is damaged or not a fit state."""
        state, _ = load_state(self.path, expected={"kind": KIND})
        return state

    def _restore(self, trainer: TrainerState, state: dict) -> None:
        model_state = trainer.model.state_dict()
        problems = _state_dict_mismatches(state["model"], model_state)
        if problems:
            raise CheckpointError(
                f"{self.path} was saved by a fit of another model than this "
                f"{type(trainer.model).__name__}:\n  " + "\n  ".join(problems)
            )
        try:
            trainer.model.load_state_dict(state["model"])
            trainer.optimizer.load_state_dict(state["optimizer"])
            if state["scheduler"] is not None and trainer.scheduler is not None:
                trainer.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"] is not None and trainer.scaler is not None:
                trainer.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as error:  # e.g. other optimizer groups
            raise CheckpointError(
                f"{self.path} does not fit this fit's optimizer or schedule: {error}"
            ) from error
        trainer.best_weights = state["best_weights"]
        if state["best_is_model"]:
            trainer.best_weights = {k: v.clone() for k, v in state["model"].items()}
        history = trainer.history
        history.records[:] = state["history"]["records"]
        history.best_epoch = state["history"]["best_epoch"]
        history.best_value = state["history"]["best_value"]
        history.stopped_reason = state["stopped_reason"]
        trainer.epoch, trainer.step = state["epoch"], state["step"]
        trainer.stop_training = state["stopped"]
        trainer.stop_reason = state["stopped_reason"] if state["stopped"] else None
        _set_rng_states(state["rng"])


def _rng_states() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        if len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(states["numpy"])
    # random.setstate wants the tuples back exactly as getstate gave them.
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
