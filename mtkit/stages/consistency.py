"""Consistency training (FixMatch, Sohn et al. 2020): the unlabelled pool, used at every step.

Self-training (selftrain.py) pseudo-labels the pool between rounds of fine-tuning. FixMatch does
it inside every training step instead, so the pseudo-labels improve as the model does:

    labelled batch (B images)    weakly augmented → cross-entropy against the true labels
    pool batch (μ·B images)      weakly augmented → the model's guess (no gradient); where its
                                 probability is ≥ threshold, that guess is the pseudo-label
                                 strongly augmented → cross-entropy against the pseudo-label
    loss = supervised + λ · mean over the pool batch of (kept × cross-entropy)

A guess made on an easy view has to survive a hard view of the same image: the model learns to
give both the same answer, which spreads what the few labels taught across the pool. The pool's
labels are never read (`pool_inputs` reads only `.images`).

`consistency_train` reads as its phases: `_check_options`, `_training_batches`, the classifier
prepared for `strategy` as fine_tune prepares it, `_loss_function`, then `fit`.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from mtkit.core.train import History, fit
from mtkit.core.utils import MtkitError, check_choice, check_positive, get_device
from mtkit.stages.augment import RandomShiftRotate
from mtkit.stages.finetune import (
    DEFAULT_LR,
    STRATEGIES,
    _callbacks,
    _prepare_classifier,
    configure_optimizer,
    labelled_tensors,
    pool_inputs,
)


class ConsistencyBatches:
    """fit's train_data for consistency training: a re-iterable of (images, labels, pool) batches.

    images: N×C×H×W labelled, labels: (N,) int64, pool: M×C×H×W unlabelled, all on the device.
    One epoch is one pass over the pool, reshuffled, in batches of `pool_batch_size` (the last
    may be smaller): len(self) = ceil(M / pool_batch_size) steps. The labelled set is usually
    far smaller, so its batches of `batch_size` come from back-to-back reshuffles of it: every
    labelled image is seen equally often, many times per epoch.
    Each batch: (batch_size×C×H×W images, (batch_size,) labels, ≤pool_batch_size×C×H×W pool).
    """

    def __init__(self, images, labels, pool, batch_size: int, pool_batch_size: int):
        self.images, self.labels, self.pool = images, labels, pool
        self.batch_size, self.pool_batch_size = batch_size, pool_batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.pool) / self.pool_batch_size)

    def __iter__(self):
        device = self.pool.device
        pool_order = torch.randperm(len(self.pool), device=device)
        reshuffles = math.ceil(len(self) * self.batch_size / len(self.labels))
        labelled_order = torch.cat(
            [torch.randperm(len(self.labels), device=device) for _ in range(reshuffles)]
        )
        for step in range(len(self)):
            rows = labelled_order[step * self.batch_size : (step + 1) * self.batch_size]
            pool_rows = pool_order[step * self.pool_batch_size : (step + 1) * self.pool_batch_size]
            yield self.images[rows], self.labels[rows], self.pool[pool_rows]


def consistency_train(
    classifier,
    labelled,
    unlabelled,
    *,
    validation=None,
    threshold: float = 0.95,
    unlabelled_ratio: int = 7,
    unlabelled_weight: float = 1.0,
    epochs: int = 50,
    lr: float | None = None,
    batch_size: int = 32,
    weak=None,
    strong=None,
    strategy: str = "full",
    weight_decay: float = 1e-2,
    monitor: str = "val_loss",
    patience: int | None = None,
    lr_decay: float = 0.5,
    epochs_per_group: int = 10,
    progress: bool = True,
    seed: int | None = None,
    **fit_options,
) -> History:
    """Train `classifier` (a `Classifier`) in place with FixMatch and return fit's History.

    labelled: labelled images (an ImageDataset or an (N×C×H×W images, labels) pair).
    unlabelled: the pool, an ImageDataset or an M×C×H×W tensor; only its images are read.
    validation: labelled data; with it, the weights of the best epoch by `monitor` ("val_loss"
        or "val_accuracy", on clean images) are kept, and `patience` epochs without improvement
        stop training (None: never stop early).
    threshold: the probability in [0, 1] a weak-view guess needs to become a pseudo-label.
    unlabelled_ratio: μ, pool images per labelled image in a step (a positive integer).
    unlabelled_weight: λ ≥ 0, the weight of the pool's loss (0: supervised training only).
    epochs: passes over the pool; batch_size: labelled images per step (at most all of them).
    weak, strong: callables N×C×H×W → N×C×H×W; default RandomShiftRotate() and StrongAugment().
        The labelled batch gets `weak`; each pool image gets both, one view each.
    strategy, lr, weight_decay, lr_decay, epochs_per_group: as in fine_tune ("linear_probe"
        freezes the encoder, lr=None picks DEFAULT_LR[strategy], ...).
    Other keyword arguments go to `mtkit.fit` (schedule, grad_clip, device, callbacks, ...).
    History records, per epoch: train_loss, train_accuracy (weak labelled views),
    train_supervised_loss, train_unlabelled_loss, train_mask_rate (the share of pool images that
    got a pseudo-label), and with validation val_loss and val_accuracy.
    Raises MtkitError for a bad argument, naming it, before the classifier changes.
    """
    lr = _check_options(
        classifier, threshold=threshold, unlabelled_ratio=unlabelled_ratio,
        unlabelled_weight=unlabelled_weight, strategy=strategy, lr=lr, monitor=monitor,
        patience=patience, weak=weak, strong=strong, epochs=epochs, batch_size=batch_size,
        weight_decay=weight_decay, lr_decay=lr_decay, epochs_per_group=epochs_per_group,
        fit_options=fit_options,
    )  # fmt: skip
    weak, strong = _augmentations(weak, strong)
    device = fit_options.pop("device", None)
    device = device if isinstance(device, torch.device) else get_device(device)
    batches = _training_batches(
        classifier, labelled, unlabelled, batch_size, unlabelled_ratio, device
    )
    if validation is not None:
        fit_options["val_data"] = labelled_tensors(validation)

    # Checks done: from here on the classifier is changed, exactly as fine_tune would.
    _prepare_classifier(classifier, strategy, dropout=None)
    optimizer, _ = configure_optimizer(
        classifier, strategy, lr, weight_decay=weight_decay, lr_decay=lr_decay
    )
    callbacks = _callbacks(classifier, strategy, epochs_per_group, patience, monitor, fit_options)
    return fit(
        classifier, _loss_function(weak, strong, threshold, unlabelled_weight), batches,
        epochs=epochs, lr=lr, optimizer=optimizer, batch_size=batches.batch_size, monitor=monitor,
        callbacks=callbacks, device=device, progress=progress, seed=seed, **fit_options,
    )  # fmt: skip


def _check_options(
    classifier, *, threshold, unlabelled_ratio, unlabelled_weight, strategy, lr, monitor,
    patience, weak, strong, epochs, batch_size, weight_decay, lr_decay, epochs_per_group,
    fit_options,
) -> float:  # fmt: skip
    """Raise MtkitError for a bad option of consistency_train, naming it; the peak lr."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise MtkitError(f"threshold is a probability in [0, 1], got {threshold!r}")
    if not 0 <= threshold <= 1:
        raise MtkitError(f"threshold is a probability in [0, 1], got {threshold}")
    check_positive("unlabelled_ratio", unlabelled_ratio, integer=True)
    check_positive("unlabelled_weight", unlabelled_weight, allow_zero=True)
    check_positive("epochs", epochs, integer=True)  # fit would check, after "scratch" resets
    check_positive("batch_size", batch_size, integer=True)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    check_positive("epochs_per_group", epochs_per_group, integer=True)
    if not 0 < lr_decay <= 1:
        raise MtkitError(f"lr_decay must be in (0, 1], got {lr_decay}")
    check_choice("strategy", strategy, STRATEGIES)
    check_choice("monitor", monitor, ("val_loss", "val_accuracy"))
    if patience is not None:
        check_positive("patience", patience, integer=True)
    for name, augmentation in (("weak", weak), ("strong", strong)):
        if augmentation is not None and not callable(augmentation):
            kind = type(augmentation).__name__
            raise MtkitError(f"{name} must be None or a callable images → images, got {kind}")
    if "optimizer" in fit_options:
        raise MtkitError("consistency_train builds its own optimizer; set lr / weight_decay")
    if not hasattr(classifier, "layer_groups") or not hasattr(classifier, "head"):
        raise MtkitError("consistency_train needs a mtkit Classifier (an encoder with a head)")
    return DEFAULT_LR[strategy] if lr is None else check_positive("lr", lr)


def _training_batches(
    classifier, labelled, unlabelled, batch_size: int, unlabelled_ratio: int, device
) -> ConsistencyBatches:
    """fit's train_data, its tensors moved to `device` once (fit then moves each batch of a
    re-iterable, a no-op for these). Raises MtkitError for labels the classifier cannot output
    or a pool whose images are not shaped like the labelled ones."""
    images, labels = labelled_tensors(labelled)
    if labels.max() >= classifier.num_classes or labels.min() < 0:
        raise MtkitError(f"labels must lie in [0, {classifier.num_classes}) for this classifier")
    pool = pool_inputs(unlabelled)  # only its images: the pool's labels are never read
    if len(pool) == 0 or pool.shape[1:] != images.shape[1:]:
        raise MtkitError(
            f"the unlabelled pool must hold images shaped like the labelled ones, "
            f"N×{'×'.join(map(str, images.shape[1:]))}; got {tuple(pool.shape)}"
        )
    batch_size = min(batch_size, len(labels))
    return ConsistencyBatches(
        images.to(device), labels.to(device), pool.to(device), batch_size,
        pool_batch_size=min(unlabelled_ratio * batch_size, len(pool)),
    )  # fmt: skip


def _augmentations(weak, strong):
    """(weak, strong) with the defaults filled in: RandomShiftRotate() and StrongAugment()."""
    if strong is None:
        # Imported here, when needed: a module that only ever gets `strong=` does not need it.
        from mtkit.stages.augment import StrongAugment

        strong = StrongAugment()
    return (RandomShiftRotate() if weak is None else weak), strong


def _loss_function(weak, strong, threshold: float, unlabelled_weight: float):
    """fit's loss_fn(model, batch) -> (loss, metrics) for consistency training.

    Training batches are (images, labels, pool): the FixMatch loss (see the module docstring),
    with metrics accuracy, supervised_loss, unlabelled_loss and mask_rate. Validation batches
    are (images, labels): plain cross-entropy on clean images, with accuracy.
    """

    def loss_fn(model, batch):
        if len(batch) == 2:  # validation: what the classifier does with unaltered images
            images, labels = batch
            logits = model(images)
            return F.cross_entropy(logits, labels), {"accuracy": _accuracy(logits, labels)}
        images, labels, pool = batch
        # The guess is a target, not something to learn through. It is made in training mode,
        # as in the paper, where the weak views share one forward pass with the rest.
        with torch.no_grad():
            confidence, guesses = torch.softmax(model(weak(pool)), dim=1).max(dim=1)
            kept = (confidence >= threshold).float()
        # One forward pass for both, so normalisation layers see labelled and pool images alike.
        logits = model(torch.cat([weak(images), strong(pool)]))
        labelled_logits, strong_logits = logits[: len(images)], logits[len(images) :]
        supervised = F.cross_entropy(labelled_logits, labels)
        # Averaged over the whole pool batch, kept or not (as in the paper): while few guesses
        # are confident the pool's pull is weak, and it grows as the model becomes sure.
        unlabelled = (F.cross_entropy(strong_logits, guesses, reduction="none") * kept).mean()
        metrics = {
            "accuracy": _accuracy(labelled_logits, labels),
            "supervised_loss": supervised.detach(),
            "unlabelled_loss": unlabelled.detach(),
            "mask_rate": kept.mean(),
        }
        return supervised + unlabelled_weight * unlabelled, metrics

    return loss_fn


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The share of rows whose largest logit is at the label: a 0-dim float tensor."""
    return (logits.argmax(dim=1) == labels).float().mean()
