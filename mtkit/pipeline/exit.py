"""Exit criteria: when a stage stops, and the callback that stops it at a target value."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from mtkit.core.checks import check_number, check_string
from mtkit.core.train import Callback, EarlyStopping
from mtkit.core.utils import MtkitError, check_positive

STOP_REASONS = ("completed", "early_stopping", "target_reached", "interrupted", "diverged")


class TargetReached(Callback):
    """Stop once `monitor` reaches `target`: at least `target` for accuracies, at most for losses.

    History.stopped_reason becomes "target_reached".
    """

    def __init__(self, monitor: str, target: float):
        self.monitor, self.target = monitor, target

    def on_train_begin(self, trainer):
        if self.monitor.startswith("val_") and not trainer.has_validation:
            raise MtkitError(f"TargetReached watches {self.monitor!r}; pass val_data to fit()")

    def on_epoch_end(self, trainer):
        record = trainer.history.last
        if self.monitor not in record:
            raise MtkitError(f"TargetReached watches {self.monitor!r}; recorded: {list(record)}")
        value = record[self.monitor]
        if value <= self.target if "loss" in self.monitor else value >= self.target:
            trainer.stop_training, trainer.stop_reason = True, "target_reached"


def _check_target(target, metric: str) -> float:
    """A target `metric` can reach: a finite number (NaN is never reached), in [0, 1] for an
    accuracy or F1, and >= 0 for a loss; returns it."""
    if isinstance(target, bool) or not isinstance(target, numbers.Real):
        raise MtkitError(f"target must be a number or None, got {target!r}")
    if "accuracy" in metric or "f1" in metric:
        return check_number(f"target (for {metric})", target, low=0, high=1)
    if "loss" in metric:
        return check_number(f"target (for {metric})", target, low=0)
    return check_number("target", target)


@dataclass
class ExitCriteria:
    """When a stage ends: the first of

    max_epochs   it has trained this many epochs                       -> "completed"
    patience     `monitor` has not improved for this many epochs       -> "early_stopping"
                 (None: no early stopping)
    target       `target_metric` reached `target` (>= for accuracies,  -> "target_reached"
                 <= for losses; None: no target). A finite number, in
                 [0, 1] for an accuracy or F1, >= 0 for a loss.
    `monitor` also picks the epoch whose weights the stage keeps.
    """

    max_epochs: int = 100
    patience: int | None = None
    monitor: str = "val_loss"
    target: float | None = None
    target_metric: str = "val_accuracy"

    def __post_init__(self):
        check_positive("max_epochs", self.max_epochs, integer=True)
        if self.patience is not None:
            check_positive("patience", self.patience, integer=True)
        check_string("monitor", self.monitor)
        check_string("target_metric", self.target_metric)
        if self.target is not None:
            self.target = _check_target(self.target, self.target_metric)

    def callbacks(self) -> list[Callback]:
        """The callbacks that enforce these criteria (max_epochs is fit's `epochs`)."""
        callbacks: list[Callback] = []
        if self.patience is not None:
            callbacks.append(EarlyStopping(self.monitor, patience=self.patience))
        if self.target is not None:  # last, so "target_reached" wins a tie with early stopping
            callbacks.append(TargetReached(self.target_metric, self.target))
        return callbacks

    def describe(self) -> str:
        """One line, e.g. "at most 200 epochs; patience 20 on val_loss; target val_loss ≤ 0.02"."""
        parts = [f"at most {self.max_epochs} epochs"]
        if self.patience is not None:
            parts.append(f"patience {self.patience} on {self.monitor}")
        if self.target is not None:
            sign = "≤" if "loss" in self.target_metric else "≥"
            parts.append(f"target {self.target_metric} {sign} {self.target:g}")
        return "; ".join(parts)
