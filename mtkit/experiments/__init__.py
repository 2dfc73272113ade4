"""Experiments: the method protocol, label efficiency over seeds and label counts, baselines."""

from mtkit.experiments import pretrained, text  # noqa: F401
from mtkit.experiments.efficiency import *  # noqa: F403
from mtkit.experiments.efficiency import __all__  # noqa: F401
