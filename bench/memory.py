"""How much memory do pretraining and evaluation take on the largest embedded datasets?

Each measurement runs in a fresh Python process, so one cannot inherit another's peak, and
reports that process's peak resident memory (`resource.getrusage(RUSAGE_SELF).ru_maxrss`):
everything it ever held at once, Python, torch and the data included.

    torch             import torch, nothing else: most of the floor
    baseline          import mtkit, load the digits and the tweets: the floor under the rest
    digits            a denoising autoencoder (64→256→64) pretrained on the 1,197-image pool
                      (100 epochs), then evaluated: reconstruction error, k-NN and linear probe,
                      and a classifier's predictions on the test images
    tweets            masked-token pretraining, one epoch over the 32,181 non-test tweets, then
                      the 5,000 test tweets embedded and evaluated: masked-token error, linear
                      probe, a classifier's logits and predictions
    tweets-malloc     the same as tweets, with glibc's malloc told to hand large freed blocks
                      back (MALLOC_MMAP_THRESHOLD_=131072; Linux only): batches of varying
                      length leave its heap fragmented, and most of the tweets row is that
    tweets-eval-5k    the evaluation alone, of an untrained encoder, on the 5,000 test tweets
    tweets-eval-20k   the same on 20,000 tweets: batched evaluation costs the same memory
                      whatever the number of texts, so the two should differ by the texts only

    python bench/memory.py                          # print the table
    python bench/memory.py --markdown BENCHMARKS.md # also write it as a section there
    python bench/memory.py --measure tweets         # one measurement, in this process
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks_md import machine, write_section  # bench/benchmarks_md.py (scripts run from bench/)

SECTION_TITLE = "## Memory (bench/memory.py)"
BOUND_MB = 2000  # what the kit promises: every measurement below stays under this
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # see tweets-malloc above
TEST_SIZE = 5000  # the text benchmark's test split (bench/text.py)


def peak_mb() -> float:
    """This process's peak resident memory so far, in MB (ru_maxrss: KB on Linux, B on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def torch_only() -> dict:
    import torch

    return {"torch": torch.__version__}


def baseline() -> dict:
    import mtkit as mt

    mt.load_images("digits"), mt.load_text("tweets")
    return {}


def digits() -> dict:
    import mtkit as mt
    from mtkit.evaluation.metrics import knn_accuracy, linear_probe_accuracy

    split = mt.few_labels(mt.load_images("digits"), 10, test_size=500, seed=0)
    mt.seed_everything(0)
    model = mt.DenseAutoencoder(hidden_sizes=(256,), latent_size=64)
    mt.pretrain_autoencoder(
        model,
        split.unlabelled,
        noise="gaussian",
        noise_level=0.4,
        epochs=100,
        lr=1e-2,
        batch_size=128,
        schedule="cosine",
        val_images=split.validation,
        progress=False,
    )
    classifier = mt.Classifier(model.encoder, 10)
    return {
        "reconstruction error": mt.reconstruction_error(model, split.test),
        "k-NN accuracy": knn_accuracy(model.encoder, split.labelled, split.test),
        "linear probe accuracy": linear_probe_accuracy(model.encoder, split.labelled, split.test),
        "predictions": len(mt.predict(classifier, split.test.images)),
    }


def tweets() -> dict:
    import mtkit as mt

    split = tweet_split()
    config = mt.TextPretrainConfig(epochs=1)
    pretrained = mt.pretrained_text_encoder(split.unlabelled, config, cache=False, progress=False)
    return evaluate_text(pretrained, split.labelled, split.test)


def tweets_eval(count: int) -> dict:
    import mtkit as mt
    from mtkit.data import Tokenizer

    split = tweet_split()
    texts = split.test if count <= len(split.test) else tweets_like(split, count)
    mt.seed_everything(0)
    tokenizer = Tokenizer.fit(split.unlabelled.texts, max_vocab=8000)
    encoder = mt.TextEncoder(vocab_size=tokenizer.vocab_size, max_length=48)
    pretrained = mt.PretrainedText(mt.MaskedTokenModel(encoder), tokenizer, mt.History(), False)
    return evaluate_text(pretrained, split.labelled, texts)


def tweet_split():
    import mtkit as mt

    return mt.few_labels(
        mt.load_text("tweets"), 100, validation_per_class=100, test_size=TEST_SIZE, seed=0
    )


def tweets_like(split, count: int):
    """`count` labelled tweets: the test tweets, then pool tweets with the labels they had."""
    import torch

    pool = split.unlabelled
    extra = count - len(split.test)
    texts = split.test.texts + pool.texts[:extra]
    labels = torch.cat([split.test.labels, split.unlabelled_labels_for_evaluation()[:extra]])
    return type(split.test)(texts, labels, split.test.class_names)


def evaluate_text(pretrained, labelled, test) -> dict:
    """Everything evaluation does with the test texts, each batched its own way."""
    import mtkit as mt
    from mtkit.evaluation.metrics import embed, linear_probe_accuracy

    encoder, tokenizer = pretrained.encoder, pretrained.tokenizer
    ids, _ = test.tensors_for(tokenizer, max_length=48)
    classifier = mt.Classifier(encoder, len(test.class_names))
    evaluation = mt.evaluate_model(classifier, test, tokenizer=tokenizer)
    return {
        "texts": len(test),
        "embedding": list(embed(encoder, test, tokenizer=tokenizer).shape),
        "masked-token error": mt.masked_token_error(pretrained, test),
        "linear probe accuracy": linear_probe_accuracy(
            encoder, labelled, test, tokenizer=tokenizer
        ),
        "logits": list(evaluation.logits.shape),
        "predictions": len(mt.predict(classifier, ids)),
    }


# name: (what the table calls it, the function, environment variables for its process)
MEASUREMENTS = {
    "torch": ("import torch alone", torch_only, {}),
    "baseline": ("import mtkit, load digits and tweets", baseline, {}),
    "digits": ("digits: autoencoder pretraining (100 epochs) + evaluation", digits, {}),
    "tweets": (
        "tweets: masked-token pretraining (1 epoch, 32,181 tweets) + evaluation of 5,000",
        tweets,
        {},
    ),
    "tweets-malloc": ("the same, with MALLOC_MMAP_THRESHOLD_=131072", tweets, MALLOC),
    "tweets-eval-5k": ("tweets: evaluation alone, 5,000 texts", lambda: tweets_eval(5000), {}),
    "tweets-eval-20k": (
        "tweets: evaluation alone, 20,000 texts",
        lambda: tweets_eval(20000),
        {},
    ),
}


def measure(name: str) -> dict:
    """Run one measurement here; returns its peak memory, seconds and what it computed."""
    started = time.perf_counter()
    details = MEASUREMENTS[name][1]()
    return {"peak_mb": peak_mb(), "seconds": time.perf_counter() - started, "details": details}


def measure_in_fresh_process(name: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--measure", name],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "MTKIT_DEVICE": "cpu", **MEASUREMENTS[name][2]},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown_section(results: dict[str, dict]) -> str:
    rows = [
        f"| {MEASUREMENTS[name][0]} | {r['peak_mb']:,.0f} | "
        f"{r['peak_mb'] - results['baseline']['peak_mb']:+,.0f} | {r['seconds']:.0f} |"
        for name, r in results.items()
    ]
    worst = max(results, key=lambda name: results[name]["peak_mb"])
    kept = results["tweets"]["peak_mb"] - results["tweets-malloc"]["peak_mb"]
    same = results["tweets"]["details"] == results["tweets-malloc"]["details"]
    growth = results["tweets-eval-20k"]["peak_mb"] - results["tweets-eval-5k"]["peak_mb"]
    # Unbatched, one layer's attention weights alone: texts × heads × 48 × 48 float32.
    unbatched = 20000 * 4 * 48 * 48 * 4 / 2**20
    lines = [
        SECTION_TITLE,
        "",
        "Peak resident memory of one fresh Python process per row (`ru_maxrss`: everything the "
        "process held at its fullest, interpreter, torch and data included), on the CPU. The "
        "second column is the peak above the baseline row, the cost of the work itself.",
        "",
        "| what runs | peak MB | above baseline MB | seconds |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"- Bound: every row stays under {BOUND_MB:,} MB; the largest is "
        f"{results[worst]['peak_mb']:,.0f} MB ({MEASUREMENTS[worst][0]}). "
        f"{'Within the bound.' if results[worst]['peak_mb'] < BOUND_MB else 'OVER THE BOUND.'}",
        f"- Pretraining on tweets batches 128 texts, trimmed to their longest: batches of "
        f"varying size leave glibc's heap fragmented, and {kept:,.0f} MB of its peak is freed "
        "memory malloc kept, not tensors (the malloc row: the same run, "
        f"{'the same results' if same else 'RESULTS DIFFER'}).",
        f"- Evaluation is batched (embedding and logits 1,024 texts at a time, masked-token "
        f"error 256, pretraining 128): evaluating 20,000 texts instead of 5,000 raised the peak "
        f"by {growth:+,.0f} MB. All 20,000 at once would need about {unbatched:,.0f} MB for "
        "one layer's attention weights alone.",
        "",
        f"Measured on {machine()}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure", choices=list(MEASUREMENTS), help="one measurement, here")
    parser.add_argument("--markdown", type=Path, help="write the table as a section of this file")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    results = {}
    for name in MEASUREMENTS:
        results[name] = measure_in_fresh_process(name)
        print(f"{name}: {results[name]['peak_mb']:,.0f} MB, {results[name]['seconds']:.0f} s")
    section = markdown_section(results)
    print(section)
    if args.markdown:
        write_section(args.markdown, SECTION_TITLE, section)


if __name__ == "__main__":
    main()
