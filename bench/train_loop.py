"""How much does `mtkit.fit` cost over a hand-written PyTorch loop?

Trains the same MLP (64→256→128→10) on digits-sized data (1,437 examples, batch size 64,
AdamW) three ways, alternating between them so that machine noise hits all of them alike:
  fit           mtkit.fit on in-memory tensors (progress bar off: it only prints)
  minimal       the shortest correct loop: randperm, index, forward, backward, step
  dataloader    the same loop fed by a DataLoader over a TensorDataset
and reports the median samples/s of each and the ratio fit / minimal.

    python bench/train_loop.py                     # print the table
    python bench/train_loop.py --markdown BENCHMARKS.md   # also write it as a section there
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from benchmarks_md import write_section  # bench/benchmarks_md.py (scripts run from bench/)
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from mtkit.core.train import fit
from mtkit.core.utils import get_device

TRAIN_EXAMPLES = 1437  # the training split of sklearn's 1,797 digits
BATCH_SIZE = 64
LR = 1e-3
SECTION_TITLE = "## Training loop overhead (bench/train_loop.py)"


def digits_sized_data() -> tuple[torch.Tensor, torch.Tensor, str]:
    """x: 1437×64 floats in [0, 1], y: 1437 labels in 0..9; sklearn's digits when available."""
    try:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.data[:TRAIN_EXAMPLES], dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target[:TRAIN_EXAMPLES], dtype=torch.long)
        return x, y, "sklearn digits"
    except ImportError:  # same shapes, random values: the timing does not depend on them
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(TRAIN_EXAMPLES, 64, generator=generator)
        y = torch.randint(0, 10, (TRAIN_EXAMPLES,), generator=generator)
        return x, y, "random digits-sized data"


def make_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
    return model.append(nn.Linear(128, 10)).to(device)


def cross_entropy(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def run_fit(x, y, epochs: int, device: torch.device) -> None:
    model = make_model(device)
    fit(
        model,
        cross_entropy,
        (x, y),
        epochs=epochs,
        lr=LR,
        batch_size=BATCH_SIZE,
        device=device,
        progress=False,
    )


def run_minimal(x, y, epochs: int, device: torch.device) -> None:
    model = make_model(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    x, y = x.to(device), y.to(device)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), device=device)
        for start in range(0, len(x), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            loss = F.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def run_dataloader(x, y, epochs: int, device: torch.device) -> None:
    model = make_model(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE, shuffle=True)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


LOOPS = {"fit": run_fit, "minimal": run_minimal, "dataloader": run_dataloader}


def samples_per_second(loop, x, y, epochs: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    loop(x, y, epochs, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * len(x) / (time.perf_counter() - started)


def measure(epochs: int, repeats: int, device: torch.device) -> tuple[dict, str]:
    """Median samples/s per loop over `repeats` rounds; each round runs every loop once."""
    x, y, data_name = digits_sized_data()
    for loop in LOOPS.values():  # warm-up: first calls pay for allocations and lazy init
        loop(x, y, 1, device)
    rates = {name: [] for name in LOOPS}
    for round_number in range(repeats):
        names = list(LOOPS)
        # Rotate who goes first so a slow start or a noisy neighbour is shared fairly.
        names = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in names:
            rates[name].append(samples_per_second(LOOPS[name], x, y, epochs, device))
    return {name: statistics.median(values) for name, values in rates.items()}, data_name


def markdown_table(medians: dict, args, device: torch.device, data_name: str) -> str:
    lines = [
        SECTION_TITLE,
        "",
        f"MLP 64→256→128→10 on {TRAIN_EXAMPLES} examples ({data_name}), batch size {BATCH_SIZE}, "
        f"AdamW, {args.epochs} epochs per run, median of {args.repeats} alternating runs. "
        f"Device: {device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}.",
        "",
        "| loop | samples/s | relative to minimal |",
        "|---|---:|---:|",
    ]
    for name, rate in medians.items():
        lines.append(f"| {name} | {rate:,.0f} | {rate / medians['minimal']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short runs: the median of those shrugs off bursts of load from other processes.
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per loop")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: best)")
    parser.add_argument("--markdown", type=Path, help="write the table as a section of this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    medians, data_name = measure(args.epochs, args.repeats, device)
    table = markdown_table(medians, args, device, data_name)
    print(table)
    print(f"fit / minimal = {medians['fit'] / medians['minimal']:.3f}")
    if args.markdown:
        write_section(args.markdown, SECTION_TITLE, table)
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
