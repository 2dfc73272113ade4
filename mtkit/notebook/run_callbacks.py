"""What a HyperparameterPanel hands `fit` as callbacks: the live loss plot, Stop, the time left.

LiveLossPlot    redraws the loss curves in an Output widget while fit runs
StopOnRequest   ends fit at the next batch once Stop was clicked (RunStopped before a fit)
TimeLeft        "epoch 7/30 · about 12 s left", for the panel's status line
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable

import ipywidgets as widgets

from mtkit.core.train import Callback


class LiveLossPlot(Callback):
    """Redraws the loss curves in an Output widget while `fit` runs (at most every `every` s)."""

    def __init__(self, output: widgets.Output, every: float = 0.5):
        self.output = output
        self.every = every
        self._last_draw = 0.0

    def on_epoch_end(self, trainer):
        if time.monotonic() - self._last_draw >= self.every:
            self._draw(trainer.history)

    def on_train_end(self, trainer):
        self._draw(trainer.history)

    def _draw(self, history):
        from matplotlib.figure import Figure  # not pyplot: safe in a background thread

        self._last_draw = time.monotonic()
        figure = Figure(figsize=(5, 2.8))
        history.plot(ax=figure.subplots())
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        # Replacing the Output's contents (rather than printing into it) swaps the picture in
        # one step, without flicker, and works the same from any thread, with or without a kernel.
        picture = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {"image/png": picture, "text/plain": "<loss curves>"},
                "metadata": {},
            },
        )


class RunStopped(BaseException):
    """Ends a run after Stop. A BaseException, like KeyboardInterrupt, so that `except Exception`
    in the run function does not swallow it."""


class StopOnRequest(Callback):
    """Ends fit at the next batch once Stop was clicked, as a KeyboardInterrupt does (fit keeps
    the best weights and returns the history); a later fit of the same run does not start."""

    def __init__(self, requested: threading.Event):
        self.requested = requested
        self.seen = threading.Event()  # fit was told; it ends by itself
        self.in_fit = False  # a fit with this callback runs: it will see the request

    def on_train_begin(self, trainer):
        if self.requested.is_set():
            self.seen.set()
            raise RunStopped
        self.in_fit = True

    def on_train_end(self, trainer):
        self.in_fit = False

    def on_batch_end(self, trainer):
        if self.requested.is_set() and not self.seen.is_set():
            self.seen.set()
            raise KeyboardInterrupt  # fit's own path: "interrupted", best weights restored

    on_epoch_begin = on_batch_end


class TimeLeft(Callback):
    """Tells `show` "epoch 7/30 · about 12 s left" (7 of 30 epochs done) as fit runs, at most
    every `every` s (a panel shows it in its status line); the time left is the time per epoch
    so far times the epochs to go."""

    def __init__(self, show: Callable[[str], None], every: float = 0.25):
        self.show = show
        self.every = every
        self.fits = 0
        self.done = self.epochs = 0
        self._started = self._last = 0.0
        self._first_epoch = 0

    def on_train_begin(self, trainer):
        self.fits += 1
        self._started, self._first_epoch = time.monotonic(), trainer.epoch
        self.done, self.epochs = trainer.epoch, trainer.epochs
        self._show(None)

    def on_epoch_end(self, trainer):
        now = time.monotonic()
        self.done = trainer.epoch
        timed = trainer.epoch - self._first_epoch
        left = (now - self._started) / timed * (trainer.epochs - trainer.epoch)
        if timed == 1 or now - self._last >= self.every or trainer.epoch == trainer.epochs:
            self._show(left)

    def _show(self, left):
        self._last = time.monotonic()
        fit = f"training {self.fits} · " if self.fits > 1 else ""
        if left is None:
            when = "estimating the time left"
        elif self.done == self.epochs:
            when = "finishing"
        else:
            when = f"about {_duration(left)} left"
        self.show(f"{fit}epoch {self.done}/{self.epochs} · {when}")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"
