"""Fine-tuning: teach a pretrained encoder plus a new head from a few labelled examples.

One call, `fine_tune(classifier, labelled, strategy=...)`, with every knob reachable:

    scratch            same architecture, every weight re-initialised: the baseline to beat
    linear_probe       the encoder is frozen; only the head learns
    full               everything learns at one learning rate
    gradual_unfreeze   ULMFiT: the head first, then one more encoder group every few epochs
    discriminative_lr  everything learns, lower layers at smaller learning rates
                       (lr × lr_decay per group below the head)

Options that fight overfitting on few labels: weight decay, dropout, augmentation (small
shifts and rotations), early stopping on validation accuracy, L2-SP (a pull back towards the
pretrained weights, against forgetting), and class-weighted loss or oversampling for imbalance.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.train import Callback, EarlyStopping, History, fit
from mtkit.utils import MtkitError, check_choice, check_positive

STRATEGIES = ("scratch", "linear_probe", "full", "gradual_unfreeze", "discriminative_lr")
CLASS_BALANCE = ("none", "weighted_loss", "oversample")


def labelled_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) from a labelled dataset (anything with `.tensors`) or a tuple."""
    tensors = tuple(data.tensors) if hasattr(data, "tensors") else tuple(data)
    if len(tensors) != 2:
        raise MtkitError(
            "fine-tuning needs labelled data: a dataset with labels or an (inputs, labels) pair; "
            "the unlabelled pool has its labels hidden on purpose"
        )
    inputs, labels = tensors
    if labels.dtype != torch.long or labels.dim() != 1 or len(labels) != len(inputs):
        raise MtkitError(f"labels must be a 1-D int64 tensor of length {len(inputs)}")
    return inputs, labels


def set_trainable(module: nn.Module, trainable: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of `module`."""
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


def reset_weights(model: nn.Module) -> None:
    """Re-initialise every layer in place, as if the model had just been built."""
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for name in ("feature_mean", "feature_std"):
        if hasattr(model, name):
            getattr(model, name).fill_(0.0 if name == "feature_mean" else 1.0)


def augment_images(images: torch.Tensor, max_shift: float = 1.0, max_rotation: float = 10.0):
    """Each image shifted by up to `max_shift` pixels and rotated by up to `max_rotation` degrees.

    images: N×C×H×W. Returns a new N×C×H×W tensor; every image gets its own random transform.
    """
    from torchvision.transforms import v2

    height, width = images.shape[-2:]
    transform = v2.RandomAffine(
        degrees=max_rotation, translate=(max_shift / width, max_shift / height)
    )
    return torch.stack([transform(image) for image in images])


class GradualUnfreezing(Callback):
    """Unfreeze one more layer group, from the top down, every `epochs_per_group` epochs.

    groups: [(name, module), ...] bottom to top, the head last. Only the head trains at first.
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
    """What `fine_tune` returns: the History plus what was trained and how."""

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
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 32,
    weight_decay: float = 1e-4,
    dropout: float | None = None,
    augment: bool = False,
    max_shift: float = 1.0,
    max_rotation: float = 10.0,
    patience: int | None = 20,
    class_balance: str = "none",
    l2_sp: float = 0.0,
    lr_decay: float = 0.5,
    epochs_per_group: int = 10,
    **fit_options,
) -> FineTuneResult:
    """Fine-tune `classifier` (a `Classifier`) in place on `labelled` and return a FineTuneResult.

    labelled, validation: labelled datasets (or (inputs, labels) tuples). With validation data
        the weights of the epoch with the best validation accuracy are kept, and `patience`
        epochs without improvement stop training (None: never stop early).
    dropout: sets the classifier's dropout probability (None leaves it).
    augment: random shifts (max_shift pixels) and rotations (max_rotation degrees) per image.
    class_balance: "weighted_loss" weighs each class by 1 / its frequency; "oversample" repeats
        examples of rarer classes until every class is as frequent as the largest.
    l2_sp: strength of the penalty l2_sp · ‖w − w_pretrained‖² on the encoder's weights.
    lr_decay: for discriminative_lr, each group below the head learns lr_decay times slower.
    epochs_per_group: for gradual_unfreeze, epochs between unfreezing steps.
    Other keyword arguments go to `mtkit.fit` (schedule, grad_clip, device, seed, callbacks, ...).
    """
    check_choice("strategy", strategy, STRATEGIES)
    check_choice("class_balance", class_balance, CLASS_BALANCE)
    check_positive("l2_sp", l2_sp, allow_zero=True)
    check_positive("epochs_per_group", epochs_per_group, integer=True)
    if not 0 < lr_decay <= 1:
        raise MtkitError(f"lr_decay must be in (0, 1], got {lr_decay}")
    if not hasattr(classifier, "layer_groups") or not hasattr(classifier, "head"):
        raise MtkitError("fine_tune needs a mtkit Classifier (an encoder with a head)")
    inputs, labels = labelled_tensors(labelled)
    if labels.max() >= classifier.num_classes or labels.min() < 0:
        raise MtkitError(f"labels must lie in [0, {classifier.num_classes}) for this classifier")
    if dropout is not None:
        if not 0 <= dropout < 1:
            raise MtkitError(f"dropout must be in [0, 1), got {dropout}")
        classifier.dropout.p = dropout
    if validation is not None:
        validation = labelled_tensors(validation)

    if strategy == "scratch":
        reset_weights(classifier)
    groups = classifier.layer_groups()
    set_trainable(classifier, strategy != "linear_probe")
    set_trainable(classifier.head, True)

    if class_balance == "oversample":
        inputs, labels = _oversample(inputs, labels)
    class_weights = None
    if class_balance == "weighted_loss":
        counts = torch.bincount(labels, minlength=classifier.num_classes).float()
        class_weights = counts.sum() / (len(counts) * counts.clamp_min(1))

    pretrained = None
    if l2_sp > 0:
        pretrained = {
            name: parameter.detach().clone()
            for name, parameter in classifier.encoder.named_parameters()
        }

    def loss_fn(model, batch):
        batch_inputs, batch_labels = batch
        if augment and model.training:
            batch_inputs = augment_images(batch_inputs, max_shift, max_rotation)
        logits = model(batch_inputs)
        weights = None if class_weights is None else class_weights.to(logits.device)
        loss = F.cross_entropy(logits, batch_labels, weight=weights)
        if pretrained is not None and model.training:
            loss = loss + l2_sp * _distance_to(model.encoder, pretrained)
        accuracy = (logits.argmax(dim=1) == batch_labels).float().mean()
        return loss, {"accuracy": accuracy}

    callbacks = list(fit_options.pop("callbacks", ()))
    if validation is not None and patience is not None:
        callbacks.append(EarlyStopping("val_accuracy", patience=patience))
    group_lrs = {}
    optimizer = fit_options.pop("optimizer", "adamw")
    if strategy in ("gradual_unfreeze", "discriminative_lr"):
        depth = {name: len(groups) - 1 - index for index, (name, _) in enumerate(groups)}
        decay = lr_decay if strategy == "discriminative_lr" else 1.0
        group_lrs = {name: lr * decay ** depth[name] for name, _ in groups}
        # Every group is in the optimizer from the start; frozen ones get no gradient and so
        # are skipped by the optimizer until GradualUnfreezing switches them on.
        optimizer = torch.optim.AdamW(
            [
                {"params": list(module.parameters()), "lr": group_lrs[name]}
                for name, module in groups
            ],
            weight_decay=weight_decay,
        )
        if strategy == "gradual_unfreeze":
            callbacks.insert(0, GradualUnfreezing(groups, epochs_per_group))
    history = fit(
        classifier,
        loss_fn,
        (inputs, labels),
        epochs=epochs,
        lr=lr,
        batch_size=min(batch_size, len(labels)),
        optimizer=optimizer,
        weight_decay=weight_decay,
        val_data=validation,
        monitor="val_accuracy",
        callbacks=callbacks,
        **fit_options,
    )
    trainable = sum(p.numel() for p in classifier.parameters() if p.requires_grad)
    return FineTuneResult(history, strategy, trainable, group_lrs)


def _distance_to(module: nn.Module, reference: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ‖w − w_reference‖² over the parameters of `module` (the L2-SP penalty)."""
    total = 0.0
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            total = total + (parameter - reference[name].to(parameter.device)).pow(2).sum()
    return total


def _oversample(inputs: torch.Tensor, labels: torch.Tensor):
    """Repeat examples of each class until all classes are as frequent as the most common one."""
    counts = torch.bincount(labels)
    target = int(counts.max())
    rows = []
    for label in range(len(counts)):
        members = (labels == label).nonzero().flatten()
        if len(members) == 0:
            continue
        repeats = math.ceil(target / len(members))
        rows.append(members.repeat(repeats)[:target])
    order = torch.cat(rows)
    return inputs[order], labels[order]


@torch.no_grad()
def predict(classifier: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities for every input: N×num_classes, computed in eval mode on CPU output."""
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    chunks = [
        torch.softmax(classifier(inputs[start : start + batch_size].to(device)), dim=1).cpu()
        for start in range(0, len(inputs), batch_size)
    ]
    classifier.train(was_training)
    return torch.cat(chunks)


def copy_encoder(autoencoder: nn.Module) -> nn.Module:
    """A deep copy of an autoencoder's encoder, so fine-tuning leaves the autoencoder intact."""
    return copy.deepcopy(autoencoder.encoder)


@dataclass
class SelfTrainResult:
    """Per round: how many pool examples got a pseudo-label and the validation accuracy after.

    Round 0 is the classifier as it came in. `best_round` is the one whose weights were kept.
    """

    rounds: list[dict]
    best_round: int
    histories: list[History]


def self_train(
    classifier,
    labelled,
    unlabelled,
    *,
    validation,
    rounds: int = 3,
    threshold: float = 0.9,
    strategy: str = "full",
    augment: bool = False,
    **fine_tune_options,
) -> SelfTrainResult:
    """Semi-supervised adaptation: learn from the model's own confident guesses on the pool.

    Each round predicts the unlabelled pool, keeps the guesses whose probability is at least
    `threshold` as pseudo-labels, and fine-tunes on labelled + pseudo-labelled examples (with
    `augment`, each seen slightly shifted and rotated). The weights of the round with the best
    validation accuracy are kept, so a round that hurts is undone.

    unlabelled: the pool (an unlabelled dataset or an N×... tensor). Its labels are never read.
    validation: labelled data to choose the best round; required, since without it a harmful
        round could not be noticed.
    Returns a SelfTrainResult.
    """
    check_positive("rounds", rounds, integer=True)
    if not 0 < threshold < 1:
        raise MtkitError(f"threshold is a probability in (0, 1), got {threshold}")
    if validation is None:
        raise MtkitError("self_train needs validation data to keep the best round")
    pool = unlabelled if isinstance(unlabelled, torch.Tensor) else unlabelled.tensors[0]
    inputs, labels = labelled_tensors(labelled)
    val_inputs, val_labels = labelled_tensors(validation)

    def val_accuracy() -> float:
        guesses = predict(classifier, val_inputs).argmax(dim=1)
        return (guesses == val_labels).float().mean().item()

    best = {"accuracy": val_accuracy(), "round": 0, "state": copy.deepcopy(classifier.state_dict())}
    records = [{"round": 0, "pseudo_labelled": 0, "val_accuracy": best["accuracy"]}]
    histories = []
    for round_number in range(1, rounds + 1):
        confidence, guesses = predict(classifier, pool).max(dim=1)
        confident = confidence >= threshold
        combined = (
            torch.cat([inputs, pool[confident]]),
            torch.cat([labels, guesses[confident]]),
        )
        result = fine_tune(
            classifier,
            combined,
            strategy=strategy,
            validation=(val_inputs, val_labels),
            augment=augment,
            **fine_tune_options,
        )
        histories.append(result.history)
        accuracy = val_accuracy()
        records.append(
            {
                "round": round_number,
                "pseudo_labelled": int(confident.sum()),
                "val_accuracy": accuracy,
            }
        )
        if accuracy >= best["accuracy"]:
            best = {
                "accuracy": accuracy,
                "round": round_number,
                "state": copy.deepcopy(classifier.state_dict()),
            }
    classifier.load_state_dict(best["state"])
    return SelfTrainResult(records, best["round"], histories)
