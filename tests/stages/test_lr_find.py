"""lr_find: the learning-rate range test on a copy of the model, its curve and its suggestion."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from matplotlib import pyplot
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from mtkit.core.utils import MtkitError
from mtkit.stages.lr_find import LRFinderResult, lr_find, steepest_descent

QUIET = {"device": "cpu"}


def regression_data(count: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """x: count×8 standard normal, y: a fixed linear function of x plus a little noise."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, 8, generator=generator)
    weights = torch.randn(8, 1, generator=generator)
    return x, x @ weights + 0.1 * torch.randn(count, 1, generator=generator)


def mse(model, batch):
    x, y = batch
    return F.mse_loss(model(x), y)


def linear_model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(8, 1)


def sweep(model=None, data=None, **options) -> LRFinderResult:
    options = {"start_lr": 1e-5, "end_lr": 10.0, "batch_size": 256, "seed": 0, **options}
    model = linear_model() if model is None else model
    data = regression_data() if data is None else data
    return lr_find(model, mse, data, **QUIET, **options)


def test_the_suggestion_is_where_the_loss_falls_fastest_on_linear_regression():
    x, y = regression_data()
    result = sweep(optimizer="sgd")  # full batches: each step's loss is exact, no noise
    # Where the loss falls fastest, measured on the raw losses: from the first step below 90% of
    # the starting loss to the first below 5% of it (here about 4e-4 to 7e-3).
    start = result.raw_losses[0]
    begins = next(
        lr for lr, loss in zip(result.lrs, result.raw_losses, strict=True) if loss < 0.9 * start
    )
    ends = next(
        lr for lr, loss in zip(result.lrs, result.raw_losses, strict=True) if loss < 0.05 * start
    )
    assert ends / begins < 100  # the fast fall spans under two of the six decades swept
    assert begins <= result.suggestion <= ends
    # and far below where SGD with momentum 0.9 diverges on this quadratic: 2(1 + 0.9)/λ_max.
    features = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    largest_curvature = torch.linalg.eigvalsh(2 * features.T @ features / len(x)).max().item()
    assert result.suggestion < 3.8 / largest_curvature / 10


def test_the_sweep_is_exponential_and_stops_when_the_loss_blows_up():
    result = sweep(optimizer="sgd")
    assert result.stopped_reason == "diverged" and len(result.lrs) < 100
    assert result.lrs[0] == pytest.approx(1e-5)
    ratios = [b / a for a, b in itertools.pairwise(result.lrs)]
    assert ratios == pytest.approx([1e6 ** (1 / 99)] * len(ratios))  # 6 decades in 99 steps
    assert result.losses[-1] > 4 * min(result.losses)  # diverge_threshold=4 ended it
    assert max(result.losses[:-1]) <= 4 * min(result.losses)


def test_a_nan_loss_ends_the_curve_instead_of_raising():
    result = sweep(optimizer="sgd", end_lr=1e8, diverge_threshold=1e30)  # only inf/NaN stops it
    assert result.stopped_reason == "diverged" and len(result.lrs) < 100
    assert all(math.isfinite(loss) for loss in result.raw_losses)


def test_a_full_sweep_ends_at_end_lr():
    result = sweep(optimizer="adam", start_lr=1e-4, end_lr=1e-2, num_steps=20)
    assert result.stopped_reason == "completed"
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses) == 20
    assert result.lrs[-1] == pytest.approx(1e-2)


def test_the_callers_model_optimizer_and_random_state_are_untouched():
    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mse(model, regression_data()).backward()
    optimizer.step()  # the optimizer now has state (momentum buffers) to keep
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    random_state = torch.get_rng_state()
    sweep(model, optimizer="sgd")
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    after = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, after, strict=True))
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert torch.equal(torch.get_rng_state(), random_state)


def test_a_seed_makes_the_sweep_repeatable():
    data = regression_data()
    first = sweep(data=data, batch_size=32)  # shuffled batches: the seed decides their order
    second = sweep(data=data, batch_size=32)
    assert first == second
    other = sweep(data=data, batch_size=32, seed=1)
    assert other.raw_losses != first.raw_losses


def test_a_loader_with_fewer_batches_than_steps_is_gone_through_again():
    x, y = regression_data(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 4 batches
    result = lr_find(linear_model(), mse, loader, start_lr=1e-4, end_lr=1e-2, num_steps=10,
                     **QUIET)  # fmt: skip
    assert len(result.lrs) == 10


def test_plot_marks_the_suggestion():
    result = sweep(optimizer="sgd")
    ax = result.plot()
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "smoothed loss" and labels[1].startswith("suggestion: lr=")
    assert list(ax.get_lines()[1].get_xdata()) == [result.suggestion]
    assert ax.get_xscale() == "log"
    pyplot.close(ax.figure)


def test_too_short_a_curve_gives_no_suggestion_and_a_warning():
    with pytest.warns(UserWarning, match="too few steps"):
        assert steepest_descent([1e-3, 1e-2, 1e-1], [1.0, 2.0, 3.0]) is None
    # A falling curve: the steepest fall between 1e-3 and 1e-2.
    lrs = [10.0**k for k in range(-6, 1)]
    assert steepest_descent(lrs, [5.0, 5.0, 4.9, 1.0, 0.8, 0.7, 0.9]) == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"end_lr": 1e-6}, "end_lr must be larger than start_lr"),
        ({"num_steps": 1}, "num_steps must be at least 2"),
        ({"optimizer": "lion"}, "unknown optimizer"),
        ({"smoothing": 1.0}, r"smoothing must be a number in \[0, 1\)"),
        ({"diverge_threshold": 0.5}, "diverge_threshold must be larger than 1"),
    ],
)
def test_bad_arguments_are_clear_errors(options, message):
    with pytest.raises(MtkitError, match=message):
        sweep(**options)


def test_a_nan_loss_at_the_first_step_is_a_clear_error():
    x, y = regression_data()
    x[0, 0] = math.nan
    with pytest.raises(MtkitError, match="first step.s loss is not finite"):
        sweep(data=(x, y))


def test_a_built_optimizer_is_refused_with_the_reason():
    model = linear_model()
    with pytest.raises(MtkitError, match="builds its own optimizer"):
        sweep(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
