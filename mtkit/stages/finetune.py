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

After fine-tuning, `forgetting(autoencoder, classifier, images)` measures how far it moved the
encoder away from what pretraining taught it. Self-training, which goes on from a fine-tuned
classifier with the unlabelled pool, lives in mtkit/selftrain.py.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.train import Callback, EarlyStopping, History, fit
from mtkit.core.utils import MtkitError, check_choice, check_positive
from mtkit.stages.pretrain import reconstruction_error

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
    # Innermost first: a module that initialises its children its own way (TokenEmbeddings'
    # small vectors instead of nn.Embedding's N(0, 1)) then has the last word, as when built.
    for module in reversed(list(model.modules())):
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
    The defaults are small on purpose: on 8×8 digits, ±0.5 px and ±10° lifted a linear probe by
    about 1.5 points on held-out splits, while whole-pixel shifts (±1 px) cost accuracy.
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


def mixup_pairs(batch_size: int, alpha: float) -> tuple[float, torch.Tensor]:
    """(λ, partner indices) for mixing a batch with a shuffled copy of itself.

    λ ~ Beta(α, α), folded to max(λ, 1 − λ) so each example keeps the larger share of itself;
    partner: a random permutation of range(batch_size), int64 (batch_size,). Example i becomes
    λ·x[i] + (1 − λ)·x[partner[i]], and its loss weighs label i by λ and partner[i]'s by 1 − λ.
    """
    check_positive("batch_size", batch_size, integer=True)
    check_positive("mixup alpha", alpha)
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    share = float(beta.sample())
    return max(share, 1.0 - share), torch.randperm(batch_size)


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
    check_choice("strategy", strategy, STRATEGIES)
    check_choice("class_balance", class_balance, CLASS_BALANCE)
    check_choice("monitor", monitor, ("val_loss", "val_accuracy"))
    lr = DEFAULT_LR[strategy] if lr is None else check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    check_positive("l2_sp", l2_sp, allow_zero=True)
    check_positive("mixup", mixup, allow_zero=True)
    check_positive("epochs_per_group", epochs_per_group, integer=True)
    if patience is not None:
        check_positive("patience", patience, integer=True)
    if not 0 < lr_decay <= 1:
        raise MtkitError(f"lr_decay must be in (0, 1], got {lr_decay}")
    if dropout is not None and not 0 <= dropout < 1:
        raise MtkitError(f"dropout must be in [0, 1), got {dropout}")
    if "optimizer" in fit_options:
        raise MtkitError("fine_tune builds its own optimizer; set lr / weight_decay instead")
    if not hasattr(classifier, "layer_groups") or not hasattr(classifier, "head"):
        raise MtkitError("fine_tune needs a mtkit Classifier (an encoder with a head)")
    augmentation = _augmentation(augment)
    inputs, labels = labelled_tensors(labelled)
    if labels.max() >= classifier.num_classes or labels.min() < 0:
        raise MtkitError(f"labels must lie in [0, {classifier.num_classes}) for this classifier")
    if validation is not None:
        fit_options["val_data"] = labelled_tensors(validation)
    elif patience is not None and "val_data" not in fit_options:
        patience = None  # nothing to watch: train for all epochs

    # Checks done: from here on the classifier is changed.
    if dropout is not None:
        classifier.dropout.p = dropout
    if strategy == "scratch":
        reset_weights(classifier)
    # Everything trains, except the encoder of a linear probe; GradualUnfreezing re-freezes.
    set_trainable(classifier, strategy != "linear_probe")
    set_trainable(classifier.head, True)

    if class_balance == "oversample":
        inputs, labels = _oversample(inputs, labels)
    weights = None
    if class_balance == "weighted_loss":
        weights = class_weights(labels, classifier.num_classes)

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

    callbacks = list(fit_options.pop("callbacks", ()))
    if strategy == "gradual_unfreeze":
        callbacks.insert(0, GradualUnfreezing(groups, epochs_per_group))
    if patience is not None:
        callbacks.append(EarlyStopping(monitor, patience=patience))
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
            if reference[name].device != parameter.device:  # moved once, not at every step
                reference[name] = reference[name].to(parameter.device)
            total = total + (parameter - reference[name]).pow(2).sum()
    return total


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Loss weight per class, total / (num_classes × count): (num_classes,) float32.

    With these, cross-entropy becomes the mean over classes of each class's mean loss, so a
    class with 3 examples counts as much as one with 30. Absent classes get weight total / C.
    """
    counts = torch.bincount(labels, minlength=num_classes).float()
    return counts.sum() / (num_classes * counts.clamp_min(1))


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
    if len(inputs) == 0:
        raise MtkitError("nothing to predict: the inputs are empty")
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
