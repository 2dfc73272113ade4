"""The shape of mtkit.evaluation: small modules, plots depending on evaluation and never the
reverse, and the old `mtkit.evaluation.metrics` names all still there."""

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import mtkit.evaluation
from mtkit.evaluation import calibration, masked_tokens, metrics, probes, stats

EVALUATION = Path(mtkit.evaluation.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(EVALUATION.glob("*.py")), ids=lambda path: path.name)
def test_evaluation_never_imports_plots(path):
    plots = {name for name in _imported_modules(path) if name.startswith("mtkit.plots")}
    assert not plots, f"{path.name} imports {plots}: figures belong in mtkit.plots.evaluation"


@pytest.mark.parametrize(
    "module", [calibration, masked_tokens, metrics, probes, stats], ids=lambda m: m.__name__
)
def test_modules_stay_small(module):
    assert len(Path(module.__file__).read_text(encoding="utf-8").splitlines()) < 400


def test_metrics_still_offers_every_name_it_had():
    old_names = [
        "ClassErrors", "ClassificationReport", "Evaluation", "Mistake", "ReliabilityCurve",
        "TemperatureScaled", "class_errors", "classification_report", "confident_mistakes",
        "embed", "evaluate", "expected_calibration_error", "fit_temperature", "knn_accuracy",
        "linear_probe_accuracy", "masked_token_error", "masked_token_forgetting",
        "mistakes_table", "model_logits", "nearest_neighbours", "reliability_curve",
    ]  # fmt: skip
    assert set(old_names) <= set(metrics.__all__)
    assert metrics.embed is probes.embed and metrics.fit_temperature is calibration.fit_temperature
    assert metrics.masked_token_error is masked_tokens.masked_token_error


def test_a_comparison_is_drawn_by_the_plots_not_by_itself():
    comparison = stats.compare({"a": [0.5, 0.6], "b": [0.6, 0.7]})
    assert not hasattr(comparison, "plot")


class _Counting(nn.Module):
    """Doubles its input and remembers the batch sizes it saw and the mode it ran in."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.batches, self.modes = [], []

    def forward(self, inputs):
        self.batches.append(len(inputs))
        self.modes.append(self.training)
        return inputs.flatten(start_dim=1) * self.scale


def test_embed_and_model_logits_run_in_batches_in_eval_mode_and_restore_the_mode():
    model, inputs = _Counting(), torch.arange(20.0).reshape(10, 2)
    codes = probes.embed(model, inputs, batch_size=4)
    np.testing.assert_array_equal(codes, 2 * inputs.numpy())
    assert model.batches == [4, 4, 2] and not any(model.modes) and model.training
    logits = metrics.model_logits(model.eval(), inputs.double(), batch_size=16)
    assert logits.dtype == torch.float32 and not model.training


def test_fit_temperature_reads_only_logits_and_labels():
    rng = np.random.default_rng(0)
    logits, labels = 3 * rng.normal(size=(200, 3)), rng.integers(0, 3, 200)
    validation = metrics.Evaluation(labels, logits, ["a", "b", "c"])
    assert calibration.fit_temperature(validation) == calibration.fit_temperature(
        SimpleNamespace(logits=logits, labels=labels)
    )
