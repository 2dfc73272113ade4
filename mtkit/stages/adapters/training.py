"""Training adapters: train_adapter trains what is trainable now (the active adapter and its
head) with fine_tune's options. Comparing adapters with the alternatives is an experiment:
mtkit/experiments/adapters.py (adapt_encoder, summarize_runs)."""

from __future__ import annotations

from torch import nn

from mtkit.core.train import Callback
from mtkit.core.utils import MtkitError
from mtkit.stages.finetune import fine_tune


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
