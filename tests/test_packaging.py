"""The conda environment and pyproject.toml must build the same environment."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirement_map(requirements):
    """'torch==2.14.1' → {'torch': '==2.14.1'}; names normalised as pip does."""
    result = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", requirement.strip())
        result[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2).replace(" ", "")
    return result


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_names_the_same_packages_and_pins_as_pyproject():
    project = _pyproject()
    expected = _requirement_map(project["dependencies"] + project["optional-dependencies"]["test"])
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(
        item["pip"] for item in environment["dependencies"] if isinstance(item, dict)
    )
    installs_project = [line for line in pip_section if line.startswith("-e")]
    assert installs_project == ["-e .[test]"]
    listed = _requirement_map([line for line in pip_section if not line.startswith("-")])
    assert listed == expected


def test_environment_yml_uses_python_311():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in environment["dependencies"]


def test_torch_pair_is_pinned_to_the_tested_versions():
    pins = _requirement_map(_pyproject()["dependencies"])
    assert pins["torch"] == "==2.14.1"
    assert pins["torchvision"] == "==0.29.1"


def test_ci_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    assert "make test" in script
    assert "set -euo pipefail" in script
