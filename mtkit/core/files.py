"""Names that become paths, and reading JSON and TOML files, with bounds and clear errors.

Names: every name mtkit turns into a file or folder name (a run, a stage, an adapter, a cache
entry) goes through `check_name`; a relative path read from a file goes through `path_inside`,
which also makes sure the resolved result stays inside its folder. A folder the user names
(`--runs-dir`, `--out`) goes through `check_folder`.

Reading: every JSON and TOML file mtkit reads goes through `load_json` / `load_toml` (and JSON
text held elsewhere, such as a checkpoint's metadata, through `parse_json`). They bound

    the size     MAX_JSON_BYTES (256 MiB: a long run's metrics.jsonl or a large vocabulary is a
                 few MB, so this only stops a wrong or hostile file from filling the memory)
                 and MAX_TOML_BYTES (4 MiB: a config is a few hundred bytes);
    the nesting  MAX_DEPTH (100 levels of arrays and tables/objects; mtkit writes at most 5).
                 Python's parsers recurse once per level, so a file nested a few thousand
                 levels deep would otherwise raise RecursionError. The brackets are counted
                 (outside strings and comments) before parsing, which bounds what the parser
                 recurses into; TOML's dotted keys (a.b.c = 1) nest without brackets and
                 are measured on the parsed result.

and raise MtkitError naming the file and what is wrong: not UTF-8 (with the byte offset), too
large, too deep, or not valid JSON/TOML (with the line and column).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tomllib
from pathlib import Path

from mtkit.core.utils import MtkitError

MAX_NAME_BYTES = 255  # what ext4, APFS, NTFS and most other file systems allow for one name
MAX_PATH_BYTES = 4096  # Linux's PATH_MAX
MAX_JSON_BYTES = 256 * 1024 * 1024
MAX_TOML_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 100

_SEPARATORS = {"/", "\\"}  # "\\" too: a name made on Linux may be opened on Windows
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(what: str, name) -> str:
    """`name` if it can be used as one file or folder name as it is; returns it.

    A plain name: a non-empty string, not "." or "..", without a path separator ("/" or "\\")
    or control characters (NUL, newline, ...), valid UTF-8 text (no surrogate-escaped bytes
    such as "\\udcff", which a non-UTF-8 file name read by Python holds), at most
    MAX_NAME_BYTES bytes in UTF-8. `what` names the argument in the error, e.g. "a stage's name".
    """
    if not isinstance(name, str):
        raise MtkitError(f"{what} names files and folders: it must be a string, got {name!r:.100}")
    problem = _name_problem(name)
    if problem:
        raise MtkitError(
            f"{what} names files and folders, so it must be a plain file name: {problem}, "
            f"got {name!r:.100}"
        )
    return name


def _name_problem(name: str) -> str:
    """What makes `name` unusable as a plain file name ("" if nothing)."""
    if name in ("", ".", ".."):
        return "not empty, '.' or '..'"
    if any(separator in name for separator in _SEPARATORS):
        return "no '/' or '\\'"
    if _CONTROL.search(name):
        return "no control characters (NUL, newline, tab, ...)"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "valid UTF-8 text (it holds undecodable bytes, e.g. from a non-UTF-8 file name)"
    if size > MAX_NAME_BYTES:
        return f"at most {MAX_NAME_BYTES} bytes in UTF-8 (it has {size})"
    return ""


def check_folder(what: str, folder) -> Path:
    """`folder` (a str or os.PathLike naming a folder, existing or not) as a Path; returns it.

    MtkitError unless it is non-empty, without NUL, valid UTF-8, each part at most
    MAX_NAME_BYTES bytes and the whole at most MAX_PATH_BYTES.
    """
    if not isinstance(folder, (str, os.PathLike)) or isinstance(folder, bytes):
        raise MtkitError(f"{what} must be a folder (a str or Path), got {folder!r:.100}")
    text = os.fspath(folder)
    if not isinstance(text, str) or not text:
        raise MtkitError(f"{what} must name a folder, got {folder!r:.100}")
    problem = ""
    if "\x00" in text:
        problem = "a NUL character"
    else:
        try:
            size = len(text.encode("utf-8"))
            longest = max(len(part.encode("utf-8")) for part in re.split(r"[/\\]", text))
        except UnicodeEncodeError:
            problem = "bytes that are not UTF-8 text"
        else:
            if size > MAX_PATH_BYTES:
                problem = f"{size} bytes (at most {MAX_PATH_BYTES})"
            elif longest > MAX_NAME_BYTES:
                problem = f"a part of {longest} bytes (at most {MAX_NAME_BYTES} each)"
    if problem:
        raise MtkitError(f"{what} cannot be a folder: it holds {problem}, got {text!r:.100}")
    return Path(text)


def path_inside(folder, relative, what: str) -> Path:
    """folder/relative, where `relative` is a relative path such as "checkpoints/a.pt"; returns
    it. Each of its parts must pass check_name, and the resolved result (symlinks followed)
    must lie inside the resolved `folder`; MtkitError naming `what` otherwise."""
    if not isinstance(relative, str):
        raise MtkitError(f"{what} must be a relative path (a string), got {relative!r:.100}")
    parts = relative.split("/")
    for part in parts:
        check_name(what, part)
    folder = Path(folder)
    target = folder.joinpath(*parts)
    try:
        inside = target.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as error:  # a symlink loop, a folder that cannot be read
        raise MtkitError(f"{what} {relative!r}: cannot resolve {target} ({error})") from None
    if not inside:
        raise MtkitError(f"{what} {relative!r} leads outside {folder} (through a symlink)")
    return target


def child(folder, name, what: str, suffix: str = "") -> Path:
    """folder/(name + suffix), `name` checked with check_name and the result kept inside
    `folder` (see path_inside); returns the path."""
    check_name(what, name)
    return path_inside(folder, name + suffix, what)


def new_folder(parent: Path, stem: str, what: str) -> Path:
    """Make a new folder parent/stem (parent/stem-2, -3, ... when that exists; parents are
    made too); returns it. Two callers never get the same folder. MtkitError naming `what`
    if `stem` (with a counter) cannot be a name or the folder cannot be made (`parent` is a
    file, read-only, ...)."""
    check_name(f"{what}'s name", stem + "-999")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for attempt in itertools.count(1):
            folder = parent / (stem if attempt == 1 else f"{stem}-{attempt}")
            try:
                folder.mkdir()  # fails if it exists: two callers never share a folder
                return folder
            except FileExistsError:
                if not folder.is_dir():  # a file of that name: it can never become a folder
                    raise
    except OSError as error:
        reason = error.strerror or type(error).__name__
        where = f" ({error.filename})" if error.filename else ""
        raise MtkitError(f"cannot make {what} {parent}: {reason}{where}") from None
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Reading JSON and TOML, and checking what was read.


def read_text(path, max_bytes: int, kind: str = "text") -> str:
    """The UTF-8 text of file `path`; MtkitError naming the file if it is larger than
    `max_bytes`, not UTF-8, or cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)  # never more than the bound, whatever the file
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise MtkitError(f"cannot read {path}: {reason}") from None
    if len(data) > max_bytes:
        raise MtkitError(f"{path} is too large to be {kind}: more than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = data[error.start : error.start + 1].hex()
        raise MtkitError(
            f"{path} is not valid {kind}: it is not UTF-8 text (byte 0x{bad} at offset "
            f"{error.start})"
        ) from None


def load_json(path, max_bytes: int = MAX_JSON_BYTES):
    """The JSON value in file `path` (see the module docstring for the bounds)."""
    return parse_json(read_text(path, max_bytes, "JSON"), str(path))


def parse_json(text, where: str):
    """The JSON value in `text`; `where` names it in errors (a file, "line 3 of a.jsonl").

    MtkitError if it is not a string, not valid JSON, or nested more than MAX_DEPTH deep.
    """
    if not isinstance(text, str):
        raise MtkitError(f"{where} is not valid JSON: expected text, got {type(text).__name__}")
    check_json_depth(text, where)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise MtkitError(
            f"{where} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise MtkitError(f"{where} is not valid JSON: {_first_clause(error)}") from None
    except RecursionError:  # cannot happen after check_json_depth, unless the stack is nearly full
        raise MtkitError(f"{where} is nested too deeply to read") from None


def load_json_lines(path, last_may_be_cut: bool = False, max_bytes: int = MAX_JSON_BYTES):
    """[(line number, value), ...] for the JSON value on each non-blank line of file `path`
    (JSON Lines), each line bounded as parse_json bounds it. last_may_be_cut: a last line
    that is not valid (a writer killed mid-line) is left out instead of raising."""
    lines = read_text(path, max_bytes, "JSON lines").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, parse_json(line, f"{path}, line {number},")))
        except MtkitError:
            if not (last_may_be_cut and number == len(lines)):
                raise
    return rows


def load_toml(path, max_bytes: int = MAX_TOML_BYTES) -> dict:
    """The table in TOML file `path`, as nested dicts (see the module docstring for the bounds)."""
    text = read_text(path, max_bytes, "TOML")
    _check_depth(text, str(path), _TOML_TOKENS)
    try:
        values = tomllib.loads(text)
    except ValueError as error:  # TOMLDecodeError, or e.g. an integer of 5000 digits
        raise MtkitError(f"{path} is not valid TOML: {_first_clause(error)}") from None
    except RecursionError:
        raise MtkitError(f"{path} is nested too deeply to read") from None
    # Dotted keys nest without brackets; the file's own table is not a level.
    if _parsed_depth(values) - 1 > MAX_DEPTH:
        raise MtkitError(f"{path} is nested more than {MAX_DEPTH} levels deep")
    return values


def _first_clause(error: Exception) -> str:
    """The parser's message up to its first ";" (Python's advice after it is not for users)."""
    return str(error).split(";")[0]


# Strings and comments are skipped whole, so brackets inside them are not counted.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
# A TOML key of more than MAX_DEPTH dotted parts (a.b.c...) is a token of its own: tomllib
# takes time quadratic in the parts (40,000 parts: 45 s), so it is refused before parsing.
_TOML_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_TOML_TOKENS = re.compile(
    rf"(?P<run>{_TOML_KEY}(?:[ \t]*\.[ \t]*{_TOML_KEY}){{{MAX_DEPTH + 1},}})"
    r'|"""(?:[^"\\]|\\.|"(?!""))*"""(?:""?)?'  # multi-line basic string
    r"|'''[\s\S]*?'''(?:''?)?"  # multi-line literal string
    r'|"(?:[^"\\\n]|\\.)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
    r"|[\[\]{}]",
    re.DOTALL,
)


def check_json_depth(text: str, where: str) -> None:
    """MtkitError naming `where` if JSON `text` nests more than MAX_DEPTH levels (so a writer
    can refuse what no reader would read back)."""
    _check_depth(text, where, _JSON_TOKENS)


def _check_depth(text: str, where: str, tokens: re.Pattern) -> None:
    """MtkitError if `text` opens more than MAX_DEPTH brackets ([ or {) at once, or has a
    TOML key of more than MAX_DEPTH dotted parts."""
    if text.count("[") + text.count("{") <= MAX_DEPTH and text.count(".") <= MAX_DEPTH:
        return  # the common case costs three counts
    depth = 0
    for match in tokens.finditer(text):
        token = match.group()
        if match.lastgroup == "run":
            line = text.count("\n", 0, match.start()) + 1
            raise MtkitError(
                f"{where} has a key of more than {MAX_DEPTH} dotted parts (line {line})"
            )
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                raise MtkitError(
                    f"{where} is nested more than {MAX_DEPTH} levels deep (at line {line})"
                )
        elif token in ("]", "}"):
            depth -= 1


def _parsed_depth(value) -> int:
    """How deeply dicts and lists nest in `value` (0 for a number or a string), found without
    recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_DEPTH + 1:  # deep enough to fail whoever asks: stop looking
            break
        stack.extend((child_, depth + 1) for child_ in item)
    return deepest


REQUIRED = object()  # check_json_object: a field without a default


def is_kind(value, kind) -> bool:
    """Whether `value` is of `kind`, where an int is a float too but a bool is neither."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_json_object(values, fields: dict, where: str, prefix: str = "") -> dict:
    """`values` (a dict read from JSON) as a new dict with each field of `fields`, a dict of
    name -> (kinds, default), there and of one of its kinds (see is_kind); an absent field
    gets its default. MtkitError naming `where` and the field ("{prefix}{name}") when
    `values` is not a dict, has an unknown field, lacks a REQUIRED one, or has a wrong kind."""
    if not isinstance(values, dict):
        what = f"{prefix.rstrip('.')} " if prefix else ""
        raise MtkitError(f"{where}: {what}must be a JSON object, got {values!r:.60}")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise MtkitError(f"{where}: unknown field {prefix}{unknown[0]}")
    checked = {}
    for name, (kinds, default) in fields.items():
        if name not in values:
            if default is REQUIRED:
                raise MtkitError(f"{where}: field {prefix}{name} is missing")
            checked[name] = default
        elif not any(is_kind(values[name], kind) for kind in kinds):
            wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise MtkitError(
                f"{where}: field {prefix}{name} must be {wanted}, got {values[name]!r:.60}"
            )
        else:
            checked[name] = values[name]
    return checked
