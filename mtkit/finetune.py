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

Then two things to do with a fine-tuned classifier:
    forgetting(autoencoder, classifier, images)   how far fine-tuning moved the encoder away
                                                  from what pretraining taught it
    self_train(classifier, labelled, unlabelled)  learn from its own confident guesses on the
                                                  unlabelled pool, in rounds
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.pretrain import reconstruction_error
from mtkit.train import Callback, EarlyStopping, History, fit
from mtkit.utils import MtkitError, check_choice, check_positive

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
    if len(labels) == 0:
        raise MtkitError("the labelled data is empty")
    return inputs, labels


def pool_inputs(unlabelled) -> torch.Tensor:
    """The inputs of an unlabelled pool: a tensor, or a dataset's `.images`.

    Only `.images` is read, never `.labels` or `.tensors`, so the pool's true labels (if the
    object has any) cannot leak into training.
    """
    if isinstance(unlabelled, torch.Tensor):
        return unlabelled
    images = getattr(unlabelled, "images", None)
    if not isinstance(images, torch.Tensor):
        raise MtkitError(
            "the unlabelled pool must be an N×... tensor or an ImageDataset, "
            f"got {type(unlabelled).__name__}"
        )
    return images


def set_trainable(module: nn.Module, trainable: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of `module`."""
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


def count_trainable(model: nn.Module) -> int:
    """How many parameter values would receive gradients (requires_grad=True)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def reset_weights(model: nn.Module) -> None:
    """Re-initialise every layer in place, as if the model had just been built."""
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for name in ("feature_mean", "feature_std"):
        if hasattr(model, name):
            getattr(model, name).fill_(0.0 if name == "feature_mean" else 1.0)


# ---------------------------------------------------------------------------------------------
# Augmentation.


def shift_rotate(images: torch.Tensor, angles: torch.Tensor, shifts: torch.Tensor):
    """Rotate each image about its centre by its own angle, then shift it (bilinear, zero fill).

    images: N×C×H×W. angles: (N,) degrees, positive = counter-clockwise. shifts: N×2 pixels
    (x to the right, y down; fractions allowed). Returns a new N×C×H×W tensor, equal to
    torchvision.transforms.v2.functional.affine(image, angle, shift, scale=1, shear=0,
    interpolation=BILINEAR) image by image, but as one batched grid_sample: torchvision draws one
    transform per call, and calling it per image costs ~1 ms each, which dominates a small model.
    """
    _, _, height, width = images.shape
    radians = torch.deg2rad(angles.to(images))
    cos, sin = torch.cos(radians), torch.sin(radians)
    shift_x, shift_y = shifts[:, 0].to(images), shifts[:, 1].to(images)
    # Output pixel p reads input pixel R⁻¹(p − shift), measured from the centre in pixels...
    offset_x = -(cos * shift_x + sin * shift_y)
    offset_y = -(-sin * shift_x + cos * shift_y)
    # ... written in affine_grid's coordinates, which run from -1 to 1 across each side.
    theta = torch.stack(
        [
            torch.stack([cos, sin * height / width, offset_x * 2 / width], dim=1),
            torch.stack([-sin * width / height, cos, offset_y * 2 / height], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass
class RandomShiftRotate:
    """A random small shift and rotation per image: what `augment=True` uses.

    max_shift: pixels in each direction (uniform, fractions allowed); max_rotation: degrees.
    Call it on an N×C×H×W batch; returns a new batch, labels are not its business.
    """

    max_shift: float = 0.5
    max_rotation: float = 10.0

    def __post_init__(self):
        check_positive("max_shift", self.max_shift, allow_zero=True)
        check_positive("max_rotation", self.max_rotation, allow_zero=True)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise MtkitError(f"augmentation needs N×C×H×W images, got {tuple(images.shape)}")
        count, device = len(images), images.device
        angles = (torch.rand(count, device=device) * 2 - 1) * self.max_rotation
        shifts = (torch.rand(count, 2, device=device) * 2 - 1) * self.max_shift
        return shift_rotate(images, angles, shifts)


def _augmentation(augment) -> Callable | None:
    """augment=False/None → None, True → RandomShiftRotate(), a callable → itself."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return RandomShiftRotate()
    if callable(augment):
        return augment
    raise MtkitError(
        f"augment must be True, False or a callable images → images, got {type(augment).__name__}"
    )


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
    class_balance: "weighted_loss" weighs each class by 1 / its frequency; "oversample" repeats
        examples of rarer classes until every class is as frequent as the largest.
    l2_sp: strength of L2-SP, the penalty l2_sp · ‖w − w_pretrained‖² summed over the encoder's
        trainable weights, which keeps them near what pretraining found.
    lr_decay: for discriminative_lr, each group below the head learns lr_decay times slower.
    epochs_per_group: for gradual_unfreeze, epochs between unfreezing steps.
    Other keyword arguments go to `mtkit.fit` (schedule, grad_clip, device, seed, callbacks, ...).
    Raises MtkitError for an unknown strategy or bad option.
    """
    check_choice("strategy", strategy, STRATEGIES)
    check_choice("class_balance", class_balance, CLASS_BALANCE)
    check_choice("monitor", monitor, ("val_loss", "val_accuracy"))
    lr = DEFAULT_LR[strategy] if lr is None else check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    check_positive("l2_sp", l2_sp, allow_zero=True)
    check_positive("epochs_per_group", epochs_per_group, integer=True)
    if patience is not None:
        check_positive("patience", patience, integer=True)
    if not 0 < lr_decay <= 1:
        raise MtkitError(f"lr_decay must be in (0, 1], got {lr_decay}")
    if not hasattr(classifier, "layer_groups") or not hasattr(classifier, "head"):
        raise MtkitError("fine_tune needs a mtkit Classifier (an encoder with a head)")
    augmentation = _augmentation(augment)
    inputs, labels = labelled_tensors(labelled)
    if labels.max() >= classifier.num_classes or labels.min() < 0:
        raise MtkitError(f"labels must lie in [0, {classifier.num_classes}) for this classifier")
    if dropout is not None:
        if not 0 <= dropout < 1:
            raise MtkitError(f"dropout must be in [0, 1), got {dropout}")
        classifier.dropout.p = dropout
    if validation is not None:
        validation = labelled_tensors(validation)
    elif patience is not None and "val_data" not in fit_options:
        patience = None  # nothing to watch: train for all epochs

    if strategy == "scratch":
        reset_weights(classifier)
    # Everything trains, except the encoder of a linear probe; GradualUnfreezing re-freezes.
    set_trainable(classifier, strategy != "linear_probe")
    set_trainable(classifier.head, True)

    if class_balance == "oversample":
        inputs, labels = _oversample(inputs, labels)
    class_weights = None
    if class_balance == "weighted_loss":
        counts = torch.bincount(labels, minlength=classifier.num_classes).float()
        class_weights = counts.sum() / (len(counts) * counts.clamp_min(1))

    pretrained = None
    if l2_sp > 0:  # the starting point to pull back towards (a CPU copy: a few small tensors)
        pretrained = {
            name: parameter.detach().clone()
            for name, parameter in classifier.encoder.named_parameters()
        }

    def loss_fn(model, batch):
        batch_inputs, batch_labels = batch
        if augmentation is not None and model.training:
            batch_inputs = augmentation(batch_inputs)
        logits = model(batch_inputs)
        weights = None if class_weights is None else class_weights.to(logits.device)
        loss = F.cross_entropy(logits, batch_labels, weight=weights)
        if pretrained is not None and model.training:
            loss = loss + l2_sp * _distance_to(model.encoder, pretrained)
        accuracy = (logits.argmax(dim=1) == batch_labels).float().mean()
        return loss, {"accuracy": accuracy}

    # One optimizer parameter group per layer group, so each can have its own learning rate
    # and weight decay. Frozen groups are in it too: AdamW skips parameters without gradients
    # (no update, no decay) until GradualUnfreezing switches them on.
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
    if "optimizer" in fit_options:
        raise MtkitError("fine_tune builds its own optimizer; set lr / weight_decay instead")

    callbacks = list(fit_options.pop("callbacks", ()))
    if strategy == "gradual_unfreeze":
        callbacks.insert(0, GradualUnfreezing(groups, epochs_per_group))
    if patience is not None:
        callbacks.append(EarlyStopping(monitor, patience=patience))
    if validation is not None:
        fit_options["val_data"] = validation
    fit_options.setdefault("progress", False)
    history = fit(
        classifier,
        loss_fn,
        (inputs, labels),
        epochs=epochs,
        lr=lr,
        batch_size=min(batch_size, len(labels)),
        optimizer=optimizer,
        monitor=monitor,
        callbacks=callbacks,
        **fit_options,
    )
    return FineTuneResult(history, strategy, count_trainable(classifier), group_lrs)


def _distance_to(module: nn.Module, reference: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ‖w − w_reference‖² over the trainable parameters of `module` (the L2-SP penalty)."""
    total = torch.zeros(())
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
    """Class probabilities for every input: N×num_classes on the CPU, computed in eval mode."""
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


# ---------------------------------------------------------------------------------------------
# Forgetting: how much of what pretraining taught survives fine-tuning.


@dataclass
class Forgetting:
    """Reconstruction error (mean squared error per pixel) of the pretrained decoder fed by:

    before: the original encoder (the autoencoder as pretrained);
    after: the fine-tuned classifier's encoder.
    weight_change: ‖w_after − w_before‖ / ‖w_before‖ over all encoder weights.
    A frozen encoder gives after == before; the further fine-tuning moved it, the larger after.
    """

    before: float
    after: float
    weight_change: float

    @property
    def ratio(self) -> float:
        """after / before: 1.0 means nothing was forgotten."""
        return self.after / self.before if self.before > 0 else math.inf


class _Rebuild(nn.Module):
    """decoder(encoder(x)): a fine-tuned encoder put back in front of the original decoder."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def forgetting(autoencoder: nn.Module, classifier: nn.Module, images) -> Forgetting:
    """How far fine-tuning moved `classifier.encoder` from `autoencoder.encoder`.

    autoencoder: the pretrained autoencoder (left untouched: fine-tune a `copy_encoder` of it).
    classifier: a Classifier whose encoder has the same architecture as the autoencoder's.
    images: N×C×H×W tensor or ImageDataset to rebuild (e.g. the test images; labels unused).
    Returns Forgetting(before, after, weight_change).
    """
    if not hasattr(autoencoder, "encoder") or not hasattr(autoencoder, "decoder"):
        raise MtkitError("forgetting needs the pretrained autoencoder (with encoder and decoder)")
    before_weights = dict(autoencoder.encoder.named_parameters())
    after_weights = dict(classifier.encoder.named_parameters())
    shapes = {name: tuple(p.shape) for name, p in before_weights.items()}
    if shapes != {name: tuple(p.shape) for name, p in after_weights.items()}:
        raise MtkitError("the classifier's encoder does not have the autoencoder's architecture")
    moved = sum(
        (after_weights[name].detach().cpu() - weight.detach().cpu()).pow(2).sum()
        for name, weight in before_weights.items()
    )
    size = sum(weight.detach().cpu().pow(2).sum() for weight in before_weights.values())
    device = next(autoencoder.parameters()).device
    after_model = _Rebuild(copy.deepcopy(classifier.encoder).to(device), autoencoder.decoder)
    return Forgetting(
        before=reconstruction_error(autoencoder, images),
        after=reconstruction_error(after_model, images),
        weight_change=float(moved.sqrt() / size.sqrt()),
    )


# ---------------------------------------------------------------------------------------------
# Self-training: the unlabelled pool, used a second time.


def nearest_neighbours(features: torch.Tensor, k: int, chunk_size: int = 1024) -> torch.Tensor:
    """The indices of each row's k nearest other rows (Euclidean): int64 N×k.

    features: N×D. Distances are computed a chunk of rows at a time, so memory stays
    chunk_size × N rather than N × N for a large pool.
    """
    k = min(k, len(features) - 1)
    neighbours = []
    for start in range(0, len(features), chunk_size):
        distances = torch.cdist(features[start : start + chunk_size], features)
        rows = torch.arange(start, start + len(distances))
        distances[rows - start, rows] = math.inf  # a point is not its own neighbour
        neighbours.append(distances.topk(k, dim=1, largest=False).indices)
    return torch.cat(neighbours)


def smooth_over_neighbours(
    probabilities: torch.Tensor, neighbours: torch.Tensor, smoothing: float, steps: int = 10
) -> torch.Tensor:
    """Blend each example's predicted probabilities with those of its neighbours.

    probabilities: N×num_classes; neighbours: N×k indices (see nearest_neighbours).
    Repeats q ← (1 − smoothing)·p + smoothing·mean(q over the neighbours) `steps` times: label
    propagation on the k-nearest-neighbour graph, started from the classifier's own guesses.
    A guess its neighbourhood agrees with stays confident; a lone confident guess among
    neighbours that think otherwise is toned down, which is what keeps the classifier's
    confident mistakes out of the pseudo-labels. Returns N×num_classes rows summing to 1.
    """
    smoothed = probabilities
    for _ in range(steps):
        smoothed = (1 - smoothing) * probabilities + smoothing * smoothed[neighbours].mean(dim=1)
    return smoothed


def select_pseudo_labels(
    probabilities: torch.Tensor, threshold: float, balance: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which pool examples get a pseudo-label, and which.

    probabilities: N×num_classes predicted class probabilities.
    Keeps the examples whose top probability is at least `threshold`. With `balance`, no class
    keeps more than twice as many as the rarest class that has any (its most confident ones):
    easy classes would otherwise flood the training set and teach the model to over-predict them.
    Returns (indices into the pool, int64 pseudo-labels), both (M,), most confident first.
    """
    confidence, guesses = probabilities.max(dim=1)
    order = torch.argsort(confidence, descending=True)
    order = order[confidence[order] >= threshold]
    if balance and len(order):
        counts = torch.bincount(guesses[order], minlength=probabilities.shape[1])
        cap = 2 * int(counts[counts > 0].min())
        # Each kept example's rank within its class (0 = the class's most confident).
        one_hot = F.one_hot(guesses[order], probabilities.shape[1])
        rank = (one_hot.cumsum(dim=0) * one_hot).sum(dim=1) - 1
        order = order[rank < cap]
    return order, guesses[order]


@dataclass
class SelfTrainResult:
    """Per round: how many pool examples got a pseudo-label and the validation accuracy after.

    rounds: [{"round", "pseudo_labelled", "val_accuracy"}, ...]; round 0 is the classifier as
        it came in. `best_round` is the one whose weights were kept.
    pseudo_labels: per round, (pool indices, pseudo-labels) it trained on; compare with
        FewLabelSplit.unlabelled_labels_for_evaluation() to see how many were right.
    """

    rounds: list[dict]
    best_round: int
    histories: list[History]
    pseudo_labels: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


@torch.no_grad()
def _features(classifier, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The classifier's standardised features of `inputs`, N×feature_size on the CPU."""
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    chunks = [
        classifier.features(inputs[start : start + batch_size].to(device)).cpu()
        for start in range(0, len(inputs), batch_size)
    ]
    classifier.train(was_training)
    return torch.cat(chunks)


def self_train(
    classifier,
    labelled,
    unlabelled,
    *,
    validation,
    rounds: int = 3,
    threshold: float = 0.7,
    balance: bool = True,
    neighbours: int = 10,
    smoothing: float = 0.8,
    strategy: str = "full",
    augment=True,
    epochs: int = 50,
    batch_size: int = 128,
    patience: int | None = None,
    **fine_tune_options,
) -> SelfTrainResult:
    """Semi-supervised adaptation: learn from the model's own confident guesses on the pool.

    Each round:
    1. predict the unlabelled pool (clean images);
    2. with `smoothing` > 0, blend every guess with those of its `neighbours` nearest pool
       examples in the classifier's feature space (smooth_over_neighbours);
    3. keep the guesses with probability >= `threshold` as pseudo-labels (class-balanced with
       `balance`, see select_pseudo_labels);
    4. fine-tune `classifier` further on labelled + pseudo-labelled examples with `strategy`,
       `augment` (each example seen slightly shifted and rotated), `epochs` and `batch_size`.
    The weights of the round with the best validation accuracy are kept (round 0 = as it came
    in), so a round that hurts is undone. Early stopping inside a round is off by default
    (`patience`): after round 0 the validation loss rewards staying put, not learning the pool.

    unlabelled: the pool (an ImageDataset or an N×... tensor). Only its images are read.
    validation: labelled data to choose the best round; required, since without it a harmful
        round could not be noticed.
    smoothing=0 gives plain self-training. On digits, plain self-training gains about one point
    over its start, with smoothing about three: the classifier's few confident mistakes,
    trained on, teach it to repeat them; its neighbours rarely share them.
    fine_tune_options: passed to every round's fine_tune (lr, weight_decay, dropout, ...).
    Returns a SelfTrainResult; `classifier` ends with the best round's weights.
    """
    check_positive("rounds", rounds, integer=True)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise MtkitError(f"threshold is a probability in [0, 1), got {threshold!r}")
    if not 0 <= threshold < 1:
        raise MtkitError(f"threshold is a probability in [0, 1), got {threshold}")
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)):
        raise MtkitError(f"smoothing must be in [0, 1), got {smoothing!r}")
    if not 0 <= smoothing < 1:
        raise MtkitError(f"smoothing must be in [0, 1), got {smoothing}")
    check_positive("neighbours", neighbours, integer=True)
    check_choice("strategy", strategy, STRATEGIES)
    if strategy == "scratch":
        raise MtkitError("self_train continues from the classifier; strategy='scratch' would not")
    if validation is None:
        raise MtkitError("self_train needs validation data to keep the best round")
    pool = pool_inputs(unlabelled)
    if len(pool) < 2:
        raise MtkitError(f"the unlabelled pool needs at least 2 examples, got {len(pool)}")
    inputs, labels = labelled_tensors(labelled)
    val_inputs, val_labels = labelled_tensors(validation)

    def val_accuracy() -> float:
        guesses = predict(classifier, val_inputs).argmax(dim=1)
        return (guesses == val_labels).float().mean().item()

    best = {"accuracy": val_accuracy(), "round": 0, "state": copy.deepcopy(classifier.state_dict())}
    records = [{"round": 0, "pseudo_labelled": 0, "val_accuracy": best["accuracy"]}]
    histories, chosen = [], []
    for round_number in range(1, rounds + 1):
        probabilities = predict(classifier, pool)
        if smoothing > 0:
            graph = nearest_neighbours(_features(classifier, pool), neighbours)
            probabilities = smooth_over_neighbours(probabilities, graph, smoothing)
        indices, guesses = select_pseudo_labels(probabilities, threshold, balance)
        chosen.append((indices, guesses))
        combined = (torch.cat([inputs, pool[indices]]), torch.cat([labels, guesses]))
        result = fine_tune(
            classifier,
            combined,
            strategy=strategy,
            validation=(val_inputs, val_labels),
            augment=augment,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            **fine_tune_options,
        )
        histories.append(result.history)
        accuracy = val_accuracy()
        records.append(
            {"round": round_number, "pseudo_labelled": len(indices), "val_accuracy": accuracy}
        )
        if accuracy >= best["accuracy"]:  # ties go to the later round: it saw more data
            best = {
                "accuracy": accuracy,
                "round": round_number,
                "state": copy.deepcopy(classifier.state_dict()),
            }
    classifier.load_state_dict(best["state"])
    return SelfTrainResult(records, best["round"], histories, chosen)
