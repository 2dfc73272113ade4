"""Adapting a trained classifier to a shifted domain, and what it costs on the old one.

    adapt_to_shift(classifier, old, new, method)
        naive       fine-tune everything on the new examples
        rehearsal   the same, with a sample of old examples replayed among them
        adapter     a new LoRA adapter and head on the frozen backbone; the old task is the
                    backbone with the adapter switched off, so nothing is forgotten, but each
                    input must be routed to the right one (a drift score can do that)
measuring accuracy on the new domain and how much was forgotten on the old. Noticing the shift
in the first place is mtkit.evaluation.drift.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

from mtkit.core.batches import as_labelled
from mtkit.core.utils import check_choice, check_positive, seed_everything
from mtkit.stages.adapters import set_active_adapter, trainable_parameters
from mtkit.stages.finetune import fine_tune
from mtkit.stages.method import LoRA, accuracy, attach, train_method

SHIFT_METHODS = ("naive", "rehearsal", "adapter")


@dataclass
class ShiftAdaptation:
    """How one way of adapting to a new domain did (test accuracies).

    new_before / old_before: the starting classifier on the new / old domain.
    new_accuracy / old_accuracy: the adapted model on each; for "adapter", old_accuracy is
        the model with the adapter switched off (the old task's own path).
    """

    method: str
    new_before: float
    old_before: float
    new_accuracy: float
    old_accuracy: float
    trainable_parameters: int
    seconds: float

    @property
    def forgetting(self) -> float:
        """Accuracy lost on the old domain (percentage points / 100)."""
        return self.old_before - self.old_accuracy


def _with_rehearsal(old, new, rehearsal_size: int):
    """(training, validation) pairs: new.labelled plus `rehearsal_size` random old.labelled
    examples, and both domains' validation data."""
    old_inputs, old_labels = as_labelled(old.labelled)
    replay = torch.randperm(len(old_labels))[:rehearsal_size]
    new_inputs, new_labels = as_labelled(new.labelled)
    train = (
        torch.cat([new_inputs, old_inputs[replay]]),
        torch.cat([new_labels, old_labels[replay]]),
    )
    validation = tuple(
        torch.cat(pair)
        for pair in zip(as_labelled(new.validation), as_labelled(old.validation), strict=True)
    )
    return train, validation


def adapt_to_shift(
    classifier: nn.Module,
    old,
    new,
    method: str,
    *,
    rehearsal_size: int = 50,
    rank: int = 4,
    epochs: int = 100,
    lr: float | None = None,
    patience: int | None = 20,
    seed: int = 0,
    **fine_tune_options,
):
    """Adapt a copy of `classifier` to the domain of `new`; returns (model, ShiftAdaptation).

    old, new: FewLabelSplits of the old and the new domain (same classes).
    method:
        naive       fine_tune everything ("full") on new.labelled; validated on new.validation.
        rehearsal   the same on new.labelled plus `rehearsal_size` old.labelled examples
                    (replayed), validated on both domains' validation data: it aims at both.
        adapter     LoRA (rank `rank`) on the frozen encoder plus a head that starts as the old
                    head, trained on new.labelled; the old domain uses the model with the
                    adapter switched off (mtkit.adapters.set_active_adapter(model, None)).
    lr: default 3e-3 for every method. Other keyword arguments go to fine_tune.
    The returned model has the adapter active for "adapter".
    """
    check_choice("method", method, SHIFT_METHODS)
    check_positive("rehearsal_size", rehearsal_size, integer=True)
    lr = 3e-3 if lr is None else check_positive("lr", lr)
    options = dict(epochs=epochs, lr=lr, patience=patience, seed=seed, progress=False)
    options.update(fine_tune_options)
    started = time.perf_counter()
    new_before, old_before = accuracy(classifier, new.test), accuracy(classifier, old.test)
    seed_everything(seed)
    model = copy.deepcopy(classifier)
    if method == "naive":
        fine_tune(model, new.labelled, strategy="full", validation=new.validation, **options)
    elif method == "rehearsal":
        train, validation = _with_rehearsal(old, new, rehearsal_size)
        fine_tune(model, train, strategy="full", validation=validation, **options)
    else:
        adapter = LoRA(rank=rank, targets=("encoder",))
        attach(model, adapter, head="task_from_head", adapter_name="new_domain")
        train_method(model, new.labelled, "linear_probe", adapter, validation=new.validation,
                     **options)  # fmt: skip
    trainable = trainable_parameters(model).trainable
    new_accuracy = accuracy(model, new.test)
    if method == "adapter":
        set_active_adapter(model, None)  # the old task: the backbone as it was
    old_accuracy = accuracy(model, old.test)
    if method == "adapter":
        set_active_adapter(model, "new_domain")
    seconds = time.perf_counter() - started
    result = ShiftAdaptation(
        method, new_before, old_before, new_accuracy, old_accuracy, trainable, seconds
    )
    return model, result
