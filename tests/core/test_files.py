"""Names that become paths, and the one bounded JSON/TOML loader (mtkit.core.files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mtkit.core.files import (
    MAX_DEPTH,
    check_folder,
    check_name,
    child,
    load_json,
    load_toml,
    parse_json,
    path_inside,
)
from mtkit.core.utils import MtkitError

BAD_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "../../outside",
    "a/b",
    "/abs",
    "a\\b",
    "a\x00b",
    "line\nbreak",
    "tab\there",
    "x" * 256,
    "é" * 128,  # 256 bytes in UTF-8
    "\udcff",  # a byte of a non-UTF-8 file name, as Python reads it
    "run-\udc80\udcff",
    None,
    3,
    b"name",
    ["a"],
]
GOOD_NAMES = ["a", "pretrain", "my run", "run.v2", "...x", "é" * 127, "x" * 255, "数据", "-a"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_name_that_cannot_be_one_plain_file_name_is_an_error_naming_the_argument(name):
    with pytest.raises(MtkitError, match="the stage names files and folders"):
        check_name("the stage", name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_a_plain_name_passes_and_makes_a_file(name, tmp_path):
    assert check_name("the stage", name) == name
    path = child(tmp_path, name, "the stage")
    path.write_text("x")
    assert path.parent == tmp_path


@pytest.mark.parametrize(
    "relative", ["../x", "a/../../x", "/etc/passwd", "a//b", "", "./a", "a/\x00"], ids=repr
)
def test_a_relative_path_must_stay_inside_its_folder(relative, tmp_path):
    with pytest.raises(MtkitError, match="its checkpoint"):
        path_inside(tmp_path, relative, "its checkpoint")


def test_a_symlink_that_leads_outside_its_folder_is_refused(tmp_path):
    inside, outside = tmp_path / "run", tmp_path / "outside.pt"
    (inside / "checkpoints").mkdir(parents=True)
    outside.write_text("x")
    os.symlink(outside, inside / "checkpoints" / "a.pt")
    with pytest.raises(MtkitError, match="leads outside"):
        child(inside / "checkpoints", "a", "the stage", ".pt")
    assert path_inside(inside, "checkpoints/b.pt", "x") == inside / "checkpoints" / "b.pt"


@pytest.mark.parametrize(
    "folder",
    ["", "a\x00b", "runs/\udcff", "x" * 256, "a/" + "y" * 300, "z/" * 2100, None, 5, b"runs"],
    ids=repr,
)
def test_a_folder_that_cannot_be_one_is_an_error_naming_the_argument(folder):
    with pytest.raises(MtkitError, match="runs_dir"):
        check_folder("runs_dir", folder)


def test_a_folder_may_be_relative_absolute_or_a_path(tmp_path):
    assert check_folder("out", "runs") == Path("runs")
    assert check_folder("out", "results/demo") == Path("results", "demo")
    assert check_folder("out", tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert check_folder("out", "~/runs") == Path("~/runs")  # expanded by whoever opens it


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


DEEP = 5000  # far beyond Python's recursion limit: a RecursionError without the bound
BAD_JSON = {
    "deep arrays": deep_json(DEEP),
    "deep objects": '{"a":' * DEEP + "1" + "}" * DEEP,
    "just too deep": deep_json(MAX_DEPTH + 1),
    "not JSON": "{not json",
    "cut short": '{"a": [1, 2',
    "a huge integer": "1" * 5000,
}


@pytest.mark.parametrize("text", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_bad_json_is_an_error_naming_the_file(text, tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(text)
    with pytest.raises(MtkitError, match=r"summary\.json (is not valid JSON|is nested more)"):
        load_json(path)


def test_json_reading_bounds_size_encoding_and_missing_files(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(MtkitError, match=r"a\.json is not valid JSON: it is not UTF-8.*offset 7"):
        load_json(path)
    path.write_text("[1, 2, 3]")
    with pytest.raises(MtkitError, match="too large"):
        load_json(path, max_bytes=4)
    with pytest.raises(MtkitError, match="cannot read"):
        load_json(tmp_path / "missing.json")


def test_json_within_the_bounds_reads_as_before(tmp_path):
    text = deep_json(MAX_DEPTH) + " "
    assert parse_json(text, "x") is not None
    tricky = '{"brackets in a string": "' + "[{" * 500 + '\\"[", "n": NaN}'
    assert parse_json(tricky, "x")["brackets in a string"].startswith("[{[{")
    with pytest.raises(MtkitError, match="x is not valid JSON: expected text"):
        parse_json(b"[]", "x")


BAD_TOML = {
    "deep arrays": "a = " + deep_json(DEEP),
    "deep inline tables": "a = " + "{b = " * DEEP + "1" + "}" * DEEP,
    "deep dotted keys": "a." * DEEP + "b = 1",
    "deep table header": "[" + "a." * DEEP + "b]\nx = 1",
    "just too deep": "a = " + deep_json(MAX_DEPTH + 1),
    "dotted keys in a dotted table": "[" + "a." * 60 + "b]\n" + "c." * 60 + "d = 1\n",
    "not TOML": "[finetune\n",
    "a huge integer": "x = " + "1" * 5000,
}


@pytest.mark.parametrize("text", BAD_TOML.values(), ids=BAD_TOML.keys())
def test_bad_toml_is_an_error_naming_the_file(text, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(text)
    wrong = r"config\.toml (is not valid TOML|is nested more|has a key of more)"
    with pytest.raises(MtkitError, match=wrong):
        load_toml(path)


def test_toml_strings_and_comments_may_hold_any_brackets(tmp_path):
    path = tmp_path / "config.toml"
    many = "[" * 300
    path.write_text(
        f"a = \"\"\"{many}\"\"\"\nb = '''{many}'''\n# {many}\nc = \"{many}\"\nd = '{many}'\n"
        'e = """ends with a quote""""\n'
        "f = " + deep_json(MAX_DEPTH) + "\n"
    )
    values = load_toml(path)
    assert values["a"] == values["b"] == values["c"] == values["d"] == many
    assert values["e"] == 'ends with a quote"'
    path.write_bytes(b"name = '\xff'\n")
    with pytest.raises(MtkitError, match="is not valid TOML: it is not UTF-8"):
        load_toml(path)


def test_a_toml_key_of_very_many_dotted_parts_is_refused_before_parsing(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("a." * 40_000 + "b = 1\n")  # tomllib alone: about 45 s, then a dict
    with pytest.raises(MtkitError, match=r"config\.toml has a key of more than 100 dotted"):
        load_toml(path)
    path.write_text("x = 'a." + "a." * 200 + "'\ny = [" + "1.5, " * 200 + "]\nz.y.x = 1\n")
    assert load_toml(path)["z"] == {"y": {"x": 1}}  # dots in strings and numbers are fine
