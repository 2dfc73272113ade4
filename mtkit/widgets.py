"""HyperparameterPanel: sliders and a Run button built from a dataclass config.

A notebook declares its knobs once, as a dataclass whose fields say their range:

    @dataclass
    class Config:
        epochs: int = hyperparameter(30, low=1, high=200, label="Epochs")
        learning_rate: float = hyperparameter(3e-3, low=1e-4, high=1e-1, log=True,
                                              label="Learning rate")
        noise: str = hyperparameter("gaussian", options=["none", "gaussian", "masking"])

    panel = HyperparameterPanel(Config(), run=train)   # train(config, callbacks) -> anything
    panel                 # shows the controls
    panel.run()           # runs with the current values; headless runs (nbval) call this

`panel.config` is always a fresh `Config` holding the values the sliders show. Bad values (a
ValueError from the config or from the run, such as a batch larger than the data) are shown as a
message inside the panel instead of a traceback.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from mtkit.train import Callback
from mtkit.utils import MtkitError


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
    `unit` is shown after it, `help` appears on hover.
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
        import matplotlib.pyplot as plt

        self._last_draw = time.monotonic()
        figure, axes = plt.subplots(figsize=(5, 2.8))
        history.plot(ax=axes)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        plt.close(figure)
        # Replacing the Output's contents (rather than printing into it) swaps the picture in
        # one step, without flicker, and works the same with or without a live kernel.
        picture = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {"image/png": picture, "text/plain": "<loss curves>"},
                "metadata": {},
            },
        )


class HyperparameterPanel:
    """Controls for every `hyperparameter` field of a dataclass config, a Run button and outputs.

    config: a dataclass instance (its values are the starting values) or a dataclass type.
    run: `fn(config, callbacks) -> result`, called by the button and by `panel.run()`; pass
        `callbacks` on to `mtkit.fit` to get the live loss plot.
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
        self.run_button.on_click(lambda _button: self.run())
        self.status = widgets.HTML("")
        self.message = widgets.HTML("")
        self.plot = widgets.Output(layout=widgets.Layout(min_height="40px"))
        self.output = widgets.Output()
        heading = widgets.HTML(f"<b>{title}</b>") if title else widgets.HTML("")
        grid = widgets.GridBox(
            list(self.controls.values()),
            layout=widgets.Layout(grid_template_columns="repeat(2, minmax(260px, 1fr))"),
        )
        buttons = widgets.HBox([self.run_button, self.status])
        self.widget = widgets.VBox(
            [heading, grid, buttons, self.message, self.plot, self.output],
            layout=widgets.Layout(max_width="900px"),
        )

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
        """Run `fn(config, callbacks)` (default: the panel's) with the current values.

        Returns its result (also kept in `panel.result`), or None when the values were invalid;
        the reason is then shown in the panel and kept in `panel.error`.
        """
        fn = fn or self._fn
        if fn is None:
            raise MtkitError("no function to run: pass run=... to the panel or to panel.run()")
        self.error = None
        self.message.value = ""
        self.run_button.disabled = True
        self.status.value = (
            "<i>running… (interrupt the kernel ■ to stop; best weights are kept)</i>"
        )
        self.output.clear_output()
        self.plot.clear_output()
        started = time.monotonic()
        failure = None
        try:
            # Inside a kernel, `with output:` swallows exceptions (it shows them in the widget),
            # so they are caught within the block to reach the panel's message or the caller.
            with self.output:
                try:
                    self.result = fn(self.config, [LiveLossPlot(self.plot)])
                except Exception as error:  # re-raised below unless it is bad input
                    failure = error
        finally:
            self.run_button.disabled = False
        if isinstance(failure, ValueError):  # MtkitError is a ValueError
            self.error = str(failure)
            reason = _escape(failure)
            self.message.value = (
                f'<div style="color:#b00020">⚠ Cannot run with these values: {reason}</div>'
            )
            self.status.value = ""
            return None
        if failure is not None:
            self.status.value = ""
            raise failure
        self.status.value = f"done in {time.monotonic() - started:.1f} s"
        return self.result

    def _ipython_display_(self):
        display(self.widget)


def _control_for(field: dataclasses.Field, value) -> widgets.Widget:
    spec = field.metadata.get("widget", {})
    label = spec.get("label") or field.name.replace("_", " ").capitalize()
    if spec.get("unit"):
        label = f"{label} ({spec['unit']})"
    common = dict(
        description=label,
        tooltip=spec.get("help") or label,
        style={"description_width": "150px"},
        layout=widgets.Layout(width="auto"),
    )
    if isinstance(value, bool):
        return widgets.Checkbox(value=value, indent=False, **common)
    if spec.get("options") is not None:
        return widgets.Dropdown(options=list(spec["options"]), value=value, **common)
    low, high = spec["low"], spec["high"]
    if spec.get("log"):
        return widgets.FloatLogSlider(
            value=value,
            base=10,
            min=math.log10(low),
            max=math.log10(high),
            step=spec.get("step") or 0.1,
            readout_format=".1e",
            **common,
        )
    if isinstance(value, int):
        return widgets.IntSlider(
            value=value, min=int(low), max=int(high), step=int(spec.get("step") or 1), **common
        )
    step = spec.get("step") or (high - low) / 100
    return widgets.FloatSlider(value=value, min=low, max=high, step=step, **common)


def _escape(error: Exception) -> str:
    return str(error).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
