"""What fine_tune does to its training examples: shifts and rotations, mixup, class balance.

    shift_rotate       rotate, shift (and zoom) each image of a batch by its own amount (one
                       grid_sample)
    RandomShiftRotate  a random small shift and rotation per image: what `augment=True` uses
    StrongAugment      a heavy random distortion per image (zoom, shift, rotation, contrast,
                       an erased square): the views of contrastive pretraining, and the strong
                       view of consistency training
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


def shift_rotate(
    images: torch.Tensor,
    angles: torch.Tensor,
    shifts: torch.Tensor,
    zooms: torch.Tensor | None = None,
):
    """Rotate each image about its centre by its own angle, then shift it (bilinear, zero fill).

    images: N×C×H×W. angles: (N,) degrees, positive = counter-clockwise. shifts: N×2 pixels
    (x to the right, y down; fractions allowed). zooms: optional (N,) magnifications about the
    centre (2 = twice as large, the outer part cropped away). Returns a new N×C×H×W tensor,
    with zooms=None equal to
    torchvision.transforms.v2.functional.affine(image, angle, shift, scale=1, shear=0,
    interpolation=BILINEAR) image by image, but as one batched grid_sample: torchvision draws one
    transform per call, and calling it per image costs ~1 ms each, which dominates a small model.
    """
    _, _, height, width = images.shape
    radians = torch.deg2rad(angles.to(images))
    shrink = 1.0 if zooms is None else 1.0 / zooms.to(images)
    cos, sin = torch.cos(radians) * shrink, torch.sin(radians) * shrink
    shift_x, shift_y = shifts[:, 0].to(images), shifts[:, 1].to(images)
    # Output pixel p reads input pixel R⁻¹(p − shift) / zoom, measured from the centre in
    # pixels...
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


@dataclass(frozen=True)
class StrongAugment:
    """A heavy random distortion per image, all of a batch in a few tensor operations.

    Each image is zoomed by a factor in [1, max_zoom] (a random crop, resized back), shifted by
    up to max_shift of its side, rotated by up to max_rotation degrees, mirrored left-right with
    probability `flip`, its contrast scaled by a factor in [1 − contrast, 1 + contrast] about its
    mean, and a square of side `erase` × its side set to 0 (cutout).
    Two calls on one batch give two *views* of each image: contrastive pretraining learns to
    match them, and consistency training predicts the strong view's class from the weak one.
    What the distortions keep is what the model learns to ignore: a small shift or a change of
    contrast does not change a digit or a garment. Mirroring changes some digits, so it is off
    by default.
    images: N×C×H×W in [0, 1] → a new N×C×H×W in [0, 1]. Labels are not its business.
    """

    max_zoom: float = 1.4
    max_shift: float = 0.15
    max_rotation: float = 20.0
    flip: float = 0.0
    contrast: float = 0.4
    erase: float = 0.4

    def __post_init__(self):
        if not self.max_zoom >= 1:
            raise MtkitError(f"max_zoom must be >= 1 (1 = no zoom), got {self.max_zoom}")
        for name in ("max_shift", "max_rotation", "flip", "contrast", "erase"):
            check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("flip", "contrast", "erase"):
            if getattr(self, name) > 1:
                raise MtkitError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise MtkitError(f"augmentation needs N×C×H×W images, got {tuple(images.shape)}")
        count, _, height, width = images.shape

        def uniform(*shape, low=-1.0, high=1.0):
            return torch.rand(*shape, device=images.device) * (high - low) + low

        zooms = uniform(count, low=1.0, high=self.max_zoom)
        shifts = uniform(count, 2) * self.max_shift * torch.tensor([width, height]).to(images)
        views = shift_rotate(images, uniform(count) * self.max_rotation, shifts, zooms)
        if self.flip:
            mirrored = torch.rand(count, device=images.device) < self.flip
            views = torch.where(mirrored[:, None, None, None], views.flip(-1), views)
        if self.contrast:
            mean = views.mean(dim=(1, 2, 3), keepdim=True)
            factor = 1 + uniform(count, 1, 1, 1) * self.contrast
            views = ((views - mean) * factor + mean).clamp(0.0, 1.0)
        if self.erase:
            views = views * ~random_squares(views, self.erase)
        return views


def random_squares(images: torch.Tensor, side_fraction: float) -> torch.Tensor:
    """A bool N×1×H×W mask, True inside one square per image of side ≈ side_fraction × the
    image's side, placed uniformly at random (it may hang over the edge, as in cutout)."""
    count, _, height, width = images.shape
    rows = torch.arange(height, device=images.device)[None, :, None]
    cols = torch.arange(width, device=images.device)[None, None, :]
    centre_y = torch.rand(count, 1, 1, device=images.device) * height
    centre_x = torch.rand(count, 1, 1, device=images.device) * width
    half_height, half_width = side_fraction * height / 2, side_fraction * width / 2
    inside = ((rows + 0.5 - centre_y).abs() < half_height) & (
        (cols + 0.5 - centre_x).abs() < half_width
    )
    return inside[:, None]


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
