"""fit under torchrun: 2 CPU processes (gloo) train as one run with the global batch, and a
pipeline under torchrun writes one run folder (rank 0's).

The tests launch this very file with torchrun (localhost, a free port); the `__main__` block
at the bottom is what each of the two processes runs. The file must stay importable as a
plain script (no fixtures or conftest at import time).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core import distributed
from mtkit.core.train import Callback, fit
from mtkit.pipeline import AdaptConfig, FineTuneConfig, PipelineConfig, PretrainConfig, run_config

EPOCHS = 4


def regression_data(count: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """x: count×4, y: count×1, a fixed nonlinear function of x (deterministic)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, 4, generator=generator)
    return x, torch.sin(x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]))


def small_network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


def mse(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y)


class UnfreezeFirstLayerAtEpoch3(Callback):
    """Like gradual unfreezing: only the last layer trains until epoch 3."""

    def on_train_begin(self, trainer):
        trainer.model[0].requires_grad_(False)

    def on_epoch_begin(self, trainer):
        if trainer.epoch == 3:
            trainer.model[0].requires_grad_(True)


def train(batch_size: int, callbacks=()) -> tuple[nn.Module, list, list]:
    x, y = regression_data()
    model = small_network()
    history = fit(
        model,
        mse,
        (x, y),
        val_data=(x[:30], y[:30]),
        epochs=EPOCHS,
        lr=0.05,
        batch_size=batch_size,
        optimizer="sgd",
        callbacks=callbacks,
        seed=0,
        device="cpu",
        progress=False,
    )
    return model, history["train_loss"], history["val_loss"]


def tiny_pipeline(runs_dir: Path):
    config = PipelineConfig(
        name="ddp",
        pretrain=PretrainConfig(hidden_sizes=(32,), latent_size=8, max_epochs=3),
        finetune=FineTuneConfig(strategy="full", max_epochs=3),
        adapt=AdaptConfig(max_epochs=2),
    )
    return run_config(config, runs_dir=runs_dir)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Launch this file on 2 processes with torchrun, once for all tests here (starting
    processes takes seconds); returns the folder and what each process saved."""
    folder = tmp_path_factory.mktemp("torchrun")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", __file__, str(folder)]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return folder, [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def test_two_processes_train_as_one_with_the_global_batch(two_processes):
    _, ranks = two_processes

    # DDP keeps the copies equal: every parameter is bit-identical on both processes ...
    for name, tensor in ranks[0]["weights"].items():
        assert torch.equal(tensor, ranks[1]["weights"][name]), name
    for name, tensor in ranks[0]["gradual_weights"].items():
        assert torch.equal(tensor, ranks[1]["gradual_weights"][name]), name
    # ... and both recorded the same History (metrics are averaged over the processes).
    assert ranks[0]["train_loss"] == ranks[1]["train_loss"]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert [r["rank"] for r in ranks] == [0, 1]

    # 2 processes × batch 8 take the same steps as 1 process × batch 16: same losses, same model.
    model, train_loss, val_loss = train(batch_size=16)
    assert torch.tensor(ranks[0]["train_loss"]).allclose(torch.tensor(train_loss), atol=1e-6)
    assert torch.tensor(ranks[0]["val_loss"]).allclose(torch.tensor(val_loss), atol=1e-6)
    for name, tensor in model.state_dict().items():
        assert torch.allclose(ranks[0]["weights"][name], tensor, atol=1e-6), name
    # Not the run each process would make alone on all the data with batch 8.
    _, alone_loss, _ = train(batch_size=8)
    assert abs(alone_loss[-1] - train_loss[-1]) > 1e-4

    # Parameters switched on mid-training are averaged too (the DDP wrapper is rebuilt).
    gradual, _, _ = train(batch_size=16, callbacks=[UnfreezeFirstLayerAtEpoch3()])
    for name, tensor in gradual.state_dict().items():
        assert torch.allclose(ranks[0]["gradual_weights"][name], tensor, atol=1e-6), name


def test_a_pipeline_on_two_processes_writes_one_run_folder(two_processes):
    folder, ranks = two_processes

    assert [r["run_path"] is not None for r in ranks] == [True, False]  # only rank 0 writes
    folders = list((folder / "runs").iterdir())
    assert [str(f) for f in folders] == [ranks[0]["run_path"]]
    metrics = (folders[0] / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 3 + 3 + 2  # each epoch once, not once per process
    assert sorted(p.name for p in (folders[0] / "checkpoints").iterdir()) == [
        "adapt.pt",
        "finetune.pt",
        "pretrain.pt",
    ]
    assert '"processes": 2' in (folders[0] / "environment.json").read_text()
    for name, tensor in ranks[0]["pipeline_weights"].items():  # the same model on both
        assert torch.equal(tensor, ranks[1]["pipeline_weights"][name]), name


def test_without_torchrun_the_helpers_are_no_ops():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (
        0,
        1,
        True,
    )
    assert distributed.average({"loss": 1.5}) == {"loss": 1.5}
    assert distributed.shard_size(7) == 7
    assert distributed.parallel_loss(nn.Linear(1, 1), mse) is mse
    assert distributed.setup() is False


def _process_main(folder: Path) -> None:
    """What each torchrun process does: train, then save what it ended with."""
    torch.set_num_threads(1)
    assert distributed.setup("gloo")
    model, train_loss, val_loss = train(batch_size=8)
    gradual, _, _ = train(batch_size=8, callbacks=[UnfreezeFirstLayerAtEpoch3()])
    result = {
        "rank": distributed.rank(),
        "world_size": distributed.world_size(),
        "weights": model.state_dict(),
        "gradual_weights": gradual.state_dict(),
        "train_loss": train_loss,
        "val_loss": val_loss,
    }
    run = tiny_pipeline(folder / "runs")
    result["run_path"] = None if run.path is None else str(run.path)
    result["pipeline_weights"] = run.models["adapt"].state_dict()
    torch.save(result, folder / f"rank{distributed.rank()}.pt")
    distributed.cleanup()


if __name__ == "__main__":
    _process_main(Path(sys.argv[1]))
