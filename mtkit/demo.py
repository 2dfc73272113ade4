"""The headless demo behind `make demo` / `python -m mtkit demo`.

Stage 1 of the multi-stage story on the embedded digits: pretrain a small denoising autoencoder
on the unlabelled pool, over several seeds, and report how much the reconstruction error on the
held-out test images fell, with the spread over seeds and the time it took.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mtkit.data import few_labels, load_images
from mtkit.models import DenseAutoencoder
from mtkit.pretrain import pretrain_autoencoder, reconstruction_error
from mtkit.utils import check_positive, seed_everything


@dataclass
class DemoResult:
    seed: int
    error_before: float
    error_after: float
    seconds: float


def run_demo(seeds: int = 3, epochs: int = 60, out_dir: str | Path = "results/demo") -> list:
    """Pretrain on digits for `seeds` seeds; print a table, save results.json and a figure.

    Returns the list of DemoResult, one per seed.
    """
    check_positive("seeds", seeds, integer=True)
    check_positive("epochs", epochs, integer=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digits = load_images("digits")
    results, model, split = [], None, None
    for seed in range(seeds):
        split = few_labels(digits, labels_per_class=10, seed=seed)
        seed_everything(seed)
        model = DenseAutoencoder(
            input_shape=digits.image_shape, hidden_sizes=(128,), latent_size=32
        )
        before = reconstruction_error(model, split.test)
        started = time.perf_counter()
        pretrain_autoencoder(
            model,
            split.unlabelled,
            noise="gaussian",
            noise_level=0.3,
            epochs=epochs,
            val_images=split.validation,
            progress=False,
            seed=seed,
        )
        seconds = time.perf_counter() - started
        results.append(DemoResult(seed, before, reconstruction_error(model, split.test), seconds))

    _print_table(results, digits, split)
    (out_dir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    _save_figure(model, split, out_dir / "reconstructions.png")
    print(f"\nSaved {out_dir / 'results.json'} and {out_dir / 'reconstructions.png'}")
    return results


def _mean_spread(values) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def _print_table(results, digits, split) -> None:
    print(
        f"mtkit demo: denoising autoencoder pretraining on {digits.name} "
        f"({len(split.unlabelled)} unlabelled images, {len(split.test)} test images, "
        f"{len(results)} seeds; mean ± standard deviation)\n"
    )
    rows = [
        ("stage", "measure", "value"),
        (
            "before pretraining",
            "test reconstruction MSE",
            _mean_spread([r.error_before for r in results]),
        ),
        (
            "after pretraining",
            "test reconstruction MSE",
            _mean_spread([r.error_after for r in results]),
        ),
        ("pretraining", "seconds", _mean_spread([r.seconds for r in results])),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _save_figure(model, split, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from mtkit.plots import plot_reconstructions

    figure = plot_reconstructions(model, split.test, count=10, title="test digits and rebuilds")
    figure.savefig(path, dpi=100)
