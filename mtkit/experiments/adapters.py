"""How few trainable parameters are enough? One adaptation method on a copy of an encoder,
trained and measured; many such runs (methods × sizes × seeds) summarised into a table:

    linear_probe   the encoder frozen, a new linear head
    mlp_head       the encoder frozen, a new head with one hidden layer of `size` units
    lora           LoRA of rank `size` on every Linear/Conv2d of the encoder, and a new head
    bottleneck     bottleneck adapters of width `size` after every block, and a new head
    full           every weight learns

Each is a strategy × an addition of mtkit.stages.method, attached and trained there. These are
the experiment helpers behind notebook 04 and bench/adapters.py.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

from torch import nn

from mtkit.core.utils import check_choice, check_positive, seed_everything
from mtkit.evaluation.stats import mean_and_spread
from mtkit.models import Classifier
from mtkit.stages.adapters import ParameterCount, trainable_parameters
from mtkit.stages.method import (
    Addition,
    Bottleneck,
    LoRA,
    MLPHead,
    accuracy,
    attach,
    train_method,
)

ADAPTATION_METHODS = ("linear_probe", "mlp_head", "lora", "bottleneck", "full")
SIZED_METHODS = ("mlp_head", "lora", "bottleneck")
# Learning rates per method: the best mean validation accuracy over 3 seeds among 3e-4 ... 3e-2
# (`python bench/adapters.py --tune`: digits, 20 labels per class, 150 epochs with patience 30,
# the dense 64→256→64 denoising encoder). This protocol differs from label_efficiency's (fewer
# epochs, a pool-standardised head), so its linear probe settled on a smaller rate than the
# image track's IMAGE_LR; neighbouring rates were mostly within 1% of each other.
DEFAULT_LEARNING_RATES = {
    "linear_probe": 1e-3,
    "mlp_head": 1e-3,
    "lora": 3e-3,
    "bottleneck": 1e-2,
    "full": 3e-3,
}


def strategy_and_addition(method: str, size: int | None, alpha: float | None = None):
    """One of ADAPTATION_METHODS as (strategy, Addition or None)."""
    check_choice("method", method, ADAPTATION_METHODS)
    if method in SIZED_METHODS:
        check_positive(f"size (for {method})", size, integer=True)
    additions: dict[str, Addition | None] = {
        "mlp_head": MLPHead(hidden=size) if method == "mlp_head" else None,
        "lora": LoRA(rank=size, alpha=alpha) if method == "lora" else None,
        "bottleneck": Bottleneck(size=size) if method == "bottleneck" else None,
    }
    return ("full" if method == "full" else "linear_probe"), additions.get(method)


@dataclass
class AdaptationRun:
    """One method, trained once on one split: how well it did and what it cost.

    size: LoRA rank, bottleneck width or MLP-head width (None for linear_probe and full).
    parameters: trainable vs used parameters of the adapted classifier.
    """

    method: str
    size: int | None
    seed: int
    test_accuracy: float
    val_accuracy: float
    parameters: ParameterCount
    seconds: float

    @property
    def label(self) -> str:
        """A short name for tables and legends, e.g. "LoRA r=4"."""
        return {
            "linear_probe": "linear probe",
            "mlp_head": f"frozen encoder + MLP head {self.size}",
            "lora": f"LoRA r={self.size}",
            "bottleneck": f"bottleneck {self.size}",
            "full": "full fine-tuning",
        }[self.method]


def adapt_encoder(
    encoder: nn.Module,
    split,
    method: str,
    size: int | None = None,
    *,
    seed: int = 0,
    epochs: int = 150,
    lr: float | None = None,
    alpha: float | None = None,
    patience: int | None = 30,
    **fine_tune_options,
):
    """Adapt a copy of a pretrained `encoder` to a few-label task with one method; measure it.

    encoder: e.g. a pretrained autoencoder's `.encoder`; it is not changed (a copy is adapted).
    split: a FewLabelSplit. Features are standardised on its unlabelled pool, the head and
        adapters learn from `labelled`, `validation` picks the best epoch (and stops early after
        `patience` epochs without progress), and `test` gives the accuracy.
    method: one of ADAPTATION_METHODS (see the module docstring); lora and bottleneck train a
        new head of their own with the adapter (adapters.add_task_head).
    lr: default DEFAULT_LEARNING_RATES[method]. Other keyword arguments go to fine_tune.
    Returns (the adapted Classifier, an AdaptationRun).
    """
    strategy, addition = strategy_and_addition(method, size, alpha)
    lr = DEFAULT_LEARNING_RATES[method] if lr is None else lr
    started = time.perf_counter()
    seed_everything(seed)
    classifier = Classifier(copy.deepcopy(encoder), split.labelled.num_classes)
    classifier.standardize_features(split.unlabelled.tensors[0])
    attach(classifier, addition, head="new_task", adapter_name="task")
    train_method(classifier, split.labelled, strategy, addition, lr=lr,
                 validation=split.validation, epochs=epochs, patience=patience, seed=seed,
                 progress=False, **fine_tune_options)  # fmt: skip
    run = AdaptationRun(
        method=method,
        size=size if method in SIZED_METHODS else None,
        seed=seed,
        test_accuracy=accuracy(classifier, split.test),
        val_accuracy=accuracy(classifier, split.validation),
        parameters=trainable_parameters(classifier),
        seconds=time.perf_counter() - started,
    )
    return classifier, run


@dataclass
class MethodSummary:
    """The runs of one method and size over several seeds: test accuracy mean and spread."""

    label: str
    method: str
    size: int | None
    trainable: int
    total: int
    percent: float  # of the parameters the adapted model uses, trainable
    mean: float  # test accuracy
    std: float  # sample standard deviation over seeds (n − 1), as in every mtkit table
    val_mean: float
    seconds: float  # per run
    runs: int


def summarize_runs(runs: list[AdaptationRun]) -> list[MethodSummary]:
    """One MethodSummary per (method, size), in the order they first appear in `runs`."""
    groups: dict[tuple, list[AdaptationRun]] = {}
    for run in runs:
        groups.setdefault((run.method, run.size), []).append(run)
    summaries = []
    for (method, size), group in groups.items():
        test = mean_and_spread([run.test_accuracy for run in group])
        first = group[0].parameters
        summaries.append(
            MethodSummary(
                label=group[0].label,
                method=method,
                size=size,
                trainable=first.trainable,
                total=first.total,
                percent=first.percent,
                mean=test.mean,
                std=test.std,
                val_mean=sum(run.val_accuracy for run in group) / len(group),
                seconds=sum(run.seconds for run in group) / len(group),
                runs=len(group),
            )
        )
    return summaries
