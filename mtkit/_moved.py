"""Old module paths, from before the layout showed the stages: they still import, with a warning.

`import mtkit.finetune` (or `from mtkit.finetune import STRATEGIES`, or `mt.finetune`) gives the
module that now lives at mtkit.stages.finetune, the same module object, so classes and
constants are identical whichever path a notebook used. Each old path warns once with a
DeprecationWarning that names the new one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "mtkit.train": "mtkit.core.train",
    "mtkit.checkpoint": "mtkit.core.checkpoint",
    "mtkit.cache": "mtkit.core.cache",
    "mtkit.distributed": "mtkit.core.distributed",
    "mtkit.utils": "mtkit.core.utils",
    "mtkit.pretrain": "mtkit.stages.pretrain",
    "mtkit.finetune": "mtkit.stages.finetune",
    "mtkit.selftrain": "mtkit.stages.selftrain",
    "mtkit.adapters": "mtkit.stages.adapters",
    "mtkit.evaluate": "mtkit.evaluation.metrics",
    "mtkit.stats": "mtkit.evaluation.stats",
    "mtkit.drift": "mtkit.evaluation.drift",
    "mtkit.text_experiments": "mtkit.experiments.text",
    "mtkit.pretrained_experiments": "mtkit.experiments.pretrained",
    "mtkit.widgets": "mtkit.notebook.panel",
    "mtkit.thread_output": "mtkit.notebook.thread_output",
    "mtkit.evaluation_plots": "mtkit.plots.evaluation",
}


def new_name(old: str) -> str | None:
    """The current dotted name of an old module path (or of a module below it), or None."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before) :]
    return None


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old name still works but will go", DeprecationWarning,
        stacklevel=stacklevel,
    )  # fmt: skip


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of old paths with the module at its new path (one object, two names)."""

    def find_spec(self, fullname, path=None, target=None):
        if new_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        target = new_name(spec.name)
        warn_moved(spec.name, target, stacklevel=6)
        module = importlib.import_module(target)
        self._real_spec = module.__spec__  # the import system overwrites it; put it back below
        return module

    def exec_module(self, module):
        module.__spec__ = self._real_spec


def install() -> None:
    """Put the finder first, so an old path never loads a second copy of a module."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
