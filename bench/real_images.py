"""Real images: does pretraining pay on Fashion-MNIST, with the same recipe as on digits?

Fashion-MNIST (from Debian's dataset-fashion-mnist, or torchvision's folder): the first
`--pool` training images (default 10,000, sized for 2 CPU cores) are labelled / validation /
unlabelled pool, and the first `--test` official test images (default all 10,000) are the fixed
test set, the same for every seed. 10 labelled and 10 validation images per class, 3 seeds.
Digits runs the same line-up on its usual split (500 test images, test_seed=0).

The line-up is `default_methods()` (the one recipe: nothing here is set per dataset):
scikit-learn baselines, the classifier from scratch, denoising-autoencoder and contrastive
(SimCLR) encoders fine-tuned without pseudo-labels, and the semi-supervised stages on top.
Then the two encoders themselves are compared by a linear probe and by k-NN on their frozen
features, seed by seed, with a paired verdict. Hyperparameters were chosen beforehand on
validation splits of the training images of both datasets; the test images decide nothing but
the numbers printed here.

    python bench/real_images.py                           # print the tables
    python bench/real_images.py --markdown BENCHMARKS.md  # also write them as a section there
    python bench/real_images.py --seeds 1 --pool 3000     # a quick look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks_md import machine, write_section  # bench/benchmarks_md.py (scripts run from bench/)

from mtkit.data import ImageDataset, few_labels, load_images
from mtkit.evaluation.probes import knn_accuracy, linear_probe_accuracy
from mtkit.evaluation.stats import paired_comparison
from mtkit.experiments import (
    FineTuneMethod,
    PretrainCache,
    default_methods,
    label_efficiency,
    pretrained_autoencoder,
    summarize,
)

SECTION_TITLE = "## Real images (bench/real_images.py)"
LABELS_PER_CLASS = 10
PIXELS = "logistic regression on pixels"


def fashion_mnist(pool: int, test: int) -> tuple[ImageDataset, np.ndarray]:
    """(the first `pool` training images followed by the first `test` official test images,
    the positions of the test images in it)."""
    train, official_test = load_images("fashion_mnist"), load_images("fashion_mnist", train=False)
    train, official_test = train[np.arange(pool)], official_test[np.arange(test)]
    images = torch.cat([train.images, official_test.images])
    labels = torch.cat([train.labels, official_test.labels])
    dataset = ImageDataset.from_tensors(
        images, labels, class_names=train.class_names, name="fashion_mnist"
    )
    return dataset, np.arange(pool, pool + test)


def encoder_comparison(dataset, split_options: dict, seeds, cache: PretrainCache) -> list[str]:
    """Linear probe and 5-NN accuracy (%) of each pretrained encoder's frozen features, fitted
    on the labelled images and scored on the test images, per seed; and the paired verdict of
    contrastive − autoencoder. The encoders are the cache's, the ones the table fine-tuned."""
    specs = {}
    for method in default_methods():
        if isinstance(method, FineTuneMethod) and method.chosen_strategy != "scratch":
            kind = "contrastive" if type(method.pretrain).__name__ == "ContrastiveSpec" else None
            specs.setdefault(kind or "denoising autoencoder", method.pretrain)
    scores = {(name, probe): {} for name in specs for probe in ("linear probe", "5-NN")}
    for seed in seeds:
        split = few_labels(dataset, LABELS_PER_CLASS, seed=seed, **split_options)
        for name, spec in specs.items():
            model, _ = pretrained_autoencoder(cache, spec, split, seed)
            encoder = model.encoder.eval()
            scores[(name, "linear probe")][seed] = 100 * linear_probe_accuracy(
                encoder, split.labelled, split.test
            )
            scores[(name, "5-NN")][seed] = 100 * knn_accuracy(encoder, split.labelled, split.test)
    lines = ["| frozen features | " + " | ".join(specs) + " | contrastive − autoencoder |"]
    lines.append("|---" + "|---:" * (len(specs) + 1) + "|")
    for probe in ("linear probe", "5-NN"):
        cells = [probe]
        for name in specs:
            values = list(scores[(name, probe)].values())
            spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
            cells.append(f"{np.mean(values):.1f} ± {spread:.1f}")
        if len(specs) == 2:
            autoencoder, contrastive = specs  # default_methods lists the autoencoder first
            paired = paired_comparison(scores[(contrastive, probe)], scores[(autoencoder, probe)])
            cells.append(f"{paired.mean:+.1f} points, {paired.verdict()}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(table, dataset_name: str) -> list[str]:
    """The issue's targets at 10 labels per class, each with its number and whether it holds."""
    summary = {s.method: 100 * s.accuracy_mean for s in summarize(table)}
    baselines = {PIXELS, "PCA + logistic regression", "same classifier from scratch"}
    pretrained = {m: a for m, a in summary.items() if m not in baselines and "PCA" not in m}
    plain = {m: a for m, a in pretrained.items() if not _semi_supervised(m)}
    semi = {m: a for m, a in pretrained.items() if _semi_supervised(m)}
    best_plain = max(plain, key=plain.get)
    best_semi = max(semi, key=semi.get)
    if dataset_name == "fashion_mnist":
        wanted_plain = summary[PIXELS] + 8
        plain_target = f"≥ {PIXELS} + 8 = {wanted_plain:.1f}%"
        wanted_semi, semi_target = 85.0, "≥ 85%"
    else:
        wanted_plain, plain_target = 92.0, "≥ 92%"
        wanted_semi, semi_target = 95.0, "≥ 95%"
    return [
        _target_line("best without pseudo-labels", best_plain, plain[best_plain], plain_target,
                     wanted_plain),
        _target_line("best semi-supervised", best_semi, semi[best_semi], semi_target,
                     wanted_semi),
    ]  # fmt: skip


def _semi_supervised(method: str) -> bool:
    return "self-training" in method or "consistency" in method


def _target_line(what, method, accuracy, target, wanted) -> str:
    verdict = "**holds**" if accuracy >= wanted else f"**missed by {wanted - accuracy:.1f} points**"
    return f"- {what}: {method}, {accuracy:.1f}% (target {target}): {verdict}."


def run(dataset, split_options: dict, seeds, log) -> tuple:
    cache = PretrainCache(folder=True)
    started = time.perf_counter()
    table = label_efficiency(
        dataset,
        default_methods(),
        labels_per_class=(LABELS_PER_CLASS,),
        seeds=seeds,
        cache=cache,
        log=log,
        **split_options,
    )
    comparison = encoder_comparison(dataset, split_options, seeds, cache)
    return table, comparison, time.perf_counter() - started


def markdown_section(results: dict, args, seconds: float) -> str:
    lines = [
        SECTION_TITLE,
        "",
        f"Test accuracy (%), mean ± std [95% interval] over {args.seeds} seeds, "
        f"{LABELS_PER_CLASS} labelled and {LABELS_PER_CLASS} validation images per class; "
        "`default_methods()`, the same recipe for both datasets. Pretraining uses every "
        "non-test image without its label; the test images decide nothing.",
    ]
    descriptions = {
        "fashion_mnist": f"Fashion-MNIST: the first {args.pool:,} training images (labelled, "
        f"validation and unlabelled pool) and the first {args.test:,} official test images.",
        "digits": "Digits: `few_labels(digits, 10, test_size=500, test_seed=0)`, a pool of "
        "the 1,097 other non-test images.",
    }
    for name, (table, comparison, spent) in results.items():
        lines += [
            "",
            f"### {name}",
            "",
            descriptions[name],
            "",
            table.to_markdown(),
            "Targets:",
            "",
            *targets(table, name),
            "",
            "The pretrained encoders' frozen features, fitted on the labelled images (mean ± std "
            "over seeds; paired verdict over the same seeds):",
            "",
            *comparison,
            "",
            f"{spent / 60:.1f} minutes.",
        ]
    lines += ["", f"Whole script: {seconds / 60:.1f} minutes on {machine()}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--pool", type=int, default=10_000, help="Fashion-MNIST training images")
    parser.add_argument("--test", type=int, default=10_000, help="Fashion-MNIST test images")
    parser.add_argument("--datasets", nargs="+", default=["fashion_mnist", "digits"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--markdown", type=Path, help="write the tables as a section of this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    started, results = time.perf_counter(), {}
    for name in args.datasets:
        if name == "fashion_mnist":
            dataset, test_indices = fashion_mnist(args.pool, args.test)
            split_options = {"test_indices": test_indices}
        else:
            dataset, split_options = load_images("digits"), {"test_size": 500, "test_seed": 0}
        results[name] = run(dataset, split_options, range(args.seeds), print)
    section = markdown_section(results, args, time.perf_counter() - started)
    print()
    print(section)
    if args.markdown:
        write_section(args.markdown, SECTION_TITLE, section)
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
