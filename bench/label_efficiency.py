"""How much do pretraining, each fine-tuning strategy and self-training buy with few labels?

Runs `mtkit.experiments.label_efficiency` on the embedded digits: a fixed 500-image test split
(test_seed=0), 5 seeds, 5 / 10 / 20 labelled images per class (as many again for validation),
and the default line-up of methods (scikit-learn baselines, the same classifier from scratch,
a pretrained denoising autoencoder with every strategy, pretrained + self-training).
Prints one line per run, then the table of mean ± std over seeds.

Every hyperparameter is a library default, chosen beforehand on held-out splits of the 1,297
non-test digits; the 500 test images decide nothing but the numbers reported here.

    python bench/label_efficiency.py                          # print the table
    python bench/label_efficiency.py --markdown BENCHMARKS.md # also write it as a section there
    python bench/label_efficiency.py --seeds 1 --labels 10    # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from benchmarks_md import machine, write_section  # bench/benchmarks_md.py (scripts run from bench/)

from mtkit.data import few_labels, load_images
from mtkit.evaluation.forgetting import forgetting
from mtkit.experiments import (
    FineTuneMethod,
    PretrainCache,
    default_methods,
    label_efficiency,
    pretrained_autoencoder,
    summarize,
)
from mtkit.stages.finetune import STRATEGIES

SECTION_TITLE = "## Label efficiency (bench/label_efficiency.py)"
TEST_SIZE = 500


def headline(table) -> list[str]:
    """The comparisons the issue asks about, at 10 labels per class, computed from the table."""
    summary = {(s.method, s.labels_per_class): s for s in summarize(table)}
    if not any(k == 10 for _, k in summary):
        return []

    def accuracy(method: str) -> float | None:
        row = summary.get((method, 10))
        return None if row is None else 100 * row.accuracy_mean

    pretrained = {
        method: accuracy(method)
        for method, k in summary
        if k == 10 and method.startswith("pretrained + ") and "self-training" not in method
    }
    if not pretrained:
        return []
    best = max(pretrained, key=pretrained.get)
    lines = [f"- Best pretrained strategy: {best}, {pretrained[best]:.1f}%."]
    for baseline in ("same classifier from scratch", "logistic regression on pixels"):
        if accuracy(baseline) is not None:
            gap = pretrained[best] - accuracy(baseline)
            lines.append(f"- vs {baseline} ({accuracy(baseline):.1f}%): {gap:+.1f} points.")
    for method, k in summary:
        if k == 10 and "self-training" in method:
            gain = accuracy(method) - pretrained[best]
            lines.append(
                f"- {method}: {accuracy(method):.1f}%, {gain:+.1f} points over the best "
                "pretrained strategy."
            )
    return lines


def forgetting_rows(dataset, seeds, cache: PretrainCache, labels_per_class: int = 10) -> list:
    """Per strategy (and full fine-tuning with L2-SP): test accuracy and how far fine-tuning
    moved the encoder, as (name, accuracies, error ratios, weight changes) over seeds.

    The error ratio is the test reconstruction error of (fine-tuned encoder + the pretrained
    decoder) over that of the pretrained autoencoder: 1.0 means nothing was forgotten.
    Reuses the cache's autoencoders; the fine-tuning runs are the table's, repeated (seeded).
    """
    methods = [FineTuneMethod(strategy) for strategy in STRATEGIES]
    methods.append(
        FineTuneMethod("full", options={"l2_sp": 1e-2}, title="pretrained + full + L2-SP (0.01)")
    )
    rows = []
    for method in methods:
        accuracies, ratios, changes = [], [], []
        for seed in seeds:
            split = few_labels(
                dataset, labels_per_class, test_size=TEST_SIZE, seed=seed, test_seed=0
            )
            truth = split.test.labels
            split = dataclasses.replace(split, test=split.test.without_labels())
            fitted = method.fine_tuned(split, seed, cache)
            autoencoder, _ = pretrained_autoencoder(cache, method.pretrain, split, seed)
            guesses = method.predict(fitted, split.test, cache)
            accuracies.append(100 * (guesses == truth).float().mean().item())
            moved = forgetting(autoencoder, fitted.model, split.test.images)
            ratios.append(moved.ratio)
            changes.append(moved.weight_change)
        rows.append((method.name, accuracies, ratios, changes))
    return rows


def forgetting_markdown(rows, labels_per_class: int = 10) -> list[str]:
    def mean_std(values, digits):
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"

    lines = [
        f"Forgetting at {labels_per_class} labels per class: test reconstruction error of "
        "(fine-tuned encoder + pretrained decoder) ÷ that of the pretrained autoencoder "
        "(1.00 = nothing forgotten), and ‖w − w_pretrained‖ / ‖w_pretrained‖ over the "
        "encoder's weights.",
        "",
        "| method | accuracy (%) | reconstruction error ratio | relative weight change |",
        "|---|---:|---:|---:|",
    ]
    for name, accuracies, ratios, changes in rows:
        lines.append(
            f"| {name} | {mean_std(accuracies, 1)} | {mean_std(ratios, 2)} | "
            f"{mean_std(changes, 3)} |"
        )
    return lines


def markdown_section(table, args, seconds: float, forgetting_lines=()) -> str:
    seeds = sorted({row.seed for row in table})
    pretrain = [row.pretrain_seconds for row in table if row.pretrain_seconds > 0]
    lines = [
        SECTION_TITLE,
        "",
        f"Test accuracy (%) on digits, mean ± std over {len(seeds)} seeds "
        f"(`few_labels(digits, k, test_size={TEST_SIZE}, seed=s, test_seed=0)`, s in {seeds}): "
        "the same 500 test images for every run; k labelled and k validation images per class; "
        "the rest of the 1,297 non-test images is the unlabelled pool. Pretraining (a dense "
        "denoising autoencoder, 64→256→64) uses all 1,297 non-test images without labels, "
        "once per seed; validation images serve early stopping and the choice of the best "
        "self-training round. Hyperparameters are library defaults, picked beforehand on "
        "held-out splits of the non-test images, never on these test images.",
        "",
        table.to_markdown(),
        "trainable params: parameters fitted with labels (a frozen encoder's do not count). "
        "s/run: training + prediction per run, without pretraining"
        + (f" (pretraining took {statistics.mean(pretrain):.1f} s per seed)." if pretrain else "."),
        "",
        "At 10 labels per class:",
        "",
        *headline(table),
        "",
        *forgetting_lines,
        "",
        f"Whole script: {seconds / 60:.1f} minutes on {machine()}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--labels", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--markdown", type=Path, help="write the table as a section of this file")
    parser.add_argument("--json", type=Path, help="save every row as JSON")
    parser.add_argument("--figure", type=Path, help="save the accuracy plot (png/svg/pdf)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    digits, cache = load_images("digits"), PretrainCache()
    table = label_efficiency(
        digits,
        default_methods(),
        labels_per_class=args.labels,
        seeds=range(args.seeds),
        test_size=TEST_SIZE,
        test_seed=0,
        cache=cache,
        log=print,
    )
    forgetting_lines = []
    if 10 in args.labels:
        print("forgetting at 10 labels per class ...")
        forgetting_lines = forgetting_markdown(forgetting_rows(digits, range(args.seeds), cache))
    seconds = time.perf_counter() - started
    section = markdown_section(table, args, seconds, forgetting_lines)
    print()
    print(section)
    if args.markdown:
        write_section(args.markdown, SECTION_TITLE, section)
        print(f"wrote {args.markdown}")
    if args.json:
        args.json.write_text(json.dumps(table.to_dicts(), indent=1))
        print(f"wrote {args.json}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        from mtkit.plots.experiments import plot_label_efficiency

        plot_label_efficiency(table).savefig(args.figure, dpi=120)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
