"""Config dataclasses and TOML, for any config made of `option(...)` fields and sections:

    option           a dataclass field with the help text `--help` prints and its allowed values
    read_section     a config dataclass from nested dicts (parsed TOML), each value checked
    check_fields     the same checks for a config dataclass built in Python (its __post_init__)
    describe_fields  every field with its default, choices and help: the text of `--help`
    to_toml          nested dicts back to TOML

The pipeline's own sections and checks are in config.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
import types
import typing
from dataclasses import field
from types import NoneType

from mtkit.core.files import is_kind
from mtkit.core.utils import MtkitError


def option(default, help: str, choices=None):
    """A config field with the help text `--help` prints and, optionally, its allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices})


def read_section(cls, values, prefix: str):
    """cls(**values) for a config dataclass, each value checked; `prefix` ("finetune.") names
    the fields in error messages. Nested sections are read the same way."""
    where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
    if not isinstance(values, dict):
        raise MtkitError(f"{prefix.rstrip('.')} must be a [section] of fields, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [name for name in values if name not in fields]
    if unknown:
        raise MtkitError(f"unknown field {prefix}{unknown[0]}; {where} has: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    checked = {}
    for name, value in values.items():
        if dataclasses.is_dataclass(hints[name]):
            checked[name] = read_section(hints[name], value, f"{prefix}{name}.")
        else:
            checked[name] = _check_value(f"{prefix}{name}", value, hints[name], fields[name])
    return cls(**checked)


def check_fields(config) -> None:
    """Check every field of config dataclass instance `config` as read_section checks a value
    read from TOML (so a config built in Python, e.g. PretrainConfig(max_epochs="5"), fails
    the same way, naming the field); lists given for tuple fields become tuples. Sections
    (fields that are config dataclasses) must be instances of their class."""
    prefix = f"{config.section}." if getattr(config, "section", "") else ""
    hints = typing.get_type_hints(type(config))
    for field_ in dataclasses.fields(config):
        name, hint, value = field_.name, hints[field_.name], getattr(config, field_.name)
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise MtkitError(
                    f"{prefix}{name} must be a {hint.__name__}, got {type(value).__name__}"
                )
        else:
            setattr(config, name, _check_value(f"{prefix}{name}", value, hint, field_))


def _check_value(name: str, value, hint, field_: dataclasses.Field):
    """`value` if it has the field's type (ints pass as floats, bools are not numbers, numbers
    are finite) and is an allowed choice; lists given for tuple fields become tuples."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)  # e.g. int | None
    if value is None and union and NoneType in typing.get_args(hint):
        return value  # absent (TOML has no None; Python callers may say it)
    kinds = [kind for kind in (typing.get_args(hint) if union else (hint,)) if kind is not NoneType]
    ok = False
    for kind in kinds:
        if typing.get_origin(kind) is tuple:  # tuple[int, ...] is a TOML array
            element = typing.get_args(kind)[0]
            if isinstance(value, (list, tuple)) and all(is_kind(v, element) for v in value):
                value, ok = tuple(value), True
        elif is_kind(value, kind):
            ok = True
        if ok:
            break
    items = value if isinstance(value, tuple) else (value,)
    if ok and any(isinstance(v, float) and not math.isfinite(v) for v in items):
        raise MtkitError(f"{name} must be a finite number, got {value!r}")  # TOML has nan, inf
    if not ok:
        wanted = " or ".join(_kind_name(kind) for kind in kinds)
        raise MtkitError(f"{name} must be {wanted}, got {value!r:.100}")
    choices = field_.metadata.get("choices")
    if choices is not None:
        for item in value if isinstance(value, tuple) else (value,):
            if item not in choices:
                raise MtkitError(f"{name}: {item!r} is not allowed; choose one of {list(choices)}")
    return value


def _kind_name(kind) -> str:
    if typing.get_origin(kind) is tuple:
        element = typing.get_args(kind)[0]
        return f"a list of {'integers' if element is int else _kind_name(element)}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, str(kind)
    )


def describe_fields(cls) -> str:
    """Every field of config dataclass `cls` (sections included) with its default, allowed
    values and meaning: what `python -m mtkit run --help` prints."""
    lines = []

    def describe(cls, prefix: str):
        hints = typing.get_type_hints(cls)
        sections = []
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                sections.append((hints[f.name], f.name))
                continue
            default = f.default
            shown = "(absent)" if default is None else _toml_value(default)
            lines.append(f"  {f.name} = {shown}")
            text = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                text += f"; one of: {', '.join(str(c) for c in f.metadata['choices'])}"
            lines.extend(textwrap.wrap(text, 96, initial_indent=" " * 6, subsequent_indent=" " * 6))
        for section_cls, name in sections:
            lines.append(f"\n[{name}]  {section_cls.__doc__.split(': ', 1)[-1]}")
            describe(section_cls, f"{name}.")

    describe(cls, "")
    return "\n".join(lines)


def to_toml(values: dict) -> str:
    """Nested dicts of numbers, strings, booleans and lists as TOML (None values left out)."""
    lines = [
        f"{k} = {_toml_value(v)}"
        for k, v in values.items()
        if v is not None and not isinstance(v, dict)
    ]
    for name, section in values.items():
        if isinstance(section, dict):
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in section.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)
