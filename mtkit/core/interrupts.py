"""Ctrl-C at a safe moment: hold an interrupt until work that must not be cut in half is done.

A KeyboardInterrupt (a terminal's Ctrl-C, Jupyter's ■, both a SIGINT) is raised at whatever
Python instruction runs when it arrives. Inside an `import` that leaves the half-imported
package broken for the rest of the process, which in a notebook means until the kernel is
restarted. This happens for real: the first optimizer a fresh process builds (or steps) makes
torch import torch._dynamo, about 870 modules (sympy, mpmath, torch._inductor, ...) and a
second of work; an interrupt there made every later fit fail with "module 'sympy' has no
attribute 'logic'". So `fit` does that import, and its setup and first step, with interrupts
held:

    with hold_interrupts():      # a Ctrl-C in here waits for the end of the block,
        ...                      # then raises KeyboardInterrupt as it would have

A second Ctrl-C while one is held is delivered at once: the way out of a block that hangs.
Only the main thread receives signals; in any other thread (e.g. a panel's background run,
which Stop ends by its own route) the block runs as it is.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

# What torch imports lazily the first time an optimizer is built or steps (measured on torch
# 2.x: sys.modules before and after a first AdamW, Adam and SGD and their first step).
LAZY_TORCH_MODULES = ("torch._dynamo",)


def _can_hold() -> bool:
    """Whether SIGINT can be held here: in the main thread, with a Python handler installed
    (not SIG_IGN / SIG_DFL, which Python does not turn into a KeyboardInterrupt anyway)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    return callable(signal.getsignal(signal.SIGINT))


@contextmanager
def hold_interrupts():
    """Hold a SIGINT that arrives during the block; deliver it (through the handler that was
    installed, so a KeyboardInterrupt) once the block has ended normally. A block that raises
    ends with its own exception. Nested blocks hold until the outermost ends."""
    if not _can_hold():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    held = []

    def hold(signum, frame):
        if held:  # the second Ctrl-C: whoever presses it wants out now
            signal.signal(signal.SIGINT, previous)
            previous(signum, frame)
        held.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        previous(signal.SIGINT, None)


def import_lazy_torch_modules() -> None:
    """Import LAZY_TORCH_MODULES now, with interrupts held, so that no Ctrl-C can land in the
    middle of them later (a no-op once they are imported)."""
    missing = [name for name in LAZY_TORCH_MODULES if name not in sys.modules]
    if not missing:
        return
    import importlib

    with hold_interrupts():
        for name in missing:
            importlib.import_module(name)
