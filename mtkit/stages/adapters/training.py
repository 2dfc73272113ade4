"""Training adapters, and comparing them with the alternatives.

train_adapter trains what is trainable now (the active adapter and its head) with fine_tune's
options. adapt_encoder runs one adaptation method on a copy of a pretrained encoder and
measures it; summarize_runs turns many such runs (methods × sizes × seeds) into a table:

    linear_probe   the encoder frozen, a new linear head
    mlp_head       the encoder frozen, a new head with one hidden layer
    lora           LoRA on every Linear/Conv2d of the encoder, and a new head
    bottleneck     bottleneck adapters after every block of the encoder, and a new head
    full           every weight learns

These are the experiment helpers behind notebook 04 and bench/adapters.py.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from mtkit.core.train import Callback
from mtkit.core.utils import MtkitError, check_choice, check_positive
from mtkit.stages.adapters.bottleneck import add_adapters
from mtkit.stages.adapters.lora import add_lora
from mtkit.stages.adapters.tasks import ParameterCount, add_task_head, trainable_parameters
from mtkit.stages.finetune import fine_tune, labelled_tensors, predict


class _KeepTrainable(Callback):
    """fine_tune decides what trains by its `strategy`; this puts the adapter's choice back
    (which parameters have requires_grad) before the first step, so the base gets no gradient."""

    def __init__(self, flags: list[tuple[nn.Parameter, bool]]):
        self.flags = flags

    def on_train_begin(self, trainer):
        for parameter, trainable in self.flags:
            parameter.requires_grad_(trainable)


def train_adapter(classifier: nn.Module, labelled, *, lr: float = 3e-3, **fine_tune_options):
    """Train the parameters that are trainable now (the active adapter and its head), in place.

    A thin layer over `fine_tune`, with the same options (validation, early stopping,
    augmentation, ...) and its FineTuneResult: fine_tune's "full" strategy would train every
    weight, so a callback puts the adapter's choice back before the first step. The frozen base
    then gets no gradients, and AdamW neither moves nor decays it.
    """
    flags = [(parameter, parameter.requires_grad) for parameter in classifier.parameters()]
    if not any(flag for _, flag in flags):
        raise MtkitError("nothing to train: add an adapter (add_lora, add_adapters, ...) first")
    callbacks = [_KeepTrainable(flags), *fine_tune_options.pop("callbacks", ())]
    return fine_tune(
        classifier, labelled, strategy="full", lr=lr, callbacks=callbacks, **fine_tune_options
    )


ADAPTATION_METHODS = ("linear_probe", "mlp_head", "lora", "bottleneck", "full")
# Learning rates per method: the best mean validation accuracy over 3 seeds among 3e-4 ... 3e-2
# (`python bench/adapters.py --tune`: digits, 20 labels per class, the dense 64→256→64 denoising
# encoder). Neighbouring rates were mostly within 1% of each other: one or two validation images.
DEFAULT_LEARNING_RATES = {
    "linear_probe": 1e-3,
    "mlp_head": 1e-3,
    "lora": 3e-3,
    "bottleneck": 1e-2,
    "full": 3e-3,
}


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
    method:
        linear_probe  the encoder is frozen, a linear head learns
        mlp_head      the encoder is frozen, a head with one hidden layer of `size` units learns
        lora          LoRA of rank `size` (and `alpha`) on every Linear/Conv2d of the encoder
        bottleneck    bottleneck adapters of width `size` after every block of the encoder
        full          every weight learns (fine_tune's "full")
        lora and bottleneck train a new head with the adapter (add_task_head).
    lr: default DEFAULT_LEARNING_RATES[method]. Other keyword arguments go to fine_tune.
    Returns (the adapted Classifier, an AdaptationRun).
    """
    from mtkit.core.utils import seed_everything
    from mtkit.models.classifier import Classifier  # here: models need not know adapters

    check_choice("method", method, ADAPTATION_METHODS)
    if method in ("mlp_head", "lora", "bottleneck"):
        check_positive(f"size (for {method})", size, integer=True)
    lr = DEFAULT_LEARNING_RATES[method] if lr is None else lr
    started = time.perf_counter()
    seed_everything(seed)
    num_classes = split.labelled.num_classes
    classifier = Classifier(copy.deepcopy(encoder), num_classes)
    classifier.standardize_features(split.unlabelled.tensors[0])
    options = dict(
        validation=split.validation,
        epochs=epochs,
        patience=patience,
        seed=seed,
        progress=False,
        **fine_tune_options,
    )
    if method in ("linear_probe", "mlp_head", "full"):
        if method == "mlp_head":
            features = classifier.feature_size
            classifier.head = nn.Sequential(
                nn.Linear(features, size), nn.ReLU(), nn.Linear(size, num_classes)
            )
        strategy = "full" if method == "full" else "linear_probe"
        fine_tune(classifier, split.labelled, strategy=strategy, lr=lr, **options)
    else:
        if method == "lora":
            add_lora(classifier, "encoder", rank=size, alpha=alpha, adapter_name="task")
        else:
            blocks = [f"encoder.{name}" for name, _ in classifier.encoder.layer_groups()]
            add_adapters(classifier, blocks, size=size, adapter_name="task")
        add_task_head(classifier, "task", num_classes)
        train_adapter(classifier, split.labelled, lr=lr, **options)
    run = AdaptationRun(
        method=method,
        size=size if method in ("mlp_head", "lora", "bottleneck") else None,
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
    std: float
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
        test = torch.tensor([run.test_accuracy for run in group], dtype=torch.float64)
        summaries.append(
            MethodSummary(
                label=group[0].label,
                method=method,
                size=size,
                trainable=group[0].parameters.trainable,
                total=group[0].parameters.total,
                percent=group[0].parameters.percent,
                mean=test.mean().item(),
                std=test.std(unbiased=False).item(),  # as np.std: the spread of these runs
                val_mean=sum(run.val_accuracy for run in group) / len(group),
                seconds=sum(run.seconds for run in group) / len(group),
                runs=len(group),
            )
        )
    return summaries


def accuracy(classifier: nn.Module, labelled) -> float:
    """Fraction of `labelled` (a dataset or an (inputs, labels) pair) classified correctly."""
    inputs, labels = labelled_tensors(labelled)
    return (predict(classifier, inputs).argmax(dim=1) == labels).float().mean().item()
