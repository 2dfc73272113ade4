"""Ctrl-C stops a pipeline run: no later stage runs, the folder says why and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mtkit.__main__ import main
from mtkit.core.train import LambdaCallback
from mtkit.pipeline import (
    AdaptConfig,
    FineTuneConfig,
    PipelineConfig,
    PretrainConfig,
    Run,
    run_config,
    training_state,
)
from mtkit.pipeline.runner import RunInterrupted


def small_config() -> PipelineConfig:
    return PipelineConfig(
        name="small",
        pretrain=PretrainConfig(hidden_sizes=(32,), latent_size=8, max_epochs=4),
        finetune=FineTuneConfig(strategy="full", max_epochs=6, patience=None),
        adapt=AdaptConfig(max_epochs=4, patience=None),
    )


def test_an_interrupted_stage_stops_the_run_and_resume_finishes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(training_state, "SAVE_EVERY_SECONDS", 0)
    fits = []

    def interrupt(trainer):  # Jupyter's stop in the finetune stage's third epoch
        if len(fits) == 2 and trainer.epoch == 3:
            raise KeyboardInterrupt

    callbacks = [LambdaCallback(on_train_begin=fits.append, on_batch_end=interrupt)]
    with pytest.raises(RunInterrupted, match=r"in stage 'finetune'; .*--resume") as raised:
        run_config(small_config(), runs_dir=tmp_path, callbacks=callbacks)
    folder = raised.value.folder
    assert len(fits) == 2  # the adapt stage never started
    summary = json.loads((folder / "summary.json").read_text())
    assert not summary["finished"] and "interrupted" in summary["error"]
    assert [s["name"] for s in summary["stages"]] == ["pretrain"]
    assert (folder / "resume" / "finetune.pt").exists()
    assert (folder / "checkpoints" / "finetune.pt").exists()  # its best weights so far

    assert main(["run", "--resume", str(folder)]) == 0
    resumed = Run.load(folder)
    assert [s.name for s in resumed.stages] == ["pretrain", "finetune", "adapt"]
    assert resumed.stage("finetune").stopped_reason == "completed"
    assert resumed.stage("finetune").note == "resumed after epoch 2"
    assert json.loads((folder / "summary.json").read_text())["finished"]


def test_main_exits_130_with_how_to_resume(tmp_path, monkeypatch, capsys):
    import mtkit.pipeline

    def interrupted(*args, **kwargs):
        raise RunInterrupted(tmp_path / "runs" / "r", "pretrain")

    monkeypatch.setattr(mtkit.pipeline, "run_config", interrupted)
    assert main(["run", "x.toml"]) == 130
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.endswith(f"python -m mtkit run --resume {tmp_path / 'runs' / 'r'}")


# `python -m mtkit run` in a child, paused (a marker file written) after a chosen optimizer step
# until the parent sends SIGINT, as Ctrl-C in a terminal does.
CHILD = textwrap.dedent(
    """
    import runpy, sys, time
    from pathlib import Path
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from mtkit.pipeline import training_state

    config, runs_dir, threads, pause_at, marker = sys.argv[1:]
    torch.set_num_threads(int(threads))
    training_state.SAVE_EVERY_SECONDS = 0
    steps = []

    def pause(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == int(pause_at):
            Path(marker).write_text("paused")
            time.sleep(600)

    register_optimizer_step_post_hook(pause)
    sys.argv = ["mtkit", "run", config, "--runs-dir", runs_dir]
    runpy.run_module("mtkit", run_name="__main__")
    """
)


def test_sigint_to_python_m_mtkit_run_stops_it_resumably(tmp_path):
    config = tmp_path / "small.toml"
    config.write_text(small_config().to_toml())
    marker, runs = tmp_path / "paused", tmp_path / "runs"
    args = [str(config), str(runs), str(torch.get_num_threads()), "20", str(marker)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline, "the child never reached its pause"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 130, stderr.decode()[-2000:]
    (folder,) = runs.iterdir()
    last_line = stderr.decode().strip().splitlines()[-1]
    assert last_line.endswith(f"python -m mtkit run --resume {folder}")
    summary = json.loads((folder / "summary.json").read_text())
    assert not summary["finished"] and "interrupted" in summary["error"]
    assert summary["stages"] == []  # the pretrain stage was interrupted: nothing later ran
    assert (folder / "resume" / "pretrain.pt").exists()  # its epochs so far

    assert main(["run", "--resume", str(folder)]) == 0
    finished = json.loads((folder / "summary.json").read_text())
    assert finished["finished"] and not (folder / "resume").exists()
    assert [s["name"] for s in finished["stages"]] == ["pretrain", "finetune", "adapt"]
