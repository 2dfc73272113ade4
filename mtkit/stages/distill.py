"""Knowledge distillation (Hinton, Vinyals & Dean, 2015): a small student learns a teacher's
probabilities instead of (or besides) the few true labels.

A teacher that says "70% negative, 25% neutral" about a tweet tells the student more than the
label "negative" would: which classes it confuses, and how sure it is. Softening both sides with
a temperature T > 1 (softmax(z / T)) brings those small probabilities out, so the student learns
them too. The teacher needs no labels to say this, so it can label a large unlabelled pool:

    targets = soft_targets(teacher_logits, temperature=2.0)
    loss = distillation_loss(student(x), targets, temperature=2.0)
    result = distill(student, pool_ids, teacher_probs, labelled=(ids, labels), validation=...)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.train import EarlyStopping, fit
from mtkit.core.utils import MtkitError, check_positive
from mtkit.stages.finetune import FineTuneResult, count_trainable, labelled_tensors


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(teacher_logits / T): N×C logits → N×C probabilities, rows summing to 1.

    Only probabilities at hand? Their logarithms are logits (softmax ignores the constant they
    lack), so soft_targets(probs.log(), T) is probs^(1/T), normalised; a 0 stays 0.
    """
    check_positive("temperature", temperature)
    return torch.softmax(teacher_logits / temperature, dim=-1)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    temperature: float,
    hard_labels: torch.Tensor | None = None,
    hard_weight: float = 0.0,
) -> torch.Tensor:
    """T² · KL(p ‖ q_T) + hard_weight · CE(student_logits, hard_labels): a scalar (batch mean).

    student_logits: B×C. teacher_probs: B×C soft targets p, already at temperature T (see
    soft_targets). q_T = softmax(student_logits / T).

    The soft term is computed as the cross-entropy T² · Σ_c −p_c log q_T,c. It differs from
    T² · KL(p ‖ q_T) only by T² times the teacher's entropy, which does not depend on the student:
    same gradients, same minimum (at q_T = p), without 0 · log 0 to guard against.

    Why T²: the gradient of the soft term with respect to a student logit z_c is
    T² · (q_T,c − p_c) / T = T · (q_T,c − p_c), and for large T, q_T,c − p_c ≈ (z_c − v_c) / (C·T)
    (v: the teacher's logits, both centred), so the gradient ≈ (z_c − v_c) / C whatever T is.
    Without T² it would shrink as 1/T², and changing T would also change the learning rate and
    the balance against the hard term.
    hard_labels: optional (B,) int64 true labels; their cross-entropy is taken at temperature 1,
        as in Hinton et al. With T = 1 and one-hot teacher_probs the soft term itself equals
        F.cross_entropy(student_logits, labels).
    """
    check_positive("temperature", temperature)
    check_positive("hard_weight", hard_weight, allow_zero=True)
    if student_logits.dim() != 2 or student_logits.shape != teacher_probs.shape:
        raise MtkitError(
            f"student_logits and teacher_probs must both be B×C, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_probs.shape)}"
        )
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    loss = temperature**2 * -(teacher_probs * log_q).sum(dim=1).mean()
    if hard_labels is not None and hard_weight > 0:
        loss = loss + hard_weight * F.cross_entropy(student_logits, hard_labels)
    return loss


def _check_targets(inputs, teacher_probs) -> None:
    if not isinstance(teacher_probs, torch.Tensor) or teacher_probs.dim() != 2:
        raise MtkitError("teacher_probs must be an N×C tensor of class probabilities")
    if len(teacher_probs) != len(inputs):
        raise MtkitError(
            f"teacher_probs has {len(teacher_probs)} rows but inputs has {len(inputs)}: "
            "one row of probabilities per input"
        )
    sums = teacher_probs.sum(dim=1)
    if (teacher_probs < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise MtkitError("teacher_probs rows must be probabilities: non-negative, summing to 1")


def _training_rows(inputs, teacher_probs, temperature: float, labelled):
    """(inputs, targets, temperatures): the pool rows with the teacher's soft targets at
    `temperature`, then the labelled rows with one-hot targets at temperature 1 (plain
    cross-entropy on the true label, Hinton et al.'s hard term, one row per labelled example)."""
    targets = soft_targets(teacher_probs.float().log(), temperature)
    temperatures = torch.full((len(inputs),), float(temperature))
    if labelled is None:
        return inputs, targets, temperatures
    ids, labels = labelled_tensors(labelled)
    if labels.min() < 0 or labels.max() >= targets.shape[1]:
        raise MtkitError(f"labelled labels must lie in [0, {targets.shape[1]})")
    one_hot = F.one_hot(labels, targets.shape[1]).float()
    return (
        torch.cat([inputs, ids]),
        torch.cat([targets, one_hot]),
        torch.cat([temperatures, torch.ones(len(labels))]),
    )


def _loss_fn(model, batch):
    """fit's loss: training batches (inputs, targets, temperatures) are distilled, each row at
    its own temperature; validation batches (inputs, labels) get cross-entropy. Both report
    "accuracy": agreement with the targets' top class in training, true accuracy in validation."""
    if len(batch) == 2:
        inputs, labels = batch
        logits = model(inputs)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return F.cross_entropy(logits, labels), {"accuracy": accuracy}
    inputs, targets, temperatures = batch
    logits = model(inputs)
    scale = temperatures[:, None]  # each row's T: the T² of distillation_loss, row by row
    per_row = -(targets * F.log_softmax(logits / scale, dim=1)).sum(dim=1) * scale[:, 0] ** 2
    agreement = (logits.argmax(dim=1) == targets.argmax(dim=1)).float().mean()
    return per_row.mean(), {"accuracy": agreement}


def distill(
    student: nn.Module,
    inputs: torch.Tensor,
    teacher_probs: torch.Tensor,
    *,
    temperature: float = 2.0,
    labelled=None,
    validation=None,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 1e-2,
    patience: int | None = 5,
    seed: int | None = None,
    progress: bool = False,
    **fit_options,
) -> FineTuneResult:
    """Train `student` (inputs → B×C logits) in place to match the teacher; a FineTuneResult.

    inputs: N×... what the student reads (e.g. token ids of the unlabelled pool).
    teacher_probs: N×C the teacher's ordinary (temperature 1) probabilities for those inputs;
        their logarithms serve as its logits, so the targets are soft_targets(log p, T).
    labelled: optional (inputs, labels) or labelled dataset: the true labels join as extra rows
        with one-hot targets at temperature 1 (plain cross-entropy, weighted like a pool row).
    validation: optional (inputs, labels): the weights of the epoch with the best validation
        accuracy are kept, and `patience` epochs without improvement stop training (None: run
        all epochs). Without validation every epoch runs and the last weights are kept.
    Other keyword arguments go to `mtkit.fit` (schedule, grad_clip, device, callbacks, ...).
    History records train_accuracy (agreement with the targets' top class) and val_accuracy.
    """
    check_positive("temperature", temperature)
    if patience is not None:
        check_positive("patience", patience, integer=True)
    _check_targets(inputs, teacher_probs)
    rows = _training_rows(inputs, teacher_probs, temperature, labelled)
    callbacks = list(fit_options.pop("callbacks", ()))
    if validation is not None:
        fit_options["val_data"] = labelled_tensors(validation)
        if patience is not None:
            callbacks.append(EarlyStopping("val_accuracy", patience=patience))
    history = fit(
        student, _loss_fn, rows, epochs=epochs, lr=lr, batch_size=min(batch_size, len(rows[0])),
        weight_decay=weight_decay, monitor="val_accuracy", callbacks=callbacks,
        progress=progress, seed=seed, **fit_options,
    )  # fmt: skip
    return FineTuneResult(history, "distill", count_trainable(student))
