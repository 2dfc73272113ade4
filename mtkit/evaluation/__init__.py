"""How good is a model, and is a difference real?

metrics.py     predictions, reports, confident mistakes, per-class errors
stats.py       mean and spread, bootstrap intervals, paired comparisons over seeds
drift.py       has the data changed since training? (MMD two-sample test)
"""

from mtkit.evaluation import drift, metrics, stats  # noqa: F401
