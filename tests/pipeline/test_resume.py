"""Exact resume: a run killed with SIGKILL and resumed ends as if it had never been stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mtkit.__main__ import main
from mtkit.core.checkpoint import CheckpointError, load_checkpoint, save_model
from mtkit.core.train import EarlyStopping, LambdaCallback, fit
from mtkit.core.utils import MtkitError
from mtkit.pipeline import (
    AdaptConfig,
    FineTuneConfig,
    PipelineConfig,
    PretrainConfig,
    Run,
    RunContext,
    TrainingState,
    build_pipeline,
    make_split,
    resume,
    run_config,
    training_state,
)


def small_config(**overrides) -> PipelineConfig:
    """Digits, every stage a few epochs: the whole pipeline in well under a second."""
    values = dict(
        name="small",
        pretrain=PretrainConfig(hidden_sizes=(32,), latent_size=8, max_epochs=4),
        finetune=FineTuneConfig(strategy="full", max_epochs=6, patience=None),
        adapt=AdaptConfig(max_epochs=4, patience=None),
    )
    return PipelineConfig(**{**values, **overrides})


# The child process: runs the pipeline of a config file and, at a chosen batch of a chosen fit,
# writes a marker file and sleeps until the parent kills it with SIGKILL.
CHILD = textwrap.dedent(
    """
    import resource, sys, time
    from pathlib import Path
    import torch
    from mtkit.pipeline import run_config, training_state
    from mtkit.core.train import Callback

    config, runs_dir, threads, fit_number, epoch, batch, marker = sys.argv[1:]
    torch.set_num_threads(int(threads))  # the parent's, so the arithmetic is the same
    training_state.SAVE_EVERY_SECONDS = 0  # a state after every epoch, not every second

    class PauseForTheKill(Callback):
        fits = 0
        def on_train_begin(self, trainer):
            self.fits += 1
        def on_epoch_begin(self, trainer):
            self.batches = 0
        def on_batch_end(self, trainer):
            self.batches += 1
            where = (str(self.fits), str(trainer.epoch), str(self.batches))
            if where == (fit_number, epoch, batch):
                Path(marker).write_text(str(peak_resident_mb()))
                time.sleep(600)

    def peak_resident_mb():
        # VmHWM is this process's own high-water mark; ru_maxrss as the parent reads it
        # from wait4 also counts the parent's memory at fork time (Linux keeps it over exec).
        status = Path("/proc/self/status")
        if status.exists():
            line = next(l for l in status.read_text().splitlines() if l.startswith("VmHWM:"))
            return int(line.split()[1]) / 1024
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / (2**20 if sys.platform == "darwin" else 2**10)

    run_config(config, runs_dir=runs_dir, callbacks=[PauseForTheKill()])
    """
)


def run_until_killed(tmp_path, config, runs_dir, fit_number, epoch, batch) -> float:
    """Start the child, wait for it to pause at (fit, epoch, batch), kill -9 it; returns the
    child's peak resident memory in MB."""
    marker = tmp_path / "paused"
    args = [str(config), str(runs_dir), str(torch.get_num_threads())]
    args += [str(fit_number), str(epoch), str(batch), str(marker)]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600  # generous: a busy CI machine imports torch slowly
    while not marker.exists() or not marker.read_text():
        if child.poll() is not None:
            raise AssertionError(f"the child ended early:\n{child.stderr.read().decode()}")
        assert time.monotonic() < deadline, "the child never reached its pause"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    _, status, _ = os.wait4(child.pid, 0)
    child.returncode = -signal.SIGKILL  # reaped above: tell Popen
    child.stderr.close()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return float(marker.read_text())


class Crash(Exception):
    """Stands in for a kill: fit stops in the middle of an epoch, nothing after it runs."""


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_a_run_killed_resumed_and_stopped_again_ends_exactly_as_an_uninterrupted_one(
    tmp_path, monkeypatch
):
    config = small_config()
    reference = run_config(config, runs_dir=tmp_path / "reference")
    config_file = tmp_path / "small.toml"
    config_file.write_text(config.to_toml())

    # Killed in the middle of the finetune stage's third epoch ...
    peak_mb = run_until_killed(tmp_path, config_file, tmp_path / "runs", 2, 3, 2)
    assert peak_mb < 2000  # bench/memory.py states 2,000 MB for the largest embedded runs
    (folder,) = (tmp_path / "runs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["pretrain"] and not summary["finished"]
    assert sorted(p.name for p in (folder / "resume").iterdir()) == ["finetune.pt", "pretrain.pt"]
    assert [r["stage"] for r in Run.load(folder).metrics()] == ["pretrain"] * 4 + ["finetune"] * 2

    # ... resumed, and stopped again in the adapt stage's second epoch ...
    monkeypatch.setattr(training_state, "SAVE_EVERY_SECONDS", 0)
    fits = []

    def crash(trainer):
        if len(fits) == 3 and trainer.epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        resume(folder, callbacks=[LambdaCallback(on_train_begin=fits.append, on_batch_end=crash)])
    monkeypatch.undo()
    summary = json.loads((folder / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["pretrain", "finetune"]
    assert "resumed after epoch 2" in summary["stages"][1]["note"]

    # ... and finished from the command line.
    assert main(["run", "--resume", str(folder)]) == 0
    resumed = Run.load(folder)
    assert resumed.stage("adapt").note == "resumed after epoch 1"
    for mine, theirs in zip(resumed.stages, reference.stages, strict=True):
        assert (mine.name, mine.stopped_reason, mine.epochs, mine.best_epoch) == (
            theirs.name,
            theirs.stopped_reason,
            theirs.epochs,
            theirs.best_epoch,
        )
        assert mine.scores == theirs.scores, mine.name
        weights, _ = load_checkpoint(folder / mine.checkpoint)
        expected, _ = load_checkpoint(reference.path / theirs.checkpoint)
        assert weights.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(weights[name], tensor), (mine.name, name)
    assert without_seconds(resumed.metrics()) == without_seconds(reference.metrics())
    # Finished: the training states are gone, and nothing half-written was left behind.
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in reference.path.iterdir()
    )
    assert not list(folder.rglob("*.tmp"))


# --- resuming one fit, in process --------------------------------------------------------------


def toy_fit(path, crash_at=None, seed=1, callbacks=()):
    """A small classifier with dropout, a cosine schedule and early stopping, trained with a
    TrainingState; crash_at=(epoch, step) raises Crash after that optimizer step."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=generator)
    y = (x.sum(dim=1) > 0).long()
    torch.manual_seed(seed)  # a different seed: the restored state must override everything
    model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 2))

    def crash(trainer):
        if (trainer.epoch, trainer.step) == crash_at:
            raise Crash

    def loss_fn(model, batch):
        logits = model(batch[0])
        accuracy = (logits.argmax(dim=1) == batch[1]).float().mean()
        return F.cross_entropy(logits, batch[1]), {"accuracy": accuracy}

    state = TrainingState(path, every_seconds=0)
    stopping = EarlyStopping("val_loss", patience=4)
    history = fit(
        model,
        loss_fn,
        (x, y),
        epochs=12,
        lr=0.05,
        batch_size=32,
        val_data=(x[:50], y[:50]),
        schedule="cosine",
        monitor="val_accuracy",
        seed=3,
        progress=False,
        callbacks=[stopping, LambdaCallback(on_batch_end=crash), *callbacks, state],
    )
    return model, history, state


def test_a_fit_resumed_from_its_state_matches_one_never_stopped(tmp_path):
    expected_model, expected, _ = toy_fit(tmp_path / "uninterrupted.pt")
    assert expected.stopped_reason == "early_stopping" and len(expected) < 12

    with pytest.raises(Crash):
        toy_fit(tmp_path / "state.pt", crash_at=(6, 38))  # in the 6th epoch of 7 steps each
    model, history, state = toy_fit(tmp_path / "state.pt", seed=99)

    assert state.restored == 5
    assert without_seconds(history.records) == without_seconds(expected.records)
    assert (history.best_epoch, history.stopped_reason) == (expected.best_epoch, "early_stopping")
    for name, tensor in expected_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name

    # A fit that had already ended is restored as ended: nothing trains again.
    epochs = []
    model, again, state = toy_fit(
        tmp_path / "state.pt", callbacks=[LambdaCallback(on_epoch_begin=epochs.append)]
    )
    assert epochs == [] and state.restored == len(expected)
    assert without_seconds(again.records) == without_seconds(expected.records)
    assert again.stopped_reason == "early_stopping"
    for name, tensor in expected_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_a_state_for_another_model_or_a_damaged_one_is_a_clear_error(tmp_path):
    toy_fit(tmp_path / "state.pt")
    other = nn.Linear(5, 2)
    with pytest.raises(CheckpointError, match=r"state\.pt was saved by a fit of another model"):
        fit(
            other,
            lambda m, b: F.mse_loss(m(b[0]), torch.zeros(len(b[0]), 2)),
            torch.randn(8, 5),
            epochs=1,
            lr=0.1,
            batch_size=8,
            progress=False,
            callbacks=[TrainingState(tmp_path / "state.pt")],
        )
    data = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"state\.pt: the file is truncated or corrupt"):
        toy_fit(tmp_path / "state.pt")
    save_model(tmp_path / "model.pt", other)
    with pytest.raises(CheckpointError, match=r"model\.pt holds weights, not a saved state"):
        TrainingState(tmp_path / "model.pt").load()


# --- resuming a pipeline: what is checked ------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped by an error in its second stage (as a crash would leave it)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(training_state, "SAVE_EVERY_SECONDS", 0)
    runs_dir = tmp_path_factory.mktemp("runs")
    config = small_config(stages=("pretrain", "finetune"))

    fits = []

    def fail(trainer):  # at the start of the finetune stage's third epoch
        if len(fits) == 2 and trainer.epoch == 3:
            raise Crash

    callbacks = [LambdaCallback(on_train_begin=fits.append, on_epoch_begin=fail)]
    with pytest.raises(Crash):
        run_config(config, runs_dir=runs_dir, callbacks=callbacks)
    patch.undo()
    (folder,) = runs_dir.iterdir()
    return config, folder


def test_resume_refuses_another_config_or_split(stopped_run):
    config, folder = stopped_run
    other = small_config(stages=("pretrain", "finetune"), seed=7)
    context = RunContext(make_split(other.data), seed=other.seed)
    with pytest.raises(MtkitError, match=r"made by another pipeline or config .*seed"):
        build_pipeline(other).resume(folder, context)
    other_split = dataclass_replace_data(config, seed=5)
    context = RunContext(make_split(other_split.data), seed=config.seed)
    with pytest.raises(MtkitError, match="split is not the one in its split.json"):
        build_pipeline(config).resume(folder, context)


def dataclass_replace_data(config: PipelineConfig, **data) -> PipelineConfig:
    import dataclasses

    return dataclasses.replace(config, data=dataclasses.replace(config.data, **data))


def test_resume_explains_what_is_not_a_run_folder(tmp_path, capsys):
    with pytest.raises(MtkitError, match="has no config.toml"):
        resume(tmp_path)
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "has no config.toml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "x.toml", "--resume", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["run"])
    assert "CONFIG file, or --resume RUN_DIR" in capsys.readouterr().err


def test_metrics_cut_short_by_a_kill_are_read_and_then_rewritten(stopped_run, tmp_path):
    import shutil

    config, original = stopped_run
    folder = tmp_path / original.name
    shutil.copytree(original, folder)
    with (folder / "metrics.jsonl").open("a") as file:
        file.write('{"stage": "finetune", "epo')  # the kill came in the middle of a line
    rows = Run.load(folder).metrics()
    assert [r["stage"] for r in rows] == ["pretrain"] * 4 + ["finetune"] * 2

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the finished stage ends with the same weights
        run = resume(folder)
    assert [r["stage"] for r in run.metrics()] == ["pretrain"] * 4 + ["finetune"] * 6
    assert Run.load(folder).stage("finetune").note == "resumed after epoch 2"
    assert not (folder / "resume").exists()
    # Resuming a finished run changes nothing.
    again = resume(folder)
    assert again.stages == run.stages and not again.models


def test_a_stage_that_trains_nothing_keeps_its_rows_when_resumed(tmp_path):
    """E.g. a text encoder read from the cache: its History's rows come from the stage itself."""
    from mtkit.core.train import History
    from mtkit.pipeline import ExitCriteria, Pipeline, Stage, StageOutput

    def cached(context, model, exit, callbacks):
        records = [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}]
        return StageOutput(nn.Linear(2, 2), History(records=records, monitor="train_loss"))

    failures = [Crash]

    def flaky(context, model, exit, callbacks):
        if failures:
            raise failures.pop()
        return StageOutput(model, History(records=[{"epoch": 1, "train_loss": 1.0}]))

    pipeline = Pipeline([Stage("cached", cached), Stage("flaky", flaky, ExitCriteria(1))])
    context = RunContext(make_split(small_config().data))
    with pytest.raises(Crash):
        pipeline.run(context, runs_dir=tmp_path)
    (folder,) = tmp_path.iterdir()
    with pytest.warns(UserWarning, match="'cached' ended with other weights .* its checkpoint"):
        run = pipeline.resume(folder, context)  # nn.Linear(2, 2) is not seeded: other weights
    saved, _ = load_checkpoint(folder / "checkpoints" / "cached.pt")
    for name, tensor in run.models["cached"].state_dict().items():
        assert torch.equal(tensor, saved[name])
    assert [(r["stage"], r["epoch"]) for r in run.metrics()] == [
        ("cached", 1),
        ("cached", 2),
        ("flaky", 1),
    ]
