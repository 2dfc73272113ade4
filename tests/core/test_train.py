"""fit(): learning, data inputs, best-weight restore, stopping, schedules, callbacks, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import mtkit.core.train
from mtkit.core import distributed
from mtkit.core.checkpoint import load_checkpoint
from mtkit.core.train import (
    Callback,
    Checkpoint,
    EarlyStopping,
    History,
    LambdaCallback,
    TrainingDiverged,
    fit,
)
from mtkit.core.utils import MtkitError

QUIET = {"progress": False, "device": "cpu"}


def regression_data(count: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x: count×4, y: count×1 = a fixed linear function of x plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(
        count, 1, generator=generator
    )
    return x, y


def linear_model(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 1)


def mse(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y)


def mse_with_mae(model, batch):
    x, y = batch
    prediction = model(x)
    return F.mse_loss(prediction, y), {"mae": (prediction - y).abs().mean()}


@torch.no_grad()
def loss_on(model, x, y) -> float:
    model.eval()
    return F.mse_loss(model(x), y).item()


def test_loss_decreases_on_a_tiny_regression():
    x, y = regression_data()
    history = fit(linear_model(), mse, (x, y), epochs=15, lr=0.05, batch_size=16, **QUIET)

    assert len(history) == 15
    assert history["epoch"] == list(range(1, 16))
    assert history["train_loss"][-1] < 0.05 * history["train_loss"][0]
    assert history.stopped_reason == "completed"
    assert history.best_epoch is None  # no validation data: nothing to pick a best epoch by
    assert list(history.last) == ["epoch", "train_loss", "lr", "seconds"]


def test_metrics_are_recorded_for_train_and_validation():
    x, y = regression_data()
    history = fit(
        linear_model(), mse_with_mae, (x, y), val_data=(x[:32], y[:32]), epochs=2, lr=0.01, **QUIET
    )
    assert list(history.last) == [
        "epoch",
        "train_loss",
        "train_mae",
        "val_loss",
        "val_mae",
        "lr",
        "seconds",
    ]
    assert all(isinstance(v, float) for v in history["val_mae"])


def test_in_memory_and_dataloader_agree_for_one_full_batch():
    x, y = regression_data(count=64)
    in_memory, loaded = linear_model(), linear_model()

    a = fit(in_memory, mse, (x, y), epochs=5, lr=0.05, batch_size=64, **QUIET)
    b = fit(loaded, mse, DataLoader(TensorDataset(x, y), batch_size=64), epochs=5, lr=0.05, **QUIET)

    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert torch.allclose(in_memory.weight, loaded.weight, atol=1e-6)


def test_tensor_dataset_and_tuple_inputs_are_the_same_data():
    x, y = regression_data(count=64)
    a = fit(linear_model(), mse, TensorDataset(x, y), epochs=3, lr=0.05, seed=0, **QUIET)
    b = fit(linear_model(), mse, [x, y], epochs=3, lr=0.05, seed=0, **QUIET)
    assert a["train_loss"] == b["train_loss"]


def test_a_single_tensor_becomes_a_one_tensor_batch():
    x, _ = regression_data(count=32)
    seen = []

    def loss_fn(model, batch):
        seen.append(len(batch))
        return model(batch[0]).pow(2).mean()

    fit(linear_model(), loss_fn, x, epochs=1, lr=0.01, batch_size=10, **QUIET)
    assert seen == [1, 1, 1, 1]  # 32 examples in batches of 10: the partial last one is kept


def shifted_validation_run(tmp_path, restore_best: bool = True, callbacks=()):
    """Train on y, validate on 0.5·y: validation improves while the model passes 0.5·y, then
    gets worse as it learns y, so the best epoch is in the middle."""
    x, y = regression_data()
    model = linear_model()
    history = fit(
        model,
        mse,
        (x, y),
        val_data=(x, 0.5 * y),
        epochs=20,
        lr=0.05,
        batch_size=32,
        callbacks=callbacks,
        restore_best=restore_best,
        **QUIET,
    )
    return model, history, x, 0.5 * y


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    path = tmp_path / "best.pt"
    model, history, x_val, y_val = shifted_validation_run(
        tmp_path, callbacks=[EarlyStopping(patience=3), Checkpoint(path)]
    )

    assert history.stopped_reason == "early_stopping"
    assert 1 < history.best_epoch < len(history) < 20
    assert len(history) == history.best_epoch + 3
    assert history.best_value == min(history["val_loss"])
    assert history["val_loss"][-1] > history.best_value
    # The model now holds the best epoch's weights, the same ones Checkpoint saved.
    assert loss_on(model, x_val, y_val) == pytest.approx(history.best_value, rel=1e-5)
    saved, metadata = load_checkpoint(path)
    assert metadata["epoch"] == history.best_epoch
    assert metadata["val_loss"] == history.best_value
    for name, tensor in model.state_dict().items():
        assert torch.equal(saved[name], tensor)


def test_checkpoint_can_save_every_epoch(tmp_path):
    x, y = regression_data()
    model = linear_model()
    path = tmp_path / "last.pt"
    fit(
        model,
        mse,
        (x, y),
        val_data=(x, -y),
        epochs=3,
        lr=0.05,
        **QUIET,
        callbacks=[Checkpoint(path, save_best_only=False)],
        restore_best=False,
    )
    saved, metadata = load_checkpoint(path)
    assert metadata["epoch"] == 3  # validation only got worse, yet the last epoch was saved
    assert torch.equal(saved["weight"], model.weight.detach())


def test_without_restore_best_the_final_weights_stay(tmp_path):
    model, history, x_val, y_val = shifted_validation_run(tmp_path, restore_best=False)
    assert history.stopped_reason == "completed"
    assert loss_on(model, x_val, y_val) == pytest.approx(history["val_loss"][-1], rel=1e-5)
    assert history["val_loss"][-1] > history.best_value


def test_a_metric_monitor_is_maximised():
    x, y = regression_data()

    def loss_fn(model, batch):
        loss = mse(model, batch)
        return loss, {"score": -loss}

    history = fit(
        linear_model(),
        loss_fn,
        (x, y),
        val_data=(x, 0.5 * y),
        epochs=15,
        lr=0.05,
        batch_size=32,
        monitor="val_score",
        **QUIET,
    )
    assert 1 < history.best_epoch < 15
    assert history.best_value == max(history["val_score"])
    assert history.best_epoch == 1 + history["val_loss"].index(min(history["val_loss"]))


def nan_at_step(bad_step: int):
    """A loss_fn that returns NaN on the `bad_step`-th training batch (1-based)."""
    calls = {"train": 0}

    def loss_fn(model, batch):
        loss = mse(model, batch)
        if model.training:
            calls["train"] += 1
            if calls["train"] == bad_step:
                return loss * math.nan
        return loss

    return loss_fn


def test_nan_loss_raises_training_diverged_with_epoch_step_and_history():
    x, y = regression_data()  # 128 examples / 32 = 4 steps per epoch
    model = linear_model()
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3 \(lr=0\.001\).*try lr=0\.0001"):
        fit(model, nan_at_step(3), (x, y), epochs=5, lr=1e-3, batch_size=32, **QUIET)

    with pytest.raises(TrainingDiverged) as error:
        fit(model, nan_at_step(10), (x, y), epochs=5, lr=1e-3, batch_size=32, **QUIET)
    assert isinstance(error.value, MtkitError)
    assert "epoch 3, step 10" in str(error.value)
    assert isinstance(error.value.history, History)
    assert len(error.value.history) == 2  # the two finished epochs
    assert error.value.history.stopped_reason == "diverged"
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step never ran


def test_divergence_restores_the_best_weights():
    x, y = regression_data()
    model = linear_model()
    with pytest.raises(TrainingDiverged) as error:
        fit(
            model,
            nan_at_step(41),  # the first step of epoch 11
            (x, y),
            val_data=(x, 0.5 * y),
            epochs=20,
            lr=0.05,
            batch_size=32,
            **QUIET,
        )
    history = error.value.history
    assert len(history) == 10
    assert history.best_epoch < 10  # the last epoch was not the best one
    assert loss_on(model, x, 0.5 * y) == pytest.approx(history.best_value, rel=1e-5)


def test_a_huge_learning_rate_diverges():
    x, y = regression_data()
    with pytest.raises(TrainingDiverged, match="learning rate is probably too high"):
        fit(linear_model(), mse, (x, y), epochs=50, lr=1e6, optimizer="sgd", **QUIET)


class InterruptAt(Callback):
    """Simulates Jupyter's stop button: KeyboardInterrupt in the middle of an epoch."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_batch_end(self, trainer):
        if trainer.epoch == self.epoch and trainer.step % 2 == 0:
            raise KeyboardInterrupt


def test_keyboard_interrupt_returns_the_history_and_restores_the_best(capsys):
    x, y = regression_data()
    model = linear_model()
    history = fit(
        model,
        mse,
        (x, y),
        val_data=(x, -y),
        epochs=10,
        lr=0.02,
        batch_size=32,
        callbacks=[InterruptAt(epoch=3)],
        **QUIET,
    )

    assert history.stopped_reason == "interrupted"
    assert len(history) == 2
    assert history.best_epoch == 1  # validation on -y only gets worse as the model learns y
    assert loss_on(model, x, -y) == pytest.approx(history.best_value, rel=1e-5)
    assert "interrupted during epoch 3" in capsys.readouterr().out


BAD_ARGUMENTS = [
    ({"epochs": 0}, "epochs must be a positive integer, got 0"),
    ({"epochs": 2.5}, "epochs must be a positive integer"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"lr": math.inf}, "lr must be a positive number"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    (
        {"batch_size": 512},
        "batch_size=512 is larger than the 100 training examples; use at most 100",
    ),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
    ({"schedule": "step"}, "unknown schedule 'step'"),
    ({"monitor": "accuracy"}, "monitor must be a validation metric"),
    ({"grad_clip": -1.0}, "grad_clip must be a positive number"),
    ({"weight_decay": -0.1}, "weight_decay must be a non-negative number"),
    ({"callbacks": [EarlyStopping()]}, "EarlyStopping monitors 'val_loss'; pass val_data"),
    ({"callbacks": [Checkpoint("unused.pt")]}, "Checkpoint monitors 'val_loss'; pass val_data"),
    ({"val_data": (torch.zeros(3, 4), torch.zeros(2, 1))}, r"val_data tensors differ .*\[3, 2\]"),
    ({"val_data": (torch.zeros(0, 4), torch.zeros(0, 1))}, "val_data has no examples"),
    ({"val_data": (torch.zeros(4, 4), torch.zeros(4, 1)), "monitor": "val_acc"}, "'val_acc'"),
]


@pytest.mark.parametrize(("options", "message"), BAD_ARGUMENTS)
def test_bad_arguments_give_a_clear_error(options, message):
    x, y = regression_data(count=100)
    options = {"epochs": 1, "lr": 0.01, **options}
    with pytest.raises(MtkitError, match=message):
        fit(linear_model(), mse, (x, y), **options, **QUIET)


@pytest.mark.parametrize(
    ("train_data", "message"),
    [
        ((torch.zeros(10, 4), torch.zeros(9, 1)), r"train_data tensors differ .*\[10, 9\]"),
        (torch.zeros(0, 4), "train_data has no examples"),
        ((), "train_data is empty"),
        (42, "train_data must be tensors, a TensorDataset or a DataLoader, not int"),
        (DataLoader(TensorDataset(torch.zeros(0, 4), torch.zeros(0, 1))), "yielded no batches"),
        ([("not", "tensors")], r"batches must be tensors or tuples of tensors, got \['str'"),
    ],
)
def test_bad_data_gives_a_clear_error(train_data, message):
    with pytest.raises(MtkitError, match=message):
        fit(linear_model(), mse, train_data, epochs=1, lr=0.01, **QUIET)


def test_a_frozen_model_is_refused():
    model = linear_model().requires_grad_(False)
    x, y = regression_data()
    with pytest.raises(MtkitError, match="no trainable parameters"):
        fit(model, mse, (x, y), epochs=1, lr=0.01, **QUIET)


def test_loss_fn_must_return_a_tensor():
    x, y = regression_data()
    with pytest.raises(MtkitError, match="loss_fn must return a scalar loss tensor"):
        fit(linear_model(), lambda model, batch: 1.0, (x, y), epochs=1, lr=0.01, **QUIET)


def test_schedules_change_the_learning_rate():
    x, y = regression_data()  # 4 steps per epoch with batch_size=32
    run = {"epochs": 6, "lr": 0.01, "batch_size": 32, **QUIET}
    constant = fit(linear_model(), mse, (x, y), **run)
    cosine = fit(linear_model(), mse, (x, y), schedule="cosine", **run)
    one_cycle = fit(linear_model(), mse, (x, y), schedule="one_cycle", **run)

    assert constant["lr"] == [0.01] * 6
    assert cosine["lr"][0] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(cosine["lr"][:-1], cosine["lr"][1:], strict=True))
    peak = one_cycle["lr"].index(max(one_cycle["lr"]))
    assert 0 < peak < 5  # warms up, then anneals
    assert max(one_cycle["lr"]) <= 0.01
    assert one_cycle["lr"][0] < 0.01 / 10


def test_a_prebuilt_optimizer_keeps_its_own_learning_rates():
    x, y = regression_data()
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.001}, {"params": model[1].parameters()}],
        lr=0.01,
    )
    fit(model, mse, (x, y), epochs=3, lr=123.0, optimizer=optimizer, schedule="one_cycle", **QUIET)
    # one_cycle peaks at each group's own lr, so the 10× ratio between the groups survives.
    first, second = optimizer.param_groups
    assert second["lr"] == pytest.approx(10 * first["lr"])
    assert second["max_lr"] == 0.01


def test_grad_clip_bounds_each_update():
    x, y = regression_data()
    model = linear_model()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # update = -gradient
    fit(
        model,
        mse,
        (x, y),
        epochs=1,
        lr=1.0,
        batch_size=128,
        optimizer=optimizer,
        grad_clip=0.01,
        **QUIET,
    )
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() == pytest.approx(0.01, rel=1e-4)


def test_amp_on_cpu_is_ignored_with_a_warning():
    x, y = regression_data()
    with pytest.warns(UserWarning, match="amp=True is ignored on cpu"):
        history = fit(linear_model(), mse, (x, y), epochs=1, lr=0.01, amp=True, **QUIET)
    assert len(history) == 1


class Recorder(Callback):
    def __init__(self, log):
        self.log = log

    def on_train_begin(self, trainer):
        self.log.append("train_begin")

    def on_epoch_begin(self, trainer):
        self.log.append(f"epoch_begin {trainer.epoch}")

    def on_batch_end(self, trainer):
        self.log.append(f"batch_end {trainer.step}")

    def on_epoch_end(self, trainer):
        self.log.append(f"epoch_end {trainer.epoch} records={len(trainer.history)}")

    def on_train_end(self, trainer):
        self.log.append("train_end")


def test_callbacks_are_called_in_order():
    x, y = regression_data(count=20)
    log = []
    lambda_log = LambdaCallback(on_epoch_end=lambda trainer: log.append("lambda epoch_end"))
    fit(
        linear_model(),
        mse,
        (x, y),
        epochs=2,
        lr=0.01,
        batch_size=10,
        callbacks=[Recorder(log), lambda_log],
        **QUIET,
    )
    assert log == [
        "train_begin",
        "epoch_begin 1",
        "batch_end 1",
        "batch_end 2",
        "epoch_end 1 records=1",
        "lambda epoch_end",
        "epoch_begin 2",
        "batch_end 3",
        "batch_end 4",
        "epoch_end 2 records=2",
        "lambda epoch_end",
        "train_end",
    ]


def test_a_callback_can_stop_training_and_see_the_batch_loss():
    x, y = regression_data()
    losses = []

    def stop_after_two_epochs(trainer):
        losses.append(float(trainer.last_batch_loss))
        if trainer.epoch == 2:
            trainer.stop_training, trainer.stop_reason = True, "early_stopping"

    history = fit(
        linear_model(),
        mse,
        (x, y),
        epochs=10,
        lr=0.01,
        callbacks=[LambdaCallback(on_epoch_end=stop_after_two_epochs)],
        **QUIET,
    )
    assert len(history) == 2
    assert history.stopped_reason == "early_stopping"
    assert all(math.isfinite(loss) for loss in losses)


def test_lambda_callback_rejects_unknown_hooks():
    with pytest.raises(MtkitError, match="unknown callback hook 'on_step'"):
        LambdaCallback(on_step=print)


def test_the_same_seed_gives_identical_losses():
    x, y = regression_data()
    run = {"val_data": (x, y), "epochs": 3, "lr": 0.01, "batch_size": 16, **QUIET}
    first = fit(linear_model(), mse, (x, y), seed=0, **run)
    second = fit(linear_model(), mse, (x, y), seed=0, **run)
    other = fit(linear_model(), mse, (x, y), seed=1, **run)
    assert first["train_loss"] == second["train_loss"]
    assert first["val_loss"] == second["val_loss"]
    assert first["train_loss"] != other["train_loss"]  # the seed really drives the shuffling


def test_history_helpers():
    x, y = regression_data()
    history = fit(linear_model(), mse, (x, y), val_data=(x, y), epochs=3, lr=0.01, **QUIET)
    assert history.to_dict()["records"] == history.records
    assert history.to_dict()["best_epoch"] == history.best_epoch
    assert history.last == history.records[-1]
    assert History().last is None
    with pytest.raises(KeyError, match="'val_accuracy' was not recorded"):
        history["val_accuracy"]


def test_history_plot_returns_axes():
    pyplot = pytest.importorskip("matplotlib.pyplot")
    x, y = regression_data()
    history = fit(linear_model(), mse, (x, y), val_data=(x, y), epochs=3, lr=0.01, **QUIET)
    ax = history.plot()
    assert [line.get_label() for line in ax.get_lines()][:2] == ["train_loss", "val_loss"]
    pyplot.close(ax.figure)

    without_validation = fit(linear_model(), mse, (x, y), epochs=2, lr=0.01, **QUIET)
    ax = without_validation.plot()  # val_loss is skipped, not an error
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss"]
    pyplot.close(ax.figure)


def test_only_the_main_process_saves_checkpoints_and_shows_progress(tmp_path, monkeypatch):
    """Under torchrun every process runs fit; a checkpoint file is written by rank 0 alone
    (the full two-process run is in test_distributed.py)."""
    bars, real_tqdm = [], mtkit.core.train.tqdm

    def spy(*args, **kwargs):
        bars.append(kwargs["disable"])
        return real_tqdm(*args, **kwargs)

    monkeypatch.setattr(distributed, "is_main_process", lambda: False)  # as on rank 1
    monkeypatch.setattr(mtkit.core.train, "tqdm", spy)
    x, y = regression_data()
    path = tmp_path / "best.pt"
    fit(linear_model(), mse, (x, y), val_data=(x, y), epochs=3, lr=0.05, progress=True,
        device="cpu", callbacks=[Checkpoint(path)])  # fmt: skip
    assert not path.exists()
    assert bars == [True]  # the bar is disabled although progress=True

    monkeypatch.setattr(distributed, "is_main_process", lambda: True)
    fit(linear_model(), mse, (x, y), val_data=(x, y), epochs=3, lr=0.05, **QUIET,
        callbacks=[Checkpoint(path)])  # fmt: skip
    assert path.exists()


# --- fit's own boundary: callbacks, the optimizer, the model ------------------------------------


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(model.state_dict()[name], t) for name, t in before.items())


@pytest.mark.parametrize(
    "callbacks, message",
    [
        ([EarlyStopping], r"callbacks\[0\] is the class EarlyStopping, .*instantiate it"),
        ([EarlyStopping(), Checkpoint], r"callbacks\[1\] is the class Checkpoint"),
        (EarlyStopping, r"^callbacks is the class EarlyStopping, .*EarlyStopping\(\)"),
        ([lambda trainer: None], r"callbacks\[0\] must be a Callback instance .*got function"),
        ([EarlyStopping(), 3], r"callbacks\[1\] must be a Callback instance .*got int 3"),
        ([None], r"callbacks\[0\] must be a Callback instance .*got NoneType"),
        ([nn.Linear], r"callbacks\[0\] must be a Callback instance .*got type"),
        ("early_stopping", r"callbacks must be a Callback or a list of them.*got str"),
        (5, r"callbacks must be a Callback or a list of them.*got int"),
        ({"stop": EarlyStopping()}, r"callbacks must be a Callback or a list .*got dict"),
    ],
)
def test_callbacks_that_are_not_callback_instances_are_named_before_training(callbacks, message):
    x, y = regression_data()
    model = linear_model()
    before = weights_of(model)
    with pytest.raises(MtkitError, match=message):
        fit(model, mse, (x, y), val_data=(x, y), epochs=2, lr=0.05, callbacks=callbacks, **QUIET)
    assert unchanged(model, before)


def test_an_optimizer_holding_none_of_the_models_parameters_is_refused():
    """Built on another model, or on the model before it was copied: it used to 'train' and
    change nothing. One holding only some trainable parameters (an adapter's), and leaving the
    frozen ones out, is fine."""
    x, y = regression_data()
    model = linear_model()
    before = weights_of(model)
    other = torch.optim.SGD(linear_model(seed=1).parameters(), lr=0.1)
    with pytest.raises(MtkitError, match=r"optimizer: the SGD holds none of this Linear's"):
        fit(model, mse, (x, y), epochs=2, lr=0.1, optimizer=other, **QUIET)
    assert unchanged(model, before)
    import copy

    copied = copy.deepcopy(model)  # the optimizer below still holds the original's tensors
    with pytest.raises(MtkitError, match="holds none of this Linear's trainable parameters"):
        fit(copied, mse, (x, y), epochs=2, lr=0.1, optimizer=torch.optim.AdamW(model.parameters()),
            **QUIET)  # fmt: skip

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 1))
    net[0].requires_grad_(False)  # frozen: the optimizer leaves it out
    frozen, rest, last = weights_of(net[0]), weights_of(net[1]), weights_of(net[2])
    history = fit(net, mse, (x, y), epochs=2, lr=0.01, optimizer=torch.optim.SGD(
        net[2].parameters(), lr=0.01), **QUIET)  # fmt: skip
    assert history.stopped_reason == "completed"
    assert unchanged(net[0], frozen) and unchanged(net[1], rest)  # only net[2] was stepped
    assert not unchanged(net[2], last)


def test_a_model_that_is_not_a_module_is_named():
    x, y = regression_data()
    with pytest.raises(MtkitError, match=r"model must be a torch.nn.Module, got ndarray"):
        fit(x.numpy(), mse, (x, y), epochs=1, lr=0.1, **QUIET)
