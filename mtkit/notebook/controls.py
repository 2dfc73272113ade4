"""The controls of a HyperparameterPanel: config fields that say their range, and their widgets.

hyperparameter   a dataclass field that also describes the widget that edits it
check_ranges     is every field of a config inside its declared range or options?
control_for      the slider, dropdown or checkbox for one such field
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets

from mtkit.core.utils import MtkitError


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


def control_for(field: dataclasses.Field, value) -> widgets.Widget:
    """The widget that edits `field` of a config, starting at `value`: a checkbox (booleans),
    a dropdown (`options`), a log slider (`log=True`) or an int or float slider, labelled with
    the field's label and range."""
    spec = field.metadata.get("widget", {})
    label = spec.get("label") or field.name.replace("_", " ").capitalize()
    unit = spec.get("unit")
    hint = _range_hint(spec, value)
    help_text = spec.get("help")
    tooltip = "; ".join(part for part in (help_text, hint) if part) or label
    description = escape(label)
    if hint:  # a second, smaller line under the label: the range and the unit
        description = (
            f'<span style="display:block;line-height:1.25">{description}</span>'
            f'<span style="display:block;line-height:1.25;font-size:85%;color:#666">'
            f"{escape(hint)}</span>"
        )
    elif unit:
        description += f" ({escape(unit)})"
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


def escape(text) -> str:
    """`text` (or an error) as HTML that shows it as it is: <, > and & escaped."""
    return html.escape(str(text), quote=False)
