"""Drive the HyperparameterPanel as a learner would: move controls, click Run."""

from dataclasses import dataclass

import ipywidgets as widgets
import pytest
import torch

import mtkit as mt
from mtkit.utils import MtkitError
from mtkit.widgets import HyperparameterPanel, check_ranges, hyperparameter


@dataclass
class TinyConfig:
    epochs: int = hyperparameter(3, low=1, high=20, label="Epochs")
    learning_rate: float = hyperparameter(
        1e-2, low=1e-4, high=1e-1, log=True, label="Learning rate"
    )
    batch_size: int = hyperparameter(16, low=1, high=512, label="Batch size", unit="images")
    optimizer: str = hyperparameter("adamw", options=["adamw", "sgd"], label="Optimizer")
    shuffle: bool = True


def train_tiny(config, callbacks):
    torch.manual_seed(0)
    inputs = torch.randn(64, 4)
    targets = inputs.sum(dim=1, keepdim=True)
    model = torch.nn.Linear(4, 1)
    return mt.fit(
        model,
        lambda model, batch: torch.nn.functional.mse_loss(model(batch[0]), batch[1]),
        (inputs, targets),
        epochs=config.epochs,
        lr=config.learning_rate,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        callbacks=callbacks,
        progress=False,
        device="cpu",
    )


def test_controls_match_the_field_types():
    panel = HyperparameterPanel(TinyConfig(), run=train_tiny)
    assert isinstance(panel.controls["epochs"], widgets.IntSlider)
    assert isinstance(panel.controls["learning_rate"], widgets.FloatLogSlider)
    assert isinstance(panel.controls["optimizer"], widgets.Dropdown)
    assert isinstance(panel.controls["shuffle"], widgets.Checkbox)
    assert panel.controls["batch_size"].description == "Batch size (images)"


def test_config_reflects_moved_controls():
    panel = HyperparameterPanel(TinyConfig, run=train_tiny)
    panel.controls["epochs"].value = 7
    panel.set(optimizer="sgd", shuffle=False)
    config = panel.config
    assert isinstance(config, TinyConfig)
    assert (config.epochs, config.optimizer, config.shuffle) == (7, "sgd", False)


def test_clicking_run_trains_and_draws_the_loss_plot():
    panel = HyperparameterPanel(TinyConfig(), run=train_tiny)
    panel.set(epochs=4)
    panel.run_button.click()
    assert isinstance(panel.result, mt.History)
    assert len(panel.result) == 4
    assert panel.error is None
    assert panel.run_button.disabled is False
    assert panel.status.value.startswith("done in")
    assert len(panel.plot.outputs) == 1  # the live loss figure


def test_invalid_value_shows_a_message_instead_of_a_traceback():
    panel = HyperparameterPanel(TinyConfig(), run=train_tiny)
    panel.set(batch_size=500)  # larger than the 64 training examples
    assert panel.run() is None
    assert "batch_size" in panel.error
    assert "Cannot run" in panel.message.value
    assert panel.run_button.disabled is False


def test_a_bug_in_the_run_function_is_not_hidden():
    def broken(config, callbacks):
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        HyperparameterPanel(TinyConfig(), run=broken).run()


def test_out_of_range_config_is_rejected():
    with pytest.raises(MtkitError, match=r"Epochs must lie in \[1, 20\]"):
        check_ranges(TinyConfig(epochs=50))


def test_bad_declarations_fail_early():
    with pytest.raises(MtkitError, match="low <= default <= high"):
        hyperparameter(5, low=10, high=20)
    with pytest.raises(MtkitError, match="not one of the options"):
        hyperparameter("adam", options=["sgd"])
    with pytest.raises(MtkitError, match="log-scale"):
        hyperparameter(1.0, low=0.0, high=2.0, log=True)
    with pytest.raises(MtkitError, match="dataclass"):
        HyperparameterPanel({"epochs": 3})
    with pytest.raises(MtkitError, match="no control named"):
        HyperparameterPanel(TinyConfig()).set(epoch=3)
