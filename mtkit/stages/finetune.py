"""Fine-tuning: teach a pretrained encoder plus a new head from a few labelled examples.

One call, `fine_tune(classifier, labelled, strategy=...)`, with every knob reachable:

    scratch            same architecture, every weight re-initialised: the baseline to beat
    linear_probe       the encoder is frozen; only the head learns
    full               everything learns at one learning rate
    gradual_unfreeze   ULMFiT: the head first, then one more encoder group every few epochs
    discriminative_lr  everything learns, lower layers at smaller learning rates
                       (lr × lr_decay per group below the head)

Options that fight overfitting on few labels: weight decay, dropout, augmentation (small
shifts and rotations), early stopping on validation, L2-SP (a pull back towards the pretrained
weights, against forgetting), and class-weighted loss or oversampling for imbalance.

`fine_tune` reads as its phases: `_check_options`, `_prepare_classifier`, `_loss_function`,
`configure_optimizer` (one AdamW group per layer group), `_callbacks`, then `fit`. Augmentation,
mixup and class balance live in stages/augment.py; `forgetting` (how far fine-tuning moved the
encoder) in evaluation/forgetting.py; self-training, which goes on from here, in selftrain.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core import checks
from mtkit.core.batches import as_inputs, as_labelled, forward_in_batches
from mtkit.core.train import Callback, EarlyStopping, History, fit
from mtkit.core.utils import MtkitError, check_choice, count_trainable, set_trainable

# Re-exported, so that `mt.finetune.shift_rotate` and `from mtkit.stages.finetune import ...` work.
from mtkit.stages.augment import (  # noqa: F401
    RandomShiftRotate,
    as_augmentation,
    class_weights,
    mixup_pairs,
    shift_rotate,
)
from mtkit.stages.augment import oversample as _oversample

STRATEGIES = ("scratch", "linear_probe", "full", "gradual_unfreeze", "discriminative_lr")
CLASS_BALANCE = ("none", "weighted_loss", "oversample")
# Chosen by validation accuracy on digits splits that never include the benchmark's test
# images (see bench/label_efficiency.py). A frozen encoder leaves only a linear model to fit,
# which takes a larger step size than anything that also moves pretrained weights.
DEFAULT_LR = {
    "scratch": 3e-3,
    "linear_probe": 1e-2,
    "full": 3e-3,
    "gradual_unfreeze": 3e-3,
    "discriminative_lr": 3e-3,
}


# ---------------------------------------------------------------------------------------------
# Small helpers.


def labelled_tensors(data, name: str = "labelled") -> tuple[torch.Tensor, torch.Tensor]:
    """(N×... inputs, (N,) int64 labels) from a labelled dataset or an (inputs, labels) pair of
    tensors or NumPy arrays; MtkitError for data without labels or with NaN / ±inf inputs."""
    inputs, labels = as_labelled(checks.arrays_as_tensors(checks.check_encoded(name, data)))
    return checks.check_finite(f"the {name} inputs", inputs), labels


def pool_inputs(unlabelled) -> torch.Tensor:
    """The inputs of an unlabelled pool: a tensor, or a dataset's `.images`.

    Only `.images` is read, never `.labels` or `.tensors`, so the pool's true labels (if the
    object has any) cannot leak into training.
    """
    tensor = isinstance(unlabelled, torch.Tensor)
    images = unlabelled if tensor else getattr(unlabelled, "images", None)
    if not isinstance(images, torch.Tensor):
        raise MtkitError(
            "the unlabelled pool must be an N×... tensor or an ImageDataset, "
            f"got {type(unlabelled).__name__}"
        )
    return checks.check_finite("the unlabelled pool", images)


def reset_weights(model: nn.Module) -> None:
    """Re-initialise every layer in place, as if the model had just been built."""
    # Innermost first: a module that initialises its children its own way (TokenEmbeddings'
    # small vectors instead of nn.Embedding's N(0, 1)) then has the last word, as when built.
    for module in reversed(list(model.modules())):
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for name in ("feature_mean", "feature_std"):
        if hasattr(model, name):
            getattr(model, name).fill_(0.0 if name == "feature_mean" else 1.0)


# ---------------------------------------------------------------------------------------------
# Fine-tuning.


class GradualUnfreezing(Callback):
    """Unfreeze one more layer group, from the top down, every `epochs_per_group` epochs.

    groups: [(name, module), ...] bottom to top, the head last. Only the head trains at first;
    in epoch e (1-based) the top 1 + (e − 1) // epochs_per_group groups train.
    """

    def __init__(self, groups: list[tuple[str, nn.Module]], epochs_per_group: int):
        self.groups = groups
        self.epochs_per_group = epochs_per_group

    def on_train_begin(self, trainer):
        for index, (_, module) in enumerate(self.groups):
            set_trainable(module, index == len(self.groups) - 1)

    def on_epoch_begin(self, trainer):
        unfrozen = 1 + (trainer.epoch - 1) // self.epochs_per_group
        for _, module in self.groups[-unfrozen:]:
            set_trainable(module, True)


@dataclass
class FineTuneResult:
    """What `fine_tune` returns.

    history: the History of `fit` (val_accuracy per epoch with validation data).
    trainable_parameters: parameters that were allowed to learn by the end of training.
    group_learning_rates: {group name: peak lr} per layer group, bottom to top.
    """

    history: History
    strategy: str
    trainable_parameters: int
    group_learning_rates: dict[str, float] = field(default_factory=dict)


def fine_tune(
    classifier,
    labelled,
    *,
    strategy: str = "full",
    validation=None,
    epochs: int = 300,
    lr: float | None = None,
    batch_size: int = 32,
    weight_decay: float = 1e-2,
    dropout: float | None = None,
    augment=False,
    mixup: float = 0.0,
    patience: int | None = 50,
    monitor: str = "val_loss",
    class_balance: str = "none",
    l2_sp: float = 0.0,
    lr_decay: float = 0.5,
    epochs_per_group: int = 10,
    **fit_options,
) -> FineTuneResult:
    """Fine-tune `classifier` (a `Classifier`) in place on `labelled` and return a FineTuneResult.

    labelled, validation: labelled datasets (or (inputs, labels) tuples). With validation data
        the weights of the best epoch by `monitor` ("val_loss" or "val_accuracy") are kept, and
        `patience` epochs without improvement stop training (None: never stop early).
    lr: peak learning rate of the head; None picks the strategy's default from DEFAULT_LR.
    weight_decay: AdamW's decoupled decay (towards 0); with l2_sp > 0 only the head gets it.
    dropout: sets the classifier's dropout probability on the features (None leaves it).
    augment: True for a random shift (±0.5 px) and rotation (±10°) of every training image each
        time it is seen, or any callable N×C×H×W → N×C×H×W (e.g. RandomShiftRotate(1, 15)).
        Labels are left alone; validation data is never augmented.
    mixup: with α > 0, each training batch is blended with a shuffled copy of itself, images
        and labels alike (mixup, Zhang et al. 2018): inputs λ·x + (1 − λ)·x', loss
        λ·CE(y) + (1 − λ)·CE(y'), with λ ~ Beta(α, α) drawn per batch (folded to λ ≥ 0.5, so the
        batch's own labels count most). It teaches the classifier to change its guess gradually
        between examples, which makes it harder to fit a few wrong labels exactly; self_train
        uses it for that. 0 (default) turns it off.
    class_balance: "weighted_loss" weighs each class by 1 / its frequency; "oversample" repeats
        examples of rarer classes until every class is as frequent as the largest.
    l2_sp: strength of L2-SP, the penalty l2_sp · ‖w − w_pretrained‖² summed over the encoder's
        trainable weights, which keeps them near what pretraining found.
    lr_decay: for discriminative_lr, each group below the head learns lr_decay times slower.
    epochs_per_group: for gradual_unfreeze, epochs between unfreezing steps.
    Other keyword arguments go to `mtkit.fit` (schedule, grad_clip, device, seed, callbacks, ...).
    Raises MtkitError for an unknown strategy or bad option.
    """
    lr = _check_options(
        classifier, strategy=strategy, lr=lr, weight_decay=weight_decay, dropout=dropout,
        patience=patience, monitor=monitor, class_balance=class_balance, l2_sp=l2_sp,
        lr_decay=lr_decay, epochs_per_group=epochs_per_group, mixup=mixup, fit_options=fit_options,
    )  # fmt: skip
    augmentation = as_augmentation(augment)
    inputs, labels = _classifier_data(classifier, labelled, "labelled")
    if validation is not None:
        fit_options["val_data"] = _classifier_data(classifier, validation, "validation")

    # Checks done: from here on the classifier is changed.
    _prepare_classifier(classifier, strategy, dropout)
    if class_balance == "oversample":
        inputs, labels = _oversample(inputs, labels)
    weights = None
    if class_balance == "weighted_loss":
        weights = class_weights(labels, classifier.num_classes)
    loss_fn = _loss_function(classifier, weights, augmentation, mixup, l2_sp)
    optimizer, group_lrs = configure_optimizer(
        classifier, strategy, lr, weight_decay=weight_decay, lr_decay=lr_decay, l2_sp=l2_sp
    )
    callbacks = _callbacks(classifier, strategy, epochs_per_group, patience, monitor, fit_options)
    history = fit(
        classifier, loss_fn, (inputs, labels), epochs=epochs, lr=lr, optimizer=optimizer,
        batch_size=min(checks.check_positive("batch_size", batch_size, integer=True), len(labels)),
        monitor=monitor, callbacks=callbacks,
        **fit_options,
    )  # fmt: skip
    return FineTuneResult(history, strategy, count_trainable(classifier), group_lrs)


def _classifier_data(classifier, data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """labelled_tensors(data), checked to suit `classifier`: float images (or integer token
    ids), and labels in [0, num_classes)."""
    inputs, labels = labelled_tensors(data, name)
    checks.check_model_inputs(f"the {name} inputs", inputs)
    if labels.max() >= classifier.num_classes or labels.min() < 0:
        low, high, classes = int(labels.min()), int(labels.max()), classifier.num_classes
        raise MtkitError(f"{name} labels must lie in [0, {classes}), got labels {low}..{high}")
    return inputs, labels


def _check_options(
    classifier, *, strategy, lr, weight_decay, dropout, patience, monitor, class_balance, l2_sp,
    lr_decay, epochs_per_group, mixup, fit_options,
) -> float:  # fmt: skip
    """Raise MtkitError for a bad option of fine_tune, before anything changes; the peak lr."""
    check_choice("strategy", strategy, STRATEGIES)
    check_choice("class_balance", class_balance, CLASS_BALANCE)
    check_choice("monitor", monitor, ("val_loss", "val_accuracy"))
    lr = DEFAULT_LR[strategy] if lr is None else checks.check_positive("lr", lr)
    checks.check_positive("weight_decay", weight_decay, allow_zero=True)
    checks.check_positive("l2_sp", l2_sp, allow_zero=True)
    checks.check_positive("mixup", mixup, allow_zero=True)
    checks.check_positive("epochs_per_group", epochs_per_group, integer=True)
    if patience is not None:
        checks.check_positive("patience", patience, integer=True)
    checks.check_number("lr_decay", lr_decay, low=0, high=1, low_open=True)
    if dropout is not None:
        checks.check_number("dropout", dropout, low=0, high=1, high_open=True)
    if "optimizer" in fit_options:
        raise MtkitError("fine_tune builds its own optimizer; set lr / weight_decay instead")
    if not hasattr(classifier, "layer_groups") or not hasattr(classifier, "head"):
        raise MtkitError("fine_tune needs a mtkit Classifier (an encoder with a head)")
    return lr


def _prepare_classifier(classifier, strategy: str, dropout: float | None) -> None:
    """Set the dropout, re-initialise for "scratch", and choose what trains at first."""
    if dropout is not None:
        classifier.dropout.p = dropout
    if strategy == "scratch":
        reset_weights(classifier)
    # Everything trains, except the encoder of a linear probe; GradualUnfreezing re-freezes.
    set_trainable(classifier, strategy != "linear_probe")
    set_trainable(classifier.head, True)


def _loss_function(classifier, weights, augmentation, mixup: float, l2_sp: float):
    """fit's loss_fn(model, batch) -> (loss, {"accuracy": ...}) for fine-tuning.

    Cross-entropy, weighted per class by `weights` (or not, with None). On training batches
    only: `augmentation` of the images, mixup with α = `mixup` (> 0), and with `l2_sp` > 0 the
    L2-SP pull towards the encoder's weights as they are now, before fine-tuning.
    """
    pretrained = None
    if l2_sp > 0:  # the starting point to pull back towards
        pretrained = {
            name: parameter.detach().clone()
            for name, parameter in classifier.encoder.named_parameters()
        }

    def cross_entropy(logits, batch_labels):
        return F.cross_entropy(
            logits, batch_labels, weight=None if weights is None else weights.to(logits.device)
        )

    def loss_fn(model, batch):
        batch_inputs, batch_labels = batch
        if augmentation is not None and model.training:
            batch_inputs = augmentation(batch_inputs)
        if mixup > 0 and model.training:
            share, partner = mixup_pairs(len(batch_inputs), mixup)
            partner = partner.to(batch_inputs.device)
            logits = model(share * batch_inputs + (1 - share) * batch_inputs[partner])
            loss = share * cross_entropy(logits, batch_labels) + (1 - share) * cross_entropy(
                logits, batch_labels[partner]
            )
        else:
            logits = model(batch_inputs)
            loss = cross_entropy(logits, batch_labels)
        if pretrained is not None and model.training:
            loss = loss + l2_sp * _distance_to(model.encoder, pretrained)
        accuracy = (logits.argmax(dim=1) == batch_labels).float().mean()
        return loss, {"accuracy": accuracy}

    return loss_fn


def configure_optimizer(
    classifier,
    strategy: str,
    lr: float,
    weight_decay: float = 1e-2,
    lr_decay: float = 0.5,
    l2_sp: float = 0.0,
) -> tuple[torch.optim.AdamW, dict[str, float]]:
    """(AdamW, {group name: peak lr}) with one parameter group per layer group of `classifier`.

    Each group has its own learning rate, lr × lr_decay^depth below the head for
    discriminative_lr (lr for every group otherwise), and weight decay. Frozen groups are in it
    too: AdamW skips parameters without gradients (no update, no decay) until GradualUnfreezing
    switches them on.
    """
    groups = classifier.layer_groups()
    depth = {name: len(groups) - 1 - index for index, (name, _) in enumerate(groups)}
    decay = lr_decay if strategy == "discriminative_lr" else 1.0
    group_lrs = {name: lr * decay ** depth[name] for name, _ in groups}
    optimizer = torch.optim.AdamW(
        [
            {
                "params": list(module.parameters()),
                "lr": group_lrs[name],
                # L2-SP replaces the pull towards zero for pretrained weights; the new head,
                # which has no pretrained value, keeps ordinary weight decay.
                "weight_decay": weight_decay if name == "head" or l2_sp == 0 else 0.0,
            }
            for name, module in groups
        ],
        lr=lr,
    )
    return optimizer, group_lrs


def _callbacks(classifier, strategy, epochs_per_group, patience, monitor, fit_options) -> list:
    """The callbacks of fit: GradualUnfreezing first (for that strategy), then the caller's
    (popped from `fit_options`), then EarlyStopping with `patience` when there is validation
    data to watch (without, training runs for all epochs)."""
    callbacks = list(fit_options.pop("callbacks", ()))
    if strategy == "gradual_unfreeze":
        callbacks.insert(0, GradualUnfreezing(classifier.layer_groups(), epochs_per_group))
    if patience is not None and "val_data" in fit_options:
        callbacks.append(EarlyStopping(monitor, patience=patience))
    return callbacks


def _distance_to(module: nn.Module, reference: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ‖w − w_reference‖² over the trainable parameters of `module` (the L2-SP penalty)."""
    total = torch.zeros(())
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            if reference[name].device != parameter.device:  # moved once, not at every step
                reference[name] = reference[name].to(parameter.device)
            total = total + (parameter - reference[name]).pow(2).sum()
    return total


def predict(
    classifier: nn.Module, inputs, batch_size: int = 1024, *, tokenizer=None, max_length=None
) -> torch.Tensor:
    """Class probabilities for every input: N×num_classes on the CPU, computed in eval mode.

    inputs: N×C×H×W images (a tensor or NumPy array), N×L token ids, an (inputs, labels) pair, an
        image dataset, or a TextDataset with `tokenizer` (encoded to `max_length` tokens, by
        default the model's own). Labels are never read. NaN / ±inf in, or out, is an error.
    """
    checks.check_model("classifier", classifier)
    checks.check_positive("batch_size", batch_size, integer=True)
    config = getattr(getattr(classifier, "encoder", None), "config", None)
    max_length = max_length or getattr(config, "max_length", None)
    inputs = as_inputs(checks.arrays_as_tensors(inputs), tokenizer=tokenizer, max_length=max_length)
    if len(inputs) == 0:
        raise MtkitError("nothing to predict: the inputs are empty")
    checks.check_model_inputs("inputs", inputs)
    probabilities = forward_in_batches(
        classifier, inputs, batch_size=batch_size,
        fn=lambda batch: torch.softmax(classifier(batch), dim=1),  # on the device, per batch
    )  # fmt: skip
    return checks.check_finite("the classifier's probabilities for finite inputs", probabilities)


def copy_encoder(autoencoder: nn.Module) -> nn.Module:
    """A deep copy of an autoencoder's encoder, so fine-tuning leaves the autoencoder intact."""
    return copy.deepcopy(autoencoder.encoder)


def __getattr__(name: str):
    """Forgetting and forgetting, which moved to mtkit.evaluation.forgetting, looked up there
    when first asked for: stages do not import mtkit.evaluation when they load."""
    if name in ("Forgetting", "forgetting"):
        from mtkit.evaluation import forgetting as moved  # works while evaluation is importing

        return getattr(moved, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
