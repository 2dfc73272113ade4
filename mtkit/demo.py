"""The headless demo behind `make demo` / `python -m mtkit demo`.

The whole multi-stage pipeline, on both embedded datasets, over several seeds:

    pretrain   a denoising autoencoder (digits) / masked-token transformer (tweets) learns from
               the unlabelled pool; scored by a linear probe on its frozen features
    finetune   a linear head on the pretrained encoder learns from the few labels
    adapt      LoRA adapters on the frozen encoder, with the head, learn from the same labels

Each run is an ordinary pipeline run (mtkit.pipeline) with its own run folder; the demo prints
one table (stage, method, how the stages ended, test accuracy mean ± std over seeds, seconds)
and saves results.json and two figures. The configs are the ones in mtkit/configs/ (a test keeps
them equal). Digits vary the labelled examples and the training seed; tweets keep one split
and one pretrained encoder (pretraining takes minutes, so it is cached under ~/.cache/mtkit or
$MTKIT_CACHE after the first run) and vary the fine-tuning seed.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from mtkit.core.checkpoint import write_atomically
from mtkit.core.files import check_folder
from mtkit.core.utils import MtkitError, check_positive
from mtkit.pipeline import (
    AdaptConfig,
    DataConfig,
    FineTuneConfig,
    PipelineConfig,
    PretrainConfig,
    Run,
    run_config,
)
from mtkit.pipeline.records import format_table

DATASETS = ("digits", "tweets")


def digits_config() -> PipelineConfig:
    """The digits pipeline (configs/digits_pipeline.toml)."""
    return PipelineConfig(
        name="digits",
        data=DataConfig(dataset="digits", labels_per_class=10, test_size=500),
        pretrain=PretrainConfig(
            method="denoising_autoencoder",
            hidden_sizes=(256,),
            latent_size=64,
            noise_level=0.4,
            lr=1e-2,
            schedule="cosine",
            max_epochs=300,
            patience=30,
        ),
        finetune=FineTuneConfig(strategy="linear_probe", augment=True, max_epochs=300, patience=30),
        adapt=AdaptConfig(method="lora", size=4, max_epochs=150, patience=20, target=1.0),
    )


def tweets_config() -> PipelineConfig:
    """The tweets pipeline (configs/tweets_pipeline.toml). Pretraining uses notebook 05's
    settings and split, so the two share one cache entry."""
    return PipelineConfig(
        name="tweets",
        data=DataConfig(dataset="tweets", labels_per_class=100, test_size=5000),
        pretrain=PretrainConfig(
            method="masked_tokens", lr=2e-3, batch_size=128, max_epochs=4, seed=0
        ),
        finetune=FineTuneConfig(strategy="linear_probe", max_epochs=60, patience=15),
        adapt=AdaptConfig(method="lora", size=4, max_epochs=60, patience=10),
    )


def quick(config: PipelineConfig) -> PipelineConfig:
    """Tiny settings for a smoke test in seconds: a check that everything runs, not a result."""
    pretrain = dataclasses.replace(config.pretrain, max_epochs=min(config.pretrain.max_epochs, 5))
    if config.data.dataset == "tweets":  # a small transformer, one epoch
        pretrain = dataclasses.replace(pretrain, width=32, depth=1, max_epochs=1)
    return dataclasses.replace(
        config,
        pretrain=pretrain,
        finetune=dataclasses.replace(config.finetune, max_epochs=5),
        adapt=dataclasses.replace(config.adapt, max_epochs=5),
    )


@dataclass
class DemoRow:
    """One line of the demo's table: a stage of one dataset's pipeline, over the seeds."""

    dataset: str
    stage: str
    method: str
    ended_by: dict[str, int]  # stopped_reason -> how many seeds ended that way
    test_accuracies: list[float]  # one per seed
    seconds: list[float]  # one per seed
    notes: list[str]

    @property
    def mean(self) -> float:
        return statistics.mean(self.test_accuracies)

    @property
    def std(self) -> float:
        values = self.test_accuracies
        return statistics.stdev(values) if len(values) > 1 else 0.0


def run_demo(
    seeds: int = 3,
    datasets=DATASETS,
    *,
    quick_settings: bool = False,
    out_dir: str | Path = "results/demo",
) -> list[DemoRow]:
    """Run each dataset's pipeline over `seeds` seeds; print the table; save results and plots.

    Run folders go to out_dir/runs/. Returns one DemoRow per dataset and stage.
    """
    check_positive("seeds", seeds, integer=True)
    datasets = list(datasets)
    unknown = [name for name in datasets if name not in DATASETS]
    if unknown or not datasets:
        raise MtkitError(f"unknown dataset {unknown or datasets}; choose from {list(DATASETS)}")
    out_dir = check_folder("out_dir", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, first_runs = [], {}
    for name in datasets:
        config = digits_config() if name == "digits" else tweets_config()
        config = quick(config) if quick_settings else config
        runs = []
        for seed in range(seeds):
            data = config.data
            if name == "digits":  # a new draw of labelled examples per seed, too
                data = dataclasses.replace(data, seed=seed)
            print(f"{name}, seed {seed}: running {' → '.join(config.stages)} ...", flush=True)
            seeded = dataclasses.replace(config, seed=seed, data=data)
            runs.append(run_config(seeded, runs_dir=out_dir / "runs"))
        first_runs[name] = runs[0]
        rows += _rows(name, runs)

    print()
    print(_table(rows, seeds, datasets))
    total = time.perf_counter() - started
    print(f"\nTotal {total:.0f} s. Run folders: {out_dir / 'runs'}")
    results = [dataclasses.asdict(row) | {"mean": row.mean, "std": row.std} for row in rows]
    text = json.dumps(results, indent=2) + "\n"
    write_atomically(out_dir / "results.json", lambda file: file.write(text), mode="w")
    _save_figures(rows, first_runs, out_dir)
    print(f"Saved {out_dir / 'results.json'}, {out_dir / 'accuracy_by_stage.png'} and the curves")
    return rows


def _rows(dataset: str, runs: list[Run]) -> list[DemoRow]:
    rows = []
    for stage in runs[0].stage_names:
        records = [run.stage(stage) for run in runs]
        rows.append(
            DemoRow(
                dataset=dataset,
                stage=stage,
                method=records[0].method,
                ended_by=dict(collections.Counter(r.stopped_reason for r in records)),
                test_accuracies=[r.scores["test_accuracy"] for r in records],
                seconds=[r.seconds for r in records],
                notes=[r.note for r in records],
            )
        )
    return rows


def _table(rows: list[DemoRow], seeds: int, datasets) -> str:
    lines = [
        f"mtkit demo: the multi-stage pipeline on {' and '.join(datasets)}; test accuracy, "
        f"mean ± std over {seeds} seeds (pretrain: a linear probe on the frozen features)\n"
    ]
    lines.append(
        format_table(
            [
                {
                    "data": row.dataset,
                    "stage": row.stage,
                    "method": row.method,
                    "ended by": ", ".join(f"{k} ×{v}" for k, v in row.ended_by.items()),
                    "test accuracy": f"{row.mean:.3f} ± {row.std:.3f}",
                    "seconds per run": f"{statistics.mean(row.seconds):.1f}",
                }
                for row in rows
            ]
        )
    )
    for row in rows:
        cached = sum(note == "read from the cache" for note in row.notes)
        if cached:
            lines.append(
                f"\n{row.dataset} {row.stage}: trained {len(row.notes) - cached}× "
                f"({max(row.seconds):.0f} s), read from the cache {cached}×."
            )
    if "tweets" in datasets:
        lines.append(
            "tweets: one split and one pretrained encoder; the seeds vary fine-tuning only."
        )
    return "\n".join(lines)


def _save_figures(rows: list[DemoRow], first_runs: dict[str, Run], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless: files only
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(row.dataset for row in rows))
    figure, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        mine = [row for row in rows if row.dataset == dataset]
        ax.bar(
            [row.stage for row in mine],
            [row.mean for row in mine],
            yerr=[row.std for row in mine],
            color="tab:blue",
            capsize=4,
        )
        low = min(row.mean - row.std for row in mine)
        ax.set_ylim(max(0.0, low - 0.1), 1.0)
        ax.set_title(dataset)
        ax.set_ylabel("test accuracy")
    figure.tight_layout()
    figure.savefig(out_dir / "accuracy_by_stage.png", dpi=100)
    plt.close(figure)
    for dataset, run in first_runs.items():
        figure = run.plot()
        figure.savefig(out_dir / f"{dataset}_curves.png", dpi=100)
        plt.close(figure)
