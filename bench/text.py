"""Does masked-token pretraining help a small Transformer learn sentiment from few labels?

Runs `mtkit.experiments.label_efficiency` (the image track's, unchanged) on the embedded tweets
with the text line-up of `mtkit.experiments.text.default_text_methods`: TF-IDF + logistic
regression, the Transformer from scratch, and the pretrained Transformer fine-tuned fully,
with LoRA and with prompt tuning. A fixed 5,000-tweet test split (test_seed=0), 3 seeds,
100 and 1,000 labelled tweets per class (300 and 3,000 in all) and 100 validation tweets per
class. One masked-token pretraining (TextPretrainConfig defaults, on all 32,181 non-test
tweets) serves every run; it is read from ~/.cache/mtkit when a notebook already made it.

    python bench/text.py                          # print the tables
    python bench/text.py --markdown BENCHMARKS.md # also write them as a section there
    python bench/text.py --tune                   # learning rates by validation accuracy on
                                                  # seeds 100-102 (never the benchmark's)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks_md import machine, write_section  # bench/benchmarks_md.py (scripts run from bench/)

from mtkit.data import few_labels, load_text
from mtkit.experiments import (
    PretrainCache,
    TextFineTuneMethod,
    default_text_methods,
    label_efficiency,
    paired_difference,
    summarize,
)
from mtkit.experiments.text import TEXT_LR
from mtkit.stages.pretrain import TextPretrainConfig

SECTION_TITLE = "## Text: pretraining, fine-tuning and adapters on tweets (bench/text.py)"
TEST_SIZE = 5000
VALIDATION_PER_CLASS = 100
SCRATCH = "same Transformer from scratch"
FULL = "pretrained + full"
TFIDF = "TF-IDF + logistic regression"
RESULTS = Path(__file__).parent / "results" / "text.json"
# The copy that installs with mtkit, for notebook 06 wherever it is opened (mtkit.data.shipped).
PACKAGED = Path(__file__).parents[1] / "mtkit" / "data" / "results" / "text.json"


def tune(tweets, seeds=(100, 101, 102), labels_per_class: int = 100) -> list[str]:
    """Validation accuracy of each learning rate per method, on seeds the benchmark never uses.

    The test tweets are those of the benchmark (test_seed=0) and are never scored here.
    """
    # Rates a factor of ~3 apart around each method's usual range, extended where the best
    # was at an end.
    kinds = {
        "scratch": (
            (3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
            lambda lr: TextFineTuneMethod("scratch", options={"lr": lr}),
        ),
        "full": ((1e-4, 3e-4, 1e-3), lambda lr: TextFineTuneMethod("full", options={"lr": lr})),
        "lora": (
            (1e-3, 3e-3, 1e-2, 3e-2),
            lambda lr: TextFineTuneMethod(addition="lora", options={"lr": lr}),
        ),
        "prompt": (
            (3e-3, 1e-2, 3e-2),
            lambda lr: TextFineTuneMethod(addition="prompt", options={"lr": lr}),
        ),
    }
    cache, lines = PretrainCache(), []
    for kind, (grid, make) in kinds.items():
        scores = {}
        for lr in grid:
            method, accuracies = make(lr), []
            for seed in seeds:
                split = few_labels(
                    tweets,
                    labels_per_class,
                    validation_per_class=VALIDATION_PER_CLASS,
                    test_size=TEST_SIZE,
                    seed=seed,
                )
                fitted = method.fine_tuned(split, seed, cache)
                guesses = method.predict(fitted, split.validation, cache)
                accuracies.append((guesses == split.validation.labels).float().mean().item())
            scores[lr] = statistics.mean(accuracies)
        best = max(scores, key=scores.get)
        cells = ", ".join(f"{lr:g}: {100 * score:.1f}" for lr, score in scores.items())
        lines.append(f"{kind}: validation accuracy % by lr {{{cells}}} → best {best:g}")
        print(lines[-1], flush=True)
    return lines


def headline(table) -> list[str]:
    """The comparisons the issue asks about, computed from the table, per labelled-set size."""
    summary = {(s.method, s.labels_per_class): s for s in summarize(table)}
    lines = []
    for k in table.labels_per_class():
        if (FULL, k) not in summary or (SCRATCH, k) not in summary:
            continue
        full, scratch = summary[(FULL, k)], summary[(SCRATCH, k)]
        gap = 100 * (full.accuracy_mean - scratch.accuracy_mean)
        paired = paired_difference(table, FULL, SCRATCH, k)
        lines.append(
            f"- {3 * k:,} labels: pretrained + full {100 * full.accuracy_mean:.1f}% vs from "
            f"scratch {100 * scratch.accuracy_mean:.1f}%: {gap:+.1f} points "
            f"({'at least' if gap >= 2 else 'less than'} 2); better on {paired.wins} of "
            f"{len(paired.differences)} seeds, {paired.verdict()} scratch."
        )
        if (TFIDF, k) in summary:
            tfidf = summary[(TFIDF, k)]
            best_neural = max(
                (s for (name, kk), s in summary.items() if kk == k and name != TFIDF),
                key=lambda s: s.accuracy_mean,
            )
            gap = 100 * (best_neural.accuracy_mean - tfidf.accuracy_mean)
            lines.append(
                f"- {3 * k:,} labels: TF-IDF + logistic regression {100 * tfidf.accuracy_mean:.1f}%"
                f" (macro-F1 {100 * tfidf.macro_f1_mean:.1f}) vs the best Transformer, "
                f"{best_neural.method}, {100 * best_neural.accuracy_mean:.1f}% (macro-F1 "
                f"{100 * best_neural.macro_f1_mean:.1f}): {gap:+.1f} points."
            )
    return lines


def markdown_section(table, seconds: float, pretrain_seconds: float, tune_lines=()) -> str:
    seeds = sorted({row.seed for row in table})
    config = TextPretrainConfig()
    lines = [
        SECTION_TITLE,
        "",
        f"Tweets (the embedded corpus, 37,181 texts after cleaning), a fixed {TEST_SIZE:,}-tweet "
        f"test split (`few_labels(tweets, k, validation_per_class={VALIDATION_PER_CLASS}, "
        f"test_size={TEST_SIZE}, seed=s, test_seed=0)`, s in {seeds}): k labelled tweets per class "
        "(3k in all, balanced), 100 per class for validation (early stopping, TF-IDF's C). The "
        "test set keeps the corpus's imbalance (43% negative, 39% neutral, 18% positive), so "
        "macro-F1 is reported beside accuracy. Mean ± std over seeds.",
        "",
        f"Pretraining: masked tokens (15%), a Transformer of width {config.width}, {config.depth} "
        f"blocks, {config.heads} heads, {config.vocab_size:,}-word vocabulary, {config.epochs} "
        f"epochs over the 32,181 non-test tweets ({pretrain_seconds:.0f} s when it ran here, "
        "once for every run). Fine-tuning: AdamW, batches of 32, early stopping on validation "
        f"loss; learning rates {TEXT_LR} chosen with `--tune` on validation accuracy of seeds "
        "100-102. LoRA: rank 4 on every attention query and value projection; prompt tuning: "
        "8 vectors initialised from random word embeddings; both train their head too.",
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
        lines += [
            "Learning-rate search (`--tune`, 300 labels, validation accuracy of seeds 100-102; "
            "the last run with --tune):",
            "",
        ]
        lines += [f"- {line}" for line in tune_lines] + [""]
    lines.append(f"Whole script: {seconds / 60:.1f} minutes on {machine()}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--markdown", type=Path, help="write the tables as a section of this file")
    parser.add_argument("--tune", action="store_true", help="search learning rates first")
    args = parser.parse_args()
    started = time.perf_counter()
    tweets = load_text("tweets")
    if args.tune:
        tune_lines = tune(tweets)
    else:  # the last --tune run's findings, which chose TEXT_LR, stay in the report
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        tune_lines = previous.get("tune", [])
    cache = PretrainCache()
    table = label_efficiency(
        tweets,
        default_text_methods(),
        labels_per_class=args.labels,
        seeds=range(args.seeds),
        test_size=TEST_SIZE,
        validation_per_class=VALIDATION_PER_CLASS,
        cache=cache,
        log=lambda line: print(line, flush=True),
    )
    seconds = time.perf_counter() - started
    pretrain_seconds = max(row.pretrain_seconds for row in table)
    section = markdown_section(table, seconds, pretrain_seconds, tune_lines)
    print(section)
    if args.markdown:
        write_section(args.markdown, SECTION_TITLE, section)
    # The rows, for notebook 06's label-efficiency plot: numbers this script produced.
    saved = {"machine": machine(), "seconds": seconds, "tune": tune_lines}
    text = json.dumps({**saved, "rows": table.to_dicts()}, indent=1) + "\n"
    for path in (RESULTS, PACKAGED):
        path.parent.mkdir(exist_ok=True, parents=True)
        path.write_text(text)


if __name__ == "__main__":
    main()
