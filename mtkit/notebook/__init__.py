"""Notebook helpers: the hyperparameter panel (panel.py, with its controls in controls.py and
the callbacks it gives `fit` in run_callbacks.py) and the routing of a background thread's
output into it (thread_output.py)."""

from mtkit.notebook import panel, thread_output  # noqa: F401
