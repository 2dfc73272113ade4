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

The fields and their widgets are in controls.py, the callbacks the panel gives `fit` (live loss
plot, Stop, time left) in run_callbacks.py; their public names can be imported from here too.
"""

from __future__ import annotations

import ctypes
import dataclasses
import threading
import time
from collections.abc import Callable

import ipywidgets as widgets
from IPython.display import display

from mtkit.core.train import Callback
from mtkit.core.utils import MtkitError
from mtkit.notebook.controls import check_ranges, control_for, escape, hyperparameter
from mtkit.notebook.run_callbacks import LiveLossPlot, RunStopped, StopOnRequest, TimeLeft
from mtkit.notebook.thread_output import into_output

__all__ = [
    "FIT_GRACE_SECONDS",
    "STOP_GRACE_SECONDS",
    "HyperparameterPanel",
    "LiveLossPlot",
    "RunStopped",
    "check_ranges",
    "hyperparameter",
]

STOP_GRACE_SECONDS = 2.0  # how long Stop waits for the run to stop by itself, outside fit
FIT_GRACE_SECONDS = 30.0  # inside a fit that has the panel's callbacks: time for a long batch


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
            field.name: control_for(field, getattr(config, field.name))
            for field in dataclasses.fields(config)
            if "widget" in field.metadata or isinstance(getattr(config, field.name), bool)
        }
        self._fixed = {
            field.name: getattr(config, field.name)
            for field in dataclasses.fields(config)
            if field.name not in self.controls
        }
        self._build_widgets(title)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._finished = True
        self._started = 0.0

    def _build_widgets(self, title: str | None) -> None:
        """The buttons, status line, message, plot and output, laid out under the controls."""
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

    @property
    def config(self):
        """The current values as a new config; raises MtkitError if they are invalid."""
        return self._config_with({})

    def _config_with(self, values: dict):
        """A config of the controls' values with `values` instead where given, checked."""
        current = {name: control.value for name, control in self.controls.items()}
        try:
            config = self._config_type(**{**current, **values}, **self._fixed)
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
        self._config_with(values)
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
        self._stopper = StopOnRequest(self._stop_requested)
        self._time_left = TimeLeft(self._show_running)
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
        self.status.value = f'<i>{escape(what)}</i> <span style="color:#666">· {self._how}</span>'

    def _end(self, failure, stopped: bool):
        self.run_button.disabled = False
        self.stop_button.disabled = True
        seconds = time.monotonic() - self._started
        if isinstance(failure, ValueError):  # MtkitError is a ValueError
            self.error = str(failure)
            reason = escape(failure)
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
            self.status.value = f'<span style="color:#b00020">failed: {escape(failure)}</span>'
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
