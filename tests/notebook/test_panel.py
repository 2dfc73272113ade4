"""Drive the HyperparameterPanel as a learner would: move controls, click Run, click Stop."""

import re
import time
from dataclasses import dataclass

import ipywidgets as widgets
import pytest
import torch

import mtkit as mt
from mtkit.core.utils import MtkitError
from mtkit.notebook import panel as panel_module
from mtkit.notebook.panel import HyperparameterPanel, check_ranges, hyperparameter


@dataclass
class TinyConfig:
    epochs: int = hyperparameter(3, low=1, high=20, label="Epochs")
    learning_rate: float = hyperparameter(
        1e-2, low=1e-4, high=1e-1, log=True, label="Learning rate"
    )
    batch_size: int = hyperparameter(16, low=1, high=512, label="Batch size", unit="images")
    optimizer: str = hyperparameter("adamw", options=["adamw", "sgd"], label="Optimizer")
    shuffle: bool = True


@dataclass
class StrategyConfig:
    strategy: str = hyperparameter("linear_probe", options=["linear_probe", "full"])


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


def test_labels_are_words_with_their_range_and_unit():
    controls = HyperparameterPanel(TinyConfig()).controls
    batch = controls["batch_size"]
    assert "Batch size" in batch.description and "1 to 512 images" in batch.description
    assert "1 to 512 images" in batch.tooltip
    assert "0.0001 to 0.1, log scale" in controls["learning_rate"].description
    assert controls["optimizer"].description == "Optimizer"  # a dropdown shows its options
    assert controls["optimizer"].options == (("adamw", "adamw"), ("sgd", "sgd"))
    panel = HyperparameterPanel(StrategyConfig())
    assert panel.controls["strategy"].label == "linear probe"  # in words; the value is the name
    assert panel.set(strategy="full").config.strategy == "full"
    assert controls["shuffle"].description == "Shuffle"  # no label=: the field name, in words


def test_config_reflects_moved_controls():
    panel = HyperparameterPanel(TinyConfig, run=train_tiny)
    panel.controls["epochs"].value = 7
    panel.set(optimizer="sgd", shuffle=False)
    config = panel.config
    assert isinstance(config, TinyConfig)
    assert (config.epochs, config.optimizer, config.shuffle) == (7, "sgd", False)


def test_run_trains_and_draws_the_loss_plot():
    panel = HyperparameterPanel(TinyConfig(), run=train_tiny)
    panel.set(epochs=4)
    assert isinstance(panel.run(), mt.History)
    assert len(panel.result) == 4
    assert panel.error is None
    assert panel.run_button.disabled is False and panel.stop_button.disabled is True
    assert panel.status.value.startswith("done in")
    assert len(panel.plot.outputs) == 1  # the live loss figure


def test_clicking_run_trains_in_the_background_and_shows_its_output_in_the_panel():
    def train_and_talk(config, callbacks):
        print("training now")
        return train_tiny(config, callbacks)

    panel = HyperparameterPanel(TinyConfig(), run=train_and_talk)
    panel.set(epochs=4)
    panel.run_button.click()
    history = panel.wait(timeout=60)
    assert isinstance(history, mt.History) and len(history) == 4
    assert panel.status.value.startswith("done in")
    assert panel.run_button.disabled is False and panel.stop_button.disabled is True
    assert len(panel.plot.outputs) == 1
    printed = [o for o in panel.output.outputs if o["output_type"] == "stream"]
    assert printed and "training now" in printed[0]["text"]


def _epoch_shown(panel) -> int:
    found = re.search(r"epoch (\d+)/", panel.status.value)
    return int(found.group(1)) if found else 0


def _wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _slow_tiny(config, callbacks):
    """train_tiny with a sleep per batch, so that a test can watch it run."""

    class Slow(mt.Callback):
        def on_batch_end(self, trainer):
            time.sleep(0.005)

    return train_tiny(config, [*callbacks, Slow()])


def test_while_a_run_goes_run_is_disabled_and_stop_ends_it_keeping_the_history():
    panel = HyperparameterPanel(TinyConfig(), run=_slow_tiny)
    panel.set(epochs=20, batch_size=4)
    panel.run_button.click()
    _wait_until(lambda: _epoch_shown(panel) >= 3)
    assert "left" in panel.status.value  # the time left, from the epochs done so far
    assert panel.run_button.disabled is True and panel.stop_button.disabled is False
    with pytest.raises(MtkitError, match="still going"):
        panel.run()
    panel.stop_button.click()
    history = panel.wait(timeout=30)
    assert history.stopped_reason == "interrupted"  # fit's own KeyboardInterrupt path
    assert 3 <= len(history) < 20
    assert panel.status.value.startswith("stopped after")
    assert panel.run_button.disabled is False and panel.stop_button.disabled is True
    panel.set(epochs=3)
    assert len(panel.run()) == 3  # that Stop does not stop the next run


def test_stop_also_cancels_the_later_trainings_of_a_run():
    trained = []

    def two_trainings(config, callbacks):
        for _ in range(2):
            trained.append(_slow_tiny(config, callbacks))
        return "both"

    panel = HyperparameterPanel(TinyConfig(), run=two_trainings)
    panel.set(epochs=20, batch_size=4)
    panel.start()
    _wait_until(lambda: _epoch_shown(panel) >= 2)
    panel.stop()
    assert panel.wait(timeout=30) is None  # the run did not finish
    assert len(trained) == 1 and trained[0].stopped_reason == "interrupted"
    assert panel.status.value.startswith("stopped after")


def test_stop_waits_for_a_slow_batch_of_a_fit_that_has_the_panel_callbacks(monkeypatch):
    monkeypatch.setattr(panel_module, "STOP_GRACE_SECONDS", 0.05)

    class SlowBatches(mt.Callback):
        def on_batch_end(self, trainer):
            time.sleep(0.3)  # much longer than the grace outside fit

    panel = HyperparameterPanel(
        TinyConfig(), run=lambda c, cbs: train_tiny(c, [*cbs, SlowBatches()])
    )
    panel.set(epochs=20, batch_size=32)
    panel.start()
    _wait_until(lambda: _epoch_shown(panel) >= 1)
    panel.stop()
    history = panel.wait(timeout=30)
    assert history is not None and history.stopped_reason == "interrupted"


def test_stop_ends_a_run_that_is_not_in_a_training(monkeypatch):
    monkeypatch.setattr(panel_module, "STOP_GRACE_SECONDS", 0.1)

    def no_fit(config, callbacks):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # e.g. a long evaluation: no callback to ask
            time.sleep(0.01)
        return "finished"

    panel = HyperparameterPanel(TinyConfig(), run=no_fit)
    panel.start()
    started = time.monotonic()
    panel.stop()
    assert panel.wait(timeout=10) is None
    assert time.monotonic() - started < 5
    assert panel.status.value.startswith("stopped after")
    assert panel.run_button.disabled is False


def test_the_status_line_says_the_epoch_and_the_time_left():
    seen = []

    class Watch(mt.Callback):
        def on_epoch_end(self, trainer):
            seen.append(panel.status.value)

    panel = HyperparameterPanel(TinyConfig(), run=lambda c, cbs: _slow_tiny(c, [*cbs, Watch()]))
    panel.set(epochs=3, batch_size=8)
    panel.run()
    assert any("epoch 1/3" in text and "left" in text for text in seen), seen
    assert "interrupt the kernel" in seen[0]  # how to stop a run that panel.run() started


def test_invalid_value_shows_a_message_instead_of_a_traceback():
    panel = HyperparameterPanel(TinyConfig(), run=train_tiny)
    panel.set(batch_size=500)  # larger than the 64 training examples
    assert panel.run() is None
    assert "batch_size" in panel.error
    assert "Cannot run" in panel.message.value
    assert panel.run_button.disabled is False


def test_invalid_value_on_click_shows_the_message_without_starting():
    panel = HyperparameterPanel(TinyConfig(), run=train_tiny)
    panel.set(batch_size=500)
    panel.run_button.click()
    assert panel.wait(timeout=30) is None
    assert "Cannot run" in panel.message.value and "batch_size" in panel.error
    assert panel.run_button.disabled is False


def test_a_bug_in_the_run_function_is_not_hidden():
    def broken(config, callbacks):
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        HyperparameterPanel(TinyConfig(), run=broken).run()
    panel = HyperparameterPanel(TinyConfig(), run=broken)
    panel.run_button.click()  # nobody to raise to: the traceback is shown in the panel
    panel.wait(timeout=30)
    assert "failed: a real bug" in panel.status.value
    errors = [o for o in panel.output.outputs if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "RuntimeError"
    assert panel.run_button.disabled is False


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


def test_the_panels_parts_can_still_be_imported_from_the_panel_module():
    from mtkit.notebook import controls, run_callbacks

    for name in ("hyperparameter", "check_ranges"):
        assert getattr(panel_module, name) is getattr(controls, name)
    for name in ("LiveLossPlot", "RunStopped"):
        assert getattr(panel_module, name) is getattr(run_callbacks, name)
    assert {"HyperparameterPanel", "STOP_GRACE_SECONDS", "FIT_GRACE_SECONDS"} <= set(
        panel_module.__all__
    )
    assert controls.escape(ValueError("a < b & c")) == "a &lt; b &amp; c"
