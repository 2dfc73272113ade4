"""HyperparameterPanel: sliders, a Run and a Stop button built from a dataclass config.

A notebook declares its knobs once, as a dataclass whose fields say their range:

    @dataclass
    class Config:
        epochs: int = hyperparameter(30, low=1, high=200, label="Epochs", unit="passes")
        learning_rate: float = hyperparameter(3e-3, low=1e-4, high=1e-1, log=True,
                                              label="Learning rate")
        noise: str = hyperparameter("gaussian", options=["none", "gaussian", "masking"])

    panel = HyperparameterPanel(Config(), run=train)   # train(config, callbacks) -> anything
    panel                 # shows the controls
    panel.run()           # runs with the current values; headless runs (nbval) call this

`panel.config` is always a fresh `Config` holding the values the sliders show. Bad values (a
ValueError from the config or from the run, such as a batch larger than the data) are shown as a
message inside the panel instead of a traceback.

Two ways to run. `panel.run()` runs in the caller's thread and returns the result (a notebook
cell, nbval, tests); interrupting the kernel stops it. The Run *button* starts the same run in a
background thread, so that the kernel stays free to receive a click on Stop: while the kernel
runs a cell, it cannot receive a click. What that run prints or displays (text, progress bars,
figures) goes into the panel by widget-state updates (mtkit/thread_output.py), the one route
from a background thread that reaches the page (ipywidgets' `with output:` capture does not,
once the click's message is done). Stop ends `mtkit.fit` at the next batch the way a
KeyboardInterrupt does (best weights and the history so far are kept); a later fit of the same
run does not start, and a run that is not inside a fit is ended within `STOP_GRACE_SECONDS`.
`panel.wait()` waits for a started run.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import io
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from mtkit.core.train import Callback
from mtkit.core.utils import MtkitError
from mtkit.notebook.thread_output import into_output

STOP_GRACE_SECONDS = 2.0  # how long Stop waits for the run to stop by itself, outside fit
FIT_GRACE_SECONDS = 30.0  # inside a fit that has the panel's callbacks: time for a long batch


def hyperparameter(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    step: float | None = None,
    log: bool = False,
    options: Sequence[Any] | None = None,
    label: str | None = None,
    unit: str | None = None,
    help: str | None = None,
):
    """A dataclass field that also describes the widget that edits it.

    Numbers need `low` and `high` (a slider; `log=True` for learning rates and other scales);
    `options` makes a dropdown; booleans become checkboxes. `label` is the words a learner reads,
    `unit` is shown with the range under it, `help` appears on hover.
    """
    spec = dict(low=low, high=high, step=step, log=log, options=options, label=label, unit=unit)
    spec["help"] = help
    if options is not None:
        options = list(options)
        if default not in options:
            raise MtkitError(f"default {default!r} is not one of the options {options}")
    elif _is_number(default):
        if not (_is_number(low) and _is_number(high)) or not low <= default <= high:
            raise MtkitError(
                f"a numeric hyperparameter needs low <= default <= high, got "
                f"low={low}, default={default}, high={high}"
            )
        if log and low <= 0:
            raise MtkitError(f"a log-scale slider needs low > 0, got {low}")
    elif not isinstance(default, bool):
        raise MtkitError(
            f"a hyperparameter of default {default!r} needs options=[...] (a dropdown); "
            "numbers need low and high (a slider), booleans need nothing (a checkbox)"
        )
    return dataclasses.field(default=default, metadata={"widget": spec})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_ranges(config) -> None:
    """Raise MtkitError if a field of `config` lies outside its declared range or options, or
    a slider's field holds something other than a number (an integer for an integer slider)."""
    for field in dataclasses.fields(config):
        spec = field.metadata.get("widget")
        value = getattr(config, field.name)
        if not spec:
            continue
        name = spec["label"] or field.name
        if spec["options"] is not None and value not in spec["options"]:
            raise MtkitError(f"{name}: {value!r} is not one of {list(spec['options'])}")
        if spec["low"] is None:
            continue
        integer = isinstance(field.default, int) and not spec["log"]  # an IntSlider's
        if not _is_number(value) or (integer and not isinstance(value, int)):
            raise MtkitError(
                f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}"
            )
        if not spec["low"] <= value <= spec["high"]:
            raise MtkitError(f"{name} must lie in [{spec['low']}, {spec['high']}], got {value}")


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


class _StopOnRequest(Callback):
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


class _TimeLeft(Callback):
    """Writes "epoch 7/30 · about 12 s left" (7 of 30 epochs done) into the panel's status line
    as fit runs; the time left is the time per epoch so far times the epochs to go."""

    def __init__(self, panel: HyperparameterPanel, every: float = 0.25):
        self.panel = panel
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
        self.panel._show_running(f"{fit}epoch {self.done}/{self.epochs} · {when}")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


class HyperparameterPanel:
    """Controls for every `hyperparameter` field of a dataclass config, Run and Stop, outputs.

    config: a dataclass instance (its values are the starting values) or a dataclass type.
    run: `fn(config, callbacks) -> result`, called by the button and by `panel.run()`; pass
        `callbacks` on to `mtkit.fit` to get the live loss plot, the time left and Stop.
    """

    def __init__(self, config, run: Callable | None = None, title: str | None = None):
        if isinstance(config, type) and dataclasses.is_dataclass(config):
            config = config()
        if not dataclasses.is_dataclass(config):
            raise MtkitError(f"HyperparameterPanel needs a dataclass config, got {type(config)}")
        check_ranges(config)  # a slider would silently clamp a value outside its range
        self._config_type = type(config)
        self._fn = run
        self.result = None
        self.error: str | None = None
        self.controls: dict[str, widgets.Widget] = {
            field.name: _control_for(field, getattr(config, field.name))
            for field in dataclasses.fields(config)
            if "widget" in field.metadata or isinstance(getattr(config, field.name), bool)
        }
        self._fixed = {
            field.name: getattr(config, field.name)
            for field in dataclasses.fields(config)
            if field.name not in self.controls
        }
        self.run_button = widgets.Button(
            description="Run",
            button_style="primary",
            icon="play",
            tooltip="Train with these values",
        )
        self.run_button.on_click(self._clicked_run)
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            disabled=True,
            tooltip="Stop the run started with Run (the best weights so far are kept)",
        )
        self.stop_button.on_click(lambda _button: self.stop())
        self.status = widgets.HTML("")
        self.message = widgets.HTML("")
        self.plot = widgets.Output(layout=widgets.Layout(min_height="40px"))
        self.output = widgets.Output()
        heading = widgets.HTML(f"<b>{title}</b>") if title else widgets.HTML("")
        # As many columns of at least 330 px as fit: two in a notebook, one in a narrow window.
        grid = widgets.GridBox(
            list(self.controls.values()),
            layout=widgets.Layout(
                grid_template_columns="repeat(auto-fit, minmax(330px, 1fr))",
                grid_gap="6px 16px",
            ),
        )
        buttons = widgets.HBox(
            [self.run_button, self.stop_button, self.status],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        self.widget = widgets.VBox(
            [heading, grid, buttons, self.message, self.plot, self.output],
            layout=widgets.Layout(max_width="900px"),
        )
        for widget, name in [
            (self.widget, "mtkit-panel"),
            (grid, "mtkit-controls"),
            (self.run_button, "mtkit-run"),
            (self.stop_button, "mtkit-stop"),
            (self.status, "mtkit-status"),
            (self.message, "mtkit-message"),
            (self.plot, "mtkit-plot"),
            (self.output, "mtkit-output"),
        ]:
            widget.add_class(name)  # names for tests and for styling
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._finished = True
        self._started = 0.0

    @property
    def config(self):
        """The current values as a new config; raises MtkitError if they are invalid."""
        values = {name: control.value for name, control in self.controls.items()}
        try:
            config = self._config_type(**values, **self._fixed)
        except (TypeError, ValueError) as error:
            raise MtkitError(str(error)) from error
        check_ranges(config)
        return config

    @property
    def running(self) -> bool:
        """True while a run started with the Run button has not ended."""
        return self._thread is not None and self._thread.is_alive()

    def set(self, **values) -> HyperparameterPanel:
        """Move controls programmatically (as a learner would with the mouse); returns the panel.

        Raises MtkitError, changing nothing, for an unknown control or a value its control cannot
        take (outside a slider's range, not among a dropdown's options, of the wrong type).
        """
        for name in values:
            if name not in self.controls:
                raise MtkitError(f"no control named {name!r}; controls: {sorted(self.controls)}")
        current = {name: control.value for name, control in self.controls.items()}
        try:
            wanted = self._config_type(**{**current, **values}, **self._fixed)
        except (TypeError, ValueError) as error:
            raise MtkitError(str(error)) from error
        check_ranges(wanted)
        for name, value in values.items():
            if isinstance(self.controls[name], widgets.Checkbox) and not isinstance(value, bool):
                raise MtkitError(f"{name} must be True or False, got {value!r}")
        for name, value in values.items():
            self.controls[name].value = value
        return self

    def run(self, fn: Callable | None = None):
        """Run `fn(config, callbacks)` (default: the panel's) with the current values, here.

        Returns its result (also kept in `panel.result`), or None when the values were invalid;
        the reason is then shown in the panel and kept in `panel.error`. Interrupting the kernel
        stops training (fit keeps the best weights).
        """
        fn = self._prepare(fn)
        self._begin("interrupt the kernel ■ to stop")
        failure = None
        try:
            # Inside a kernel, `with output:` swallows exceptions (it shows them in the widget),
            # so they are caught within the block to reach the panel's message or the caller.
            with self.output:
                try:
                    self.result = fn(self.config, self._callbacks())
                except Exception as error:  # re-raised below unless it is bad input
                    failure = error
                except KeyboardInterrupt as error:  # the kernel interrupted outside fit
                    failure = error
        finally:
            self.run_button.disabled = False
        if isinstance(failure, KeyboardInterrupt):
            self._end(None, stopped=True)
            raise failure
        if failure is not None and not isinstance(failure, ValueError):
            self.status.value = ""
            raise failure
        return self._end(failure, stopped=False)

    def start(self, fn: Callable | None = None) -> threading.Thread | None:
        """What the Run button does: run `fn` in a background thread and return at once.

        The kernel stays free, so Stop can be clicked; the status line shows the time left.
        What the run prints or displays goes into the panel. `panel.wait()` waits for the end.
        Returns the thread, or None when the values were invalid (the reason is then shown).
        """
        fn = self._prepare(fn)
        try:
            config = self.config
        except MtkitError as error:
            self._end(error, stopped=False)
            return None
        self._finished = False
        self._begin("Stop ends the run", background=True)
        self._thread = threading.Thread(
            target=self._work,
            args=(fn, config, self._callbacks()),
            name="mtkit-panel-run",
            daemon=True,
        )
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """What the Stop button does: end the run started with Run (the best weights are kept).

        fit stops at its next batch; a run that is not inside a fit that got the panel's
        callbacks is ended after STOP_GRACE_SECONDS. Does nothing when no such run is going.
        """
        if not self.running or self._stop_requested.is_set():
            return
        self._stop_requested.set()
        self.stop_button.disabled = True
        self._show_running("stopping…")
        asked = time.monotonic()
        timer = threading.Timer(STOP_GRACE_SECONDS, self._end_unresponsive, (self._thread, asked))
        timer.daemon = True
        timer.start()

    def wait(self, timeout: float | None = None):
        """Wait for the run started with Run to end; returns `panel.result`."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise MtkitError(f"the run is still going after {timeout} s")
        return self.result

    # -- the parts of a run --------------------------------------------------------------------

    def _clicked_run(self, _button) -> None:
        if not self.running:  # a second click that arrived before the button was disabled
            self.start()

    def _prepare(self, fn):
        fn = fn or self._fn
        if fn is None:
            raise MtkitError("no function to run: pass run=... to the panel or to panel.run()")
        if self.running:
            raise MtkitError("a run started with the Run button is still going: wait or Stop it")
        return fn

    def _callbacks(self) -> list[Callback]:
        self._stopper = _StopOnRequest(self._stop_requested)
        self._time_left = _TimeLeft(self)
        # The stopper first: a fit that Stop keeps from starting does not show up as "epoch 0".
        return [self._stopper, LiveLossPlot(self.plot), self._time_left]

    def _begin(self, how: str, background: bool = False) -> None:
        self.error = None
        self._stop_requested.clear()  # a Stop for an earlier run does not stop this one
        if background:  # panel.run() keeps the last result when the values are invalid
            self.result = None
        self.message.value = ""
        self.run_button.disabled = True
        self.stop_button.disabled = not background
        self._how = how
        self._started = time.monotonic()
        self._show_running("running…")
        self.output.outputs = ()
        self.plot.outputs = ()

    def _show_running(self, what: str) -> None:
        if self._stop_requested.is_set() and what != "stopping…":
            return  # "stopping…" stays until the run has ended
        self.status.value = f'<i>{_escape(what)}</i> <span style="color:#666">· {self._how}</span>'

    def _end(self, failure, stopped: bool):
        self.run_button.disabled = False
        self.stop_button.disabled = True
        seconds = time.monotonic() - self._started
        if isinstance(failure, ValueError):  # MtkitError is a ValueError
            self.error = str(failure)
            reason = _escape(failure)
            self.message.value = (
                f'<div style="color:#b00020">⚠ Cannot run with these values: {reason}</div>'
            )
            self.status.value = ""
            return None
        if stopped:
            where = getattr(self, "_time_left", None)
            epochs = ""
            if where is not None and where.epochs:
                epochs = f" ({where.done}/{where.epochs} epochs done; best weights so far kept)"
            self.status.value = f"stopped after {seconds:.1f} s{epochs}"
        elif failure is not None:
            self.status.value = f'<span style="color:#b00020">failed: {_escape(failure)}</span>'
        else:
            self.status.value = f"done in {seconds:.1f} s"
        return self.result

    def _work(self, fn, config, callbacks) -> None:
        """The background thread: run fn, its output going into the panel."""
        failure, stopped = None, False
        with into_output(self.output) as capture:
            try:
                try:
                    result = fn(config, callbacks)
                finally:
                    with self._lock:  # no RunStopped is sent into the thread after this
                        self._finished = True
                self.result = result
                stopped = self._stop_requested.is_set()
            except (RunStopped, KeyboardInterrupt):
                stopped = True
            except BaseException as error:  # noqa: B036 - shown in the panel: nobody to raise to
                failure = error
                if not isinstance(error, ValueError):
                    capture.show_error(error)
        self._end(failure, stopped)

    def _end_unresponsive(self, thread, asked: float) -> None:
        """After STOP_GRACE_SECONDS: end a run that did not stop by itself, because it is not
        inside a fit that has the panel's callbacks (one that is gets FIT_GRACE_SECONDS to
        finish its batch). RunStopped is raised in the run's thread, as the kernel's interrupt
        raises KeyboardInterrupt in the main thread: at the next Python instruction."""
        stopper = self._stopper
        while stopper.in_fit and time.monotonic() - asked < FIT_GRACE_SECONDS:
            if stopper.seen.is_set() or not thread.is_alive():
                return
            time.sleep(0.1)
        with self._lock:
            if self._finished or thread is not self._thread or stopper.seen.is_set():
                return
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread.ident), ctypes.py_object(RunStopped)
            )

    def _ipython_display_(self):
        display(self.widget)


def _control_for(field: dataclasses.Field, value) -> widgets.Widget:
    spec = field.metadata.get("widget", {})
    label = spec.get("label") or field.name.replace("_", " ").capitalize()
    unit = spec.get("unit")
    hint = _range_hint(spec, value)
    help_text = spec.get("help")
    tooltip = "; ".join(part for part in (help_text, hint) if part) or label
    description = _escape(label)
    if hint:  # a second, smaller line under the label: the range and the unit
        description = (
            f'<span style="display:block;line-height:1.25">{description}</span>'
            f'<span style="display:block;line-height:1.25;font-size:85%;color:#666">'
            f"{_escape(hint)}</span>"
        )
    elif unit:
        description += f" ({_escape(unit)})"
    common = dict(
        description=description,
        description_allow_html=True,
        tooltip=tooltip,
        style={"description_width": "165px"},
        layout=widgets.Layout(width="auto"),
    )
    if isinstance(value, bool):
        return widgets.Checkbox(value=value, indent=False, **common)
    if spec.get("options") is not None:
        # Shown in words ("linear probe"), the value stays the name the code uses.
        options = [(_words(option), option) for option in spec["options"]]
        return widgets.Dropdown(options=options, value=value, **common)
    low, high = spec["low"], spec["high"]
    if spec.get("log"):
        return widgets.FloatLogSlider(
            value=value,
            base=10,
            min=math.log10(low),
            max=math.log10(high),
            step=spec.get("step") or 0.1,
            readout_format=".2g",  # 0.0032, 4, 1e-05
            **common,
        )
    if isinstance(value, int):
        return widgets.IntSlider(
            value=value, min=int(low), max=int(high), step=int(spec.get("step") or 1), **common
        )
    step = spec.get("step") or (high - low) / 100
    return widgets.FloatSlider(value=value, min=low, max=high, step=step, **common)


def _words(option) -> str:
    return option.replace("_", " ") if isinstance(option, str) else str(option)


def _range_hint(spec: dict, value) -> str:
    """'1 to 300 passes', '0.0001 to 0.1, log scale': what a slider's ends mean."""
    if spec.get("low") is None or isinstance(value, bool):
        return ""
    hint = f"{spec['low']:g} to {spec['high']:g}"
    if spec.get("unit"):
        hint += f" {spec['unit']}"
    if spec.get("log"):
        hint += ", log scale"
    return hint


def _escape(error) -> str:
    return str(error).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
