"""TensorBoardLogger and CSVLogger: what fit records ends up in files that standard tools read."""

from __future__ import annotations

import csv
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core import distributed
from mtkit.core.loggers import CSVLogger, TensorBoardLogger, tensorboard_tag
from mtkit.core.train import Callback, fit
from mtkit.core.utils import MtkitError

QUIET = {"progress": False, "device": "cpu", "seed": 0}


def regression_data(count: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, 4, generator=generator)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def mse_with_mae(model, batch):
    x, y = batch
    prediction = model(x)
    return F.mse_loss(prediction, y), {"mae": (prediction - y).abs().mean()}


def run_fit(callbacks, epochs: int = 3, **options):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = regression_data()
    history = fit(model, mse_with_mae, (x, y), val_data=(x, y), epochs=epochs, lr=0.05,
                  batch_size=16, callbacks=callbacks, **QUIET, **options)  # fmt: skip
    return model, history


def read_events(log_dir):
    """{tag: [(step, value), ...]} of the scalars, and the histogram tags, in log_dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    scalars = {
        tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in tags["scalars"]
    }
    return scalars, set(tags["histograms"])


def test_tensorboard_event_files_hold_each_epochs_losses_metrics_and_lr(tmp_path):
    _, history = run_fit([TensorBoardLogger(tmp_path / "tb")], schedule="cosine")
    scalars, histograms = read_events(tmp_path / "tb")
    expected = {"loss/train", "loss/val", "mae/train", "mae/val", "lr", "seconds"}
    assert expected <= set(scalars)
    assert not histograms and not any(tag.startswith("batch/") for tag in scalars)
    for key in ("train_loss", "val_loss", "train_mae", "val_mae", "lr"):
        steps, values = zip(*scalars[tensorboard_tag(key)], strict=True)
        assert list(steps) == [1, 2, 3]
        assert list(values) == pytest.approx(history[key], rel=1e-6)  # stored as float32
    assert len(set(history["lr"])) == 3  # the cosine schedule: a different lr each epoch


def test_tensorboard_logs_batches_and_histograms_of_trainable_parameters_on_request(tmp_path):
    class FrozenBias(Callback):
        def on_train_begin(self, trainer):
            trainer.model.bias.requires_grad_(False)

    run_fit([FrozenBias(), TensorBoardLogger(tmp_path, batch_every=2, histograms=True)], epochs=2)
    scalars, histograms = read_events(tmp_path)
    assert histograms == {"weights/weight"}  # the frozen bias is left out
    # 64 examples / 16 per batch = 4 steps per epoch, 8 in all; every second one is logged.
    assert [step for step, _ in scalars["batch/loss"]] == [2, 4, 6, 8]
    assert [value for _, value in scalars["batch/lr"]] == pytest.approx([0.05] * 4)


def test_tensorboard_logger_writes_nothing_on_other_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)  # as on rank 1
    run_fit([TensorBoardLogger(tmp_path / "tb"), CSVLogger(tmp_path / "history.csv")], epochs=1)
    assert not (tmp_path / "tb").exists() and not (tmp_path / "history.csv").exists()


def test_a_missing_tensorboard_is_a_clear_error_before_training(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(MtkitError, match="pip install tensorboard"):
        TensorBoardLogger(tmp_path)


def test_csv_has_one_row_per_epoch_with_the_history_values(tmp_path):
    path = tmp_path / "run" / "history.csv"
    _, history = run_fit([CSVLogger(path)])
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == list(history.records[0])  # epoch, train_loss, ..., lr, seconds
    assert len(rows) == len(history) == 3
    for row, record in zip(rows, history.records, strict=True):
        assert {key: float(value) for key, value in row.items()} == record  # exactly


def test_csv_gains_a_column_when_a_new_key_appears(tmp_path):
    class AddsAMetricFromEpochTwo(Callback):
        def on_epoch_end(self, trainer):
            if trainer.epoch >= 2:
                trainer.history.last["val_extra"] = 10.0 * trainer.epoch

    path = tmp_path / "history.csv"
    run_fit([AddsAMetricFromEpochTwo(), CSVLogger(path)])
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0])[-1] == "val_extra"
    assert [row["val_extra"] for row in rows] == ["", "20.0", "30.0"]


def test_csv_logger_refuses_a_folder(tmp_path):
    with pytest.raises(MtkitError, match="CSVLogger path must be a file"):
        CSVLogger(tmp_path)
