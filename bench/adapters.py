"""Adapters vs fine-tuning on few labels: accuracy against the share of parameters that train.

For each seed: split digits into 20 labelled examples per class, 20 for validation, a 500-image
test set (the same for every seed) and the unlabelled pool; pretrain a denoising dense
autoencoder (64→256→64) on the pool; then adapt a copy of its encoder with each method:
  linear probe        frozen encoder, linear head
  MLP head 64         frozen encoder, a head with one hidden layer of 64 units
  LoRA r=1 ... 16     LoRA on both encoder layers, plus a head
  bottleneck 4 ... 64 bottleneck adapters after both encoder blocks, plus a head
  full fine-tuning    every weight trains
and report test accuracy (mean ± std over seeds), the trainable share of the parameters, whether
the best LoRA and bottleneck adapter with at most 15% trainable (picked on validation accuracy,
never on test) come within 2 points of full fine-tuning, and the adapter file size vs the model.

    python bench/adapters.py                              # print the tables
    python bench/adapters.py --markdown BENCHMARKS.md     # also write them as a section there
    python bench/adapters.py --tune                       # the learning-rate search on validation
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from benchmarks_md import write_section  # bench/benchmarks_md.py (scripts run from bench/)

import mtkit as mt
from mtkit.experiments.adapters import AdaptationRun, adapt_encoder, summarize_runs
from mtkit.stages import adapters as A

SECTION_TITLE = "## Adapters (bench/adapters.py)"
LABELS_PER_CLASS = 20
TEST_SIZE = 500
ENCODER = {"hidden_sizes": (256,), "latent_size": 64}
PRETRAIN = {"noise": "gaussian", "noise_level": 0.3, "epochs": 200, "lr": 3e-3, "batch_size": 128}
METHODS = [
    ("linear_probe", None),
    ("mlp_head", 64),
    *[("lora", rank) for rank in (1, 2, 4, 8, 16)],
    *[("bottleneck", size) for size in (4, 8, 16, 32, 64)],
    ("full", None),
]
BUDGET_PERCENT = 15.0  # "at most 15% of the parameters trainable"
WITHIN_POINTS = 2.0  # "within 2 accuracy points of full fine-tuning"
TUNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def pretrained_encoder(split, seed: int):
    mt.seed_everything(seed)
    autoencoder = mt.build_autoencoder("dense", **ENCODER)
    mt.pretrain_autoencoder(
        autoencoder,
        split.unlabelled,
        val_images=split.validation,
        seed=seed,
        progress=False,
        **PRETRAIN,
    )
    return autoencoder.encoder


def run_all(seeds: int) -> tuple[list[AdaptationRun], dict]:
    digits = mt.load_images("digits")
    runs, sizes = [], {}
    for seed in range(seeds):
        split = mt.few_labels(digits, LABELS_PER_CLASS, test_size=TEST_SIZE, seed=seed, test_seed=0)
        encoder = pretrained_encoder(split, seed)
        for method, size in METHODS:
            classifier, run = adapt_encoder(encoder, split, method, size, seed=seed)
            runs.append(run)
            if seed == 0 and method in ("lora", "bottleneck") and size in (4, 16):
                sizes[run.label] = adapter_file_size(classifier)
                # What the file holds beyond 4 bytes per weight: metadata and zip headers.
                overhead = sizes[run.label] - 4 * run.parameters.trainable
                sizes["overhead"] = max(sizes.get("overhead", 0), overhead)
        sizes.setdefault("whole classifier", model_file_size(encoder))
        print(f"seed {seed}: done", flush=True)
    return runs, sizes


def adapter_file_size(classifier) -> int:
    with tempfile.TemporaryDirectory() as folder:
        return A.save_adapter(classifier, Path(folder) / "adapter.pt", "task").stat().st_size


def model_file_size(encoder) -> int:
    classifier = mt.Classifier(encoder, num_classes=10)
    with tempfile.TemporaryDirectory() as folder:
        return mt.save_model(Path(folder) / "model.pt", classifier).stat().st_size


def best_within_budget(summaries, method: str):
    """The configuration of `method` with the best *validation* accuracy within the budget."""
    allowed = [s for s in summaries if s.method == method and s.percent <= BUDGET_PERCENT]
    return max(allowed, key=lambda s: s.val_mean) if allowed else None


def verdicts(summaries) -> list[str]:
    full = next(s for s in summaries if s.method == "full")
    lines = []
    for method, name in (("lora", "LoRA"), ("bottleneck", "bottleneck adapter")):
        best = best_within_budget(summaries, method)
        if best is None:
            lines.append(
                f"- No {name} has at most {BUDGET_PERCENT:.0f}% of the parameters trainable."
            )
            continue
        gap = 100 * (full.mean - best.mean)
        position = f"{abs(gap):.1f} points {'behind' if gap > 0 else 'ahead of'} full fine-tuning"
        reached = "yes" if gap <= WITHIN_POINTS else "**no**"
        lines.append(
            f"- Best {name} with at most {BUDGET_PERCENT:.0f}% trainable (chosen on validation): "
            f"**{best.label}** ({best.percent:.1f}% trainable), {100 * best.mean:.1f} ± "
            f"{100 * best.std:.1f}% vs {100 * full.mean:.1f} ± {100 * full.std:.1f}%: {position}. "
            f"Within {WITHIN_POINTS:.0f} points: {reached}."
        )
    frozen = [s for s in summaries if s.method in ("linear_probe", "mlp_head")]
    best_frozen = max(frozen, key=lambda s: s.val_mean)
    adapters = [s for s in summaries if s.method in ("lora", "bottleneck")]
    best_adapter = max(adapters, key=lambda s: s.val_mean)
    gap = 100 * (best_adapter.mean - best_frozen.mean)
    spread = 100 * max(best_adapter.std, best_frozen.std)
    if abs(gap) <= spread:
        comparison = "within the seed spread of"
    else:
        comparison = "better than" if gap > 0 else "worse than"
    lines.append(
        f"- The best adapter on validation ({best_adapter.label}, {100 * best_adapter.mean:.1f}%) "
        f"is {comparison} the best frozen encoder with a trained head on validation "
        f"({best_frozen.label}, "
        f"{100 * best_frozen.mean:.1f}%; gap {gap:+.1f} points, largest spread "
        f"{spread:.1f})."
    )
    return lines


def markdown(summaries, sizes: dict, args, seconds: float) -> str:
    lines = [
        SECTION_TITLE,
        "",
        f"Digits, {LABELS_PER_CLASS} labels per class (+{LABELS_PER_CLASS} per class for "
        f"validation), {TEST_SIZE} test images (test_seed 0), {args.seeds} seeds. Encoder: "
        f"denoising dense autoencoder 64→{ENCODER['hidden_sizes'][0]}→{ENCODER['latent_size']}, "
        f"pretrained per seed on the unlabelled pool ({PRETRAIN['epochs']} epochs). Every method "
        "trains with mtkit.fine_tune (AdamW, weight decay 1e-2, early stopping on validation "
        "loss, patience 30, at most 150 epochs; LoRA alpha = rank) at its learning rate from "
        "mtkit.experiments.adapters.DEFAULT_LEARNING_RATES (chosen with --tune on validation "
        "accuracy). "
        "Trainable % is of the parameters the adapted classifier uses.",
        "",
        "| method | trainable params | trainable % | test accuracy (mean ± std) | s / run |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.label} | {s.trainable:,} of {s.total:,} | {s.percent:.1f} | "
            f"{100 * s.mean:.1f} ± {100 * s.std:.1f} | {s.seconds:.1f} |"
        )
    lines += ["", *verdicts(summaries), ""]
    overhead = sizes.pop("overhead")
    whole = sizes["whole classifier"]
    lines.append("| file | size | vs whole classifier |")
    lines.append("|---|---:|---:|")
    for name, size in sizes.items():
        lines.append(f"| {name} | {size / 1024:,.1f} KB | {size / whole:.0%} |")
    lines += [
        "",
        "An adapter file holds the adapter's weights and its task head (4 bytes each), plus at "
        f"most {overhead / 1024:.1f} KB of metadata (where each piece goes, its config, the "
        "backbone's tensor names and shapes and a hash of its weights) and zip headers. On this "
        "33k-parameter network the adapter's share of the file is about its share of the "
        "parameters; on a large backbone the same adapter would be a vanishing fraction.",
        "",
        f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
        f"thread(s); whole benchmark {seconds / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def tune(seeds: int) -> None:
    """Mean validation accuracy per method and learning rate (the test set is never looked at)."""
    digits = mt.load_images("digits")
    representative = [("linear_probe", None), ("mlp_head", 64), ("lora", 4), ("bottleneck", 16)]
    scores = {}
    for seed in range(seeds):
        split = mt.few_labels(digits, LABELS_PER_CLASS, test_size=TEST_SIZE, seed=seed, test_seed=0)
        encoder = pretrained_encoder(split, seed)
        for method, size in [*representative, ("full", None)]:
            for lr in TUNING_RATES:
                _, run = adapt_encoder(encoder, split, method, size, seed=seed, lr=lr)
                scores.setdefault((run.label, lr), []).append(run.val_accuracy)
    print("mean validation accuracy (%) over", seeds, "seeds")
    print("| method | " + " | ".join(f"lr {lr:g}" for lr in TUNING_RATES) + " | best |")
    for label in dict.fromkeys(label for label, _ in scores):
        means = {lr: statistics.mean(scores[label, lr]) for lr in TUNING_RATES}
        row = [f"{100 * means[lr]:.2f}" for lr in TUNING_RATES]
        best = max(TUNING_RATES, key=lambda lr: means[lr])  # a tie goes to the smaller rate
        print(f"| {label} | " + " | ".join(row) + f" | {best:g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    # One thread: these networks are too small to gain from more, and extra threads slow down
    # badly when other processes share the CPU.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--markdown", type=Path, help="write the tables as a section of this file")
    parser.add_argument("--tune", action="store_true", help="search learning rates instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tune:
        tune(min(args.seeds, 3))
        return
    started = time.perf_counter()
    runs, sizes = run_all(args.seeds)
    section = markdown(summarize_runs(runs), sizes, args, time.perf_counter() - started)
    print(section)
    if args.markdown:
        write_section(args.markdown, SECTION_TITLE, section)
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
