"""Ctrl-C at any moment of fit leaves the process usable (mtkit/core/interrupts.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from mtkit.core import train
from mtkit.core.interrupts import hold_interrupts
from mtkit.core.train import LambdaCallback, fit

QUIET = {"progress": False, "device": "cpu"}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def mse(model, batch):
    return F.mse_loss(model(batch[0]), batch[1])


# --- hold_interrupts ---------------------------------------------------------------------------


def test_a_ctrl_c_in_a_held_block_is_raised_when_the_block_ends():
    handler = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt):
        with hold_interrupts():
            signal.raise_signal(signal.SIGINT)  # Python runs the handler before returning
            done.append("the rest of the block")
    assert done == ["the rest of the block"]
    assert signal.getsignal(signal.SIGINT) is handler
    with hold_interrupts():  # nothing held: nothing raised
        done.append("again")
    assert done[-1] == "again"


def test_a_second_ctrl_c_gets_out_at_once_and_errors_are_not_replaced():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with hold_interrupts():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            done.append("never")
    assert done == []
    with pytest.raises(ZeroDivisionError):  # the block's own error, not the held interrupt
        with hold_interrupts():
            signal.raise_signal(signal.SIGINT)
            1 / 0  # noqa: B018
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_the_block_just_runs():
    errors, done = [], []

    def work():
        try:
            with hold_interrupts():  # signal.signal would raise ValueError in this thread
                done.append(True)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert done == [True] and errors == []


# --- fit, in this process ----------------------------------------------------------------------


def test_a_ctrl_c_during_fits_setup_lets_the_setup_finish_then_leaves_fit(monkeypatch):
    """The setup builds the optimizer: the first one in a process imports torch._dynamo."""
    built, real = [], train._configure_optimizer

    def interrupted_while_building(*args):
        signal.raise_signal(signal.SIGINT)
        built.append(real(*args))
        return built[-1]

    monkeypatch.setattr(train, "_configure_optimizer", interrupted_while_building)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    before = model.weight.clone()
    epochs = []
    with pytest.raises(KeyboardInterrupt):
        fit(model, mse, data(), epochs=3, lr=0.1, callbacks=LambdaCallback(
            on_epoch_begin=epochs.append), **QUIET)  # fmt: skip
    assert len(built) == 1 and epochs == []  # the setup ended; no training began
    assert torch.equal(model.weight, before)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_during_the_first_optimizer_step_waits_for_the_step(monkeypatch):
    steps = []

    def interrupt(optimizer, args, kwargs):
        signal.raise_signal(signal.SIGINT)

    handle = register_optimizer_step_pre_hook(interrupt)
    try:
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        before = model.weight.clone()
        history = fit(model, mse, data(), epochs=3, lr=0.1, batch_size=16, restore_best=False,
                      callbacks=LambdaCallback(on_train_end=lambda t: steps.append(t.step)),
                      **QUIET)  # fmt: skip
    finally:
        handle.remove()
    assert history.stopped_reason == "interrupted" and steps == [1]  # the step was finished
    assert not torch.equal(model.weight, before)


# --- fit, in fresh processes: the first fit's lazy imports -------------------------------------

# One process imports torch and mtkit, then forks one fresh child per moment (a process whose
# first fit is still to come, without paying for the imports each time). Each child interrupts
# its first fit at its moment, runs a second fit, and reports how both went. Moments: "ms:<d>"
# (a real SIGINT from a timer thread d milliseconds after fit is called), "import:<n>" (at the
# n-th module that fit imports: the middle of torch's lazy imports), "step" (in the first
# optimizer step).
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time, traceback
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    import mtkit as mt

    torch.set_num_threads(1)  # no thread pool shared across the forks below
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    loss_fn = lambda model, batch: F.mse_loss(model(batch[0]), batch[1])

    def first_then_second_fit(moment):
        kind, _, value = moment.partition(":")
        fired, go = [], threading.Event()

        def interrupt():
            if not fired:
                fired.append(True)
                os.kill(os.getpid(), signal.SIGINT)

        class InterruptAtImport:
            imports = 0
            def find_spec(self, name, path=None, target=None):
                self.imports += 1
                if self.imports == int(value):
                    interrupt()

        def timer():
            go.wait()
            time.sleep(float(value) / 1000)
            interrupt()

        if kind == "import":
            sys.meta_path.insert(0, InterruptAtImport())
        elif kind == "step":
            register_optimizer_step_pre_hook(lambda *args: interrupt())
        else:
            threading.Thread(target=timer, daemon=True).start()
        first = "raised"
        try:
            go.set()
            first = mt.fit(nn.Linear(4, 1), loss_fn, (x, y), epochs=100, lr=0.05,
                           batch_size=16, progress=False).stopped_reason
        except KeyboardInterrupt:
            pass
        if kind == "import":
            sys.meta_path.pop(0)
        model = nn.Linear(4, 1)
        start = F.mse_loss(model(x), y).item()
        second = mt.fit(model, loss_fn, (x, y), epochs=30, lr=0.05, batch_size=16,
                        progress=False)
        return {"fired": bool(fired), "first": first, "second": second.stopped_reason,
                "improved": second["train_loss"][-1] < start / 10}

    children = {}
    for moment in sys.argv[1:]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                report = first_then_second_fit(moment)
            except BaseException:
                report = {"error": traceback.format_exc()}
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        children[moment] = (pid, read)
    reports = {}
    for moment, (pid, read) in children.items():
        with os.fdopen(read) as pipe:
            reports[moment] = json.loads(pipe.read() or '{"error": "no report"}')
        os.waitpid(pid, 0)
    print(json.dumps(reports))
    """
)

MOMENTS = ["ms:0", "ms:5", "ms:20", "ms:50", "ms:100", "ms:200", "import:100", "import:400",
           "step"]  # fmt: skip


def test_the_first_fit_of_a_process_interrupted_at_any_early_moment_leaves_fit_usable():
    """The first optimizer of a process imports torch._dynamo (sympy, ...): a KeyboardInterrupt
    in the middle of that import used to break every later fit of the process ("module 'sympy'
    has no attribute 'logic'") until a restart."""
    finished = subprocess.run(
        [sys.executable, "-c", CHILD, *MOMENTS], capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    reports = json.loads(finished.stdout.strip().splitlines()[-1])
    for moment in MOMENTS:
        report = reports[moment]
        assert "error" not in report, f"{moment}:\n{report['error']}"
        assert report["fired"], f"{moment}: the interrupt was never sent"
        assert report["first"] in ("raised", "interrupted"), (moment, report)
        assert report["second"] == "completed" and report["improved"], (moment, report)
    assert reports["step"]["first"] == "interrupted"  # after the step: inside training
