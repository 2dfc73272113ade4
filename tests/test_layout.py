"""The layout stays readable: no import cycles, short functions and modules, layers in order."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mtkit"
# A layer may import its own layer and the ones before it, never a later one.
LAYERS = ["core", "data", "models", "stages", "evaluation", "experiments", "pipeline", "plots",
          "notebook"]  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(path: Path, package: str) -> set[str]:
    """mtkit modules `path` imports anywhere (lazily inside functions too), except in the
    module-level `__getattr__` that answers old names."""
    tree = ast.parse(path.read_text())
    skip = {
        id(node)
        for fn in tree.body
        if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__"
        for node in ast.walk(fn)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # `from mtkit.core import batches` imports a module; `from X import f` imports X.
                candidate = f"{node.module}.{alias.name}"
                names.add(candidate if candidate in modules() else node.module)
    return {name for name in names if name.startswith("mtkit.") and name != package}


def graph() -> dict[str, set[str]]:
    """Module → modules it imports, leaving out the re-exporting package __init__ files."""
    every = modules()
    edges = {}
    for name, path in every.items():
        if path.name == "__init__.py":
            continue
        targets = set()
        for target in imported(path, name):
            if target in every and every[target].name == "__init__.py":
                # A package import: what it re-exports comes from the package's own modules.
                targets |= {t for t in imported(every[target], target) if t.startswith(target)}
            else:
                targets.add(target)
        edges[name] = {t for t in targets if t in every and every[t].name != "__init__.py"}
    return edges


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else None


def test_layers_import_only_themselves_and_earlier_layers():
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if layer(module) is not None and layer(target) is not None and layer(target) > layer(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_function_over_80_lines_and_no_module_over_400():
    long_functions, long_modules = [], []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > 400:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert not long_functions, long_functions
    assert not long_modules, long_modules


MOVED_EXAMPLES = [
    ("mtkit.finetune", "mtkit.stages.finetune"),
    ("mtkit.adapters.lora", "mtkit.stages.adapters.lora"),
]


@pytest.mark.parametrize("old, new", MOVED_EXAMPLES)
def test_old_module_paths_still_import_the_same_module_with_a_warning(old, new):
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_importing_mtkit_uses_no_old_name():
    import subprocess
    import sys

    command = [sys.executable, "-W", "error::DeprecationWarning", "-c", "import mtkit"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
