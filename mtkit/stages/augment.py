"""What fine_tune does to its training examples: shifts and rotations, mixup, class balance.

    shift_rotate       rotate and shift each image of a batch by its own amount (one grid_sample)
    RandomShiftRotate  a random small shift and rotation per image: what `augment=True` uses
    as_augmentation    fine_tune's `augment` option (True, False or a callable) → a callable or None
    mixup_pairs        (λ, partner indices) for blending a batch with a shuffled copy of itself
    class_weights      a loss weight per class, 1 / its frequency (class_balance="weighted_loss")
    oversample         rarer classes' examples repeated (class_balance="oversample")

fine_tune (mtkit/stages/finetune.py) augments and mixes training batches only; it re-exports
all of these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mtkit.core.utils import MtkitError, check_positive


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


def as_augmentation(augment) -> Callable | None:
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
# Class balance: what fine_tune's class_balance option does to the training examples.


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Loss weight per class, total / (num_classes × count): (num_classes,) float32.

    With these, cross-entropy becomes the mean over classes of each class's mean loss, so a
    class with 3 examples counts as much as one with 30. Absent classes get weight total / C.
    """
    counts = torch.bincount(labels, minlength=num_classes).float()
    return counts.sum() / (num_classes * counts.clamp_min(1))


def oversample(inputs: torch.Tensor, labels: torch.Tensor):
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
