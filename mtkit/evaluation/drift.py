"""Drift: noticing that new data differs from the data a model learned from, and adapting to it.

Noticing needs no labels:
    detect_drift(reference, new, encoder)
        1. a two-sample test on the encoder's embeddings: the maximum mean discrepancy (MMD)
           between the two sets, with a permutation p-value (how often a random relabelling of
           the pooled examples into "reference" and "new" gives an MMD at least as large);
        2. with an autoencoder, each example's reconstruction error as a shift score: an
           autoencoder rebuilds what looks like its training data well, and the rest badly.
Adapting needs a few labels from the new domain, and costs something on the old one:
    adapt_to_shift(classifier, old, new, method)
        naive       fine-tune everything on the new examples
        rehearsal   the same, with a sample of old examples replayed among them
        adapter     a new LoRA adapter and head on the frozen backbone; the old task is the
                    backbone with the adapter switched off, so nothing is forgotten, but each
                    input must be routed to the right one (the shift score can do that)
    measuring accuracy on the new domain and how much was forgotten on the old.
A shifted domain to practise on: shifted_split(split, "rotate") or "invert" (digits).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.utils import MtkitError, check_choice, check_positive, seed_everything

SHIFTS = ("rotate", "invert")
ADAPTATION_METHODS = ("naive", "rehearsal", "adapter")

# ---------------------------------------------------------------------------------------------
# Detecting drift.


def mmd_permutation_test(
    reference: torch.Tensor, new: torch.Tensor, permutations: int = 500, seed: int = 0
) -> tuple[float, float]:
    """Is `new` drawn from the same distribution as `reference`? Returns (MMD², p-value).

    reference: N×D, new: M×D (e.g. embeddings). MMD² is the squared distance between the two
    sets' mean feature maps under a Gaussian kernel exp(−‖a − b‖² / h), h the median squared
    distance between the pooled points (the usual "median heuristic"):
        MMD² = mean k(reference, reference) + mean k(new, new) − 2 · mean k(reference, new)
    (the biased estimate; the permutation test does not need an unbiased one). p-value: the
    share of `permutations` random splits of the pooled points into sets of sizes N and M whose
    MMD² is at least the observed one, counting the observed split itself:
    (1 + #{permuted ≥ observed}) / (1 + permutations). A small p-value says "different".
    """
    check_positive("permutations", permutations, integer=True)
    if reference.dim() != 2 or new.dim() != 2 or reference.shape[1] != new.shape[1]:
        raise MtkitError(
            f"expected N×D and M×D embeddings, got {tuple(reference.shape)}, {tuple(new.shape)}"
        )
    if len(reference) < 2 or len(new) < 2:
        raise MtkitError("each set needs at least 2 examples for a two-sample test")
    pooled = torch.cat([reference, new]).double()
    squared = torch.cdist(pooled, pooled).pow(2)
    bandwidth = squared[squared > 0].median().clamp_min(1e-12)
    kernel = torch.exp(-squared / bandwidth)  # computed once, reused by every permutation

    count, first = len(pooled), len(reference)

    def mmd_squared(members: torch.Tensor) -> torch.Tensor:
        """members: P×count bool, True for the "reference" side. Returns P values of MMD²."""
        # w = 1/N on the reference side, −1/M on the other: MMD² = wᵀ K w.
        weights = torch.where(members, 1.0 / first, -1.0 / (count - first)).double()
        return ((weights @ kernel) * weights).sum(dim=1)

    observed = mmd_squared((torch.arange(count) < first)[None])[0]
    generator = torch.Generator().manual_seed(seed)
    exceed = 0
    for start in range(0, permutations, 100):  # in chunks: memory stays 100 × count
        size = min(100, permutations - start)
        order = torch.rand(size, count, generator=generator).argsort(dim=1)
        exceed += int((mmd_squared(order < first) >= observed).sum())
    return float(observed), (1 + exceed) / (1 + permutations)


@torch.no_grad()
def reconstruction_scores(autoencoder: nn.Module, images, batch_size: int = 512) -> np.ndarray:
    """Each image's mean squared reconstruction error: an (N,) array. High = unfamiliar."""
    tensor = _images(images)
    device = next(autoencoder.parameters()).device
    was_training = autoencoder.training
    autoencoder.eval()
    scores = []
    for start in range(0, len(tensor), batch_size):
        chunk = tensor[start : start + batch_size].to(device)
        error = F.mse_loss(autoencoder(chunk), chunk, reduction="none")
        scores.append(error.flatten(start_dim=1).mean(dim=1).cpu())
    autoencoder.train(was_training)
    return torch.cat(scores).numpy()


@dataclass
class DriftReport:
    """What detect_drift found.

    mmd: MMD² between the embeddings; p_value: its permutation p-value; drifted: p < alpha.
    reference_scores, new_scores: per-example reconstruction errors (None without an
        autoencoder). threshold: the `quantile` of the reference scores; flagged: the share of
        new examples above it (about 1 − quantile when nothing changed).
    """

    mmd: float
    p_value: float
    alpha: float
    permutations: int
    reference_size: int
    new_size: int
    reference_scores: np.ndarray | None = None
    new_scores: np.ndarray | None = None
    threshold: float | None = None
    flagged: float | None = None

    @property
    def drifted(self) -> bool:
        return self.p_value < self.alpha

    def summary(self) -> str:
        verdict = "drift" if self.drifted else "no evidence of drift"
        text = (
            f"MMD² {self.mmd:.4f}, p = {self.p_value:.3f} ({self.permutations} permutations, "
            f"{self.reference_size} vs {self.new_size} examples): {verdict} at α = {self.alpha}"
        )
        if self.flagged is not None:
            text += (
                f"; {self.flagged:.0%} of the new examples rebuild worse than "
                f"{self.threshold:.4f}, the reference's {self.quantile_percent}th percentile"
            )
        return text

    @property
    def quantile_percent(self) -> int | None:
        if self.reference_scores is None:
            return None
        share = float(np.mean(self.reference_scores <= self.threshold))
        return round(100 * share)

    def plot(self, ax=None, labels=("reference", "new")):
        """Histograms of both sets' reconstruction scores (as densities: the sets' sizes may
        differ) and the threshold. Returns the Axes."""
        import matplotlib.pyplot as plt

        if self.reference_scores is None:
            raise MtkitError("no reconstruction scores: pass an autoencoder to detect_drift")
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        both = np.concatenate([self.reference_scores, self.new_scores])
        bins = np.linspace(both.min(), both.max(), 40)
        for scores, label in zip((self.reference_scores, self.new_scores), labels, strict=True):
            ax.hist(scores, bins=bins, alpha=0.6, label=label, density=True)
        ax.axvline(self.threshold, color="black", linestyle="--", linewidth=1, label="threshold")
        ax.set_xlabel("reconstruction error per image")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        return ax


def detect_drift(
    reference,
    new,
    encoder: nn.Module,
    *,
    autoencoder: nn.Module | None = None,
    permutations: int = 500,
    alpha: float = 0.05,
    quantile: float = 0.95,
    max_examples: int = 500,
    seed: int = 0,
) -> DriftReport:
    """Compare `new` inputs with `reference` inputs through `encoder`; returns a DriftReport.

    reference, new: N×C×H×W tensors or image datasets (labels are not used). The reference
        should be data the model did not train on (e.g. validation images): training images
        rebuild unusually well and would make everything else look shifted.
    encoder: embeds the inputs for the MMD test. An autoencoder may be passed here: its
        `.encoder` embeds and its reconstruction error scores each example.
    autoencoder: scores each example by reconstruction error (default: `encoder`, if it is one).
    max_examples: at most this many of each set (drawn with `seed`) go into the MMD test,
        whose cost grows with the square of the number of examples. Scores use all of them.
    """
    if not 0 < alpha < 1 or not 0 < quantile < 1:
        raise MtkitError(f"alpha and quantile must be in (0, 1), got {alpha} and {quantile}")
    check_positive("max_examples", max_examples, integer=True)
    from mtkit.evaluation.metrics import embed

    if autoencoder is None and hasattr(encoder, "encoder") and hasattr(encoder, "decoder"):
        autoencoder, encoder = encoder, encoder.encoder
    reference, new = _images(reference), _images(new)
    generator = torch.Generator().manual_seed(seed)

    def sample(images: torch.Tensor) -> torch.Tensor:
        if len(images) <= max_examples:
            return images
        return images[torch.randperm(len(images), generator=generator)[:max_examples]]

    reference_codes = torch.as_tensor(embed(encoder, sample(reference)))
    new_codes = torch.as_tensor(embed(encoder, sample(new)))
    mmd, p_value = mmd_permutation_test(reference_codes, new_codes, permutations, seed)
    report = DriftReport(mmd, p_value, alpha, permutations, len(reference_codes), len(new_codes))
    if autoencoder is not None:
        report.reference_scores = reconstruction_scores(autoencoder, reference)
        report.new_scores = reconstruction_scores(autoencoder, new)
        report.threshold = float(np.quantile(report.reference_scores, quantile))
        report.flagged = float(np.mean(report.new_scores > report.threshold))
    return report


def _images(images) -> torch.Tensor:
    tensor = images if isinstance(images, torch.Tensor) else getattr(images, "images", None)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4 or len(tensor) == 0:
        raise MtkitError("expected a non-empty N×C×H×W image tensor or an ImageDataset")
    return tensor


# ---------------------------------------------------------------------------------------------
# A shifted domain to practise on.


def shift_images(images: torch.Tensor, kind: str = "rotate", angle: float = 45.0) -> torch.Tensor:
    """N×C×H×W images in [0, 1] → a new tensor: inverted (1 − x), or rotated about the centre
    by `angle` degrees (as plotted, 90 turns a digit a quarter clockwise; corners fill with 0)."""
    from mtkit.stages.finetune import shift_rotate

    check_choice("shift", kind, SHIFTS)
    if kind == "invert":
        return 1.0 - images
    angles = torch.full((len(images),), float(angle))
    return shift_rotate(images, angles, torch.zeros(len(images), 2)).clamp(0.0, 1.0)


def shifted_split(split, kind: str = "rotate", angle: float = 45.0):
    """A copy of a FewLabelSplit of images with every part's images shifted (labels kept)."""
    parts = {
        name: dataclasses.replace(
            getattr(split, name), images=shift_images(getattr(split, name).images, kind, angle)
        )
        for name in ("labelled", "validation", "unlabelled", "test")
    }
    return dataclasses.replace(split, **parts)


# ---------------------------------------------------------------------------------------------
# Adapting to a shifted domain.


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
                    adapter switched off (mtkit.stages.adapters.set_active_adapter(model, None)).
    lr: default 3e-3 for every method. Other keyword arguments go to fine_tune.
    The returned model has the adapter active for "adapter".
    """
    from mtkit.stages import adapters
    from mtkit.stages.finetune import fine_tune, labelled_tensors

    check_choice("method", method, ADAPTATION_METHODS)
    check_positive("rehearsal_size", rehearsal_size, integer=True)
    lr = 3e-3 if lr is None else check_positive("lr", lr)
    options = dict(epochs=epochs, lr=lr, patience=patience, seed=seed, progress=False)
    options.update(fine_tune_options)
    started = time.perf_counter()
    new_before = adapters.accuracy(classifier, new.test)
    old_before = adapters.accuracy(classifier, old.test)
    seed_everything(seed)
    model = copy.deepcopy(classifier)
    if method == "naive":
        fine_tune(model, new.labelled, strategy="full", validation=new.validation, **options)
    elif method == "rehearsal":
        old_inputs, old_labels = labelled_tensors(old.labelled)
        replay = torch.randperm(len(old_labels))[:rehearsal_size]
        new_inputs, new_labels = labelled_tensors(new.labelled)
        train = (
            torch.cat([new_inputs, old_inputs[replay]]),
            torch.cat([new_labels, old_labels[replay]]),
        )
        validation = tuple(
            torch.cat(pair)
            for pair in zip(
                labelled_tensors(new.validation), labelled_tensors(old.validation), strict=True
            )
        )
        fine_tune(model, train, strategy="full", validation=validation, **options)
    else:
        adapters.add_lora(model, "encoder", rank=rank, adapter_name="new_domain")
        head = adapters.add_task_head(model, "new_domain", model.num_classes)
        head.load_state_dict(model.head.base.state_dict())  # start from the old head
        adapters.train_adapter(model, new.labelled, validation=new.validation, **options)
    trainable = adapters.trainable_parameters(model).trainable
    new_accuracy = adapters.accuracy(model, new.test)
    if method == "adapter":
        adapters.set_active_adapter(model, None)  # the old task: the backbone as it was
        old_accuracy = adapters.accuracy(model, old.test)
        adapters.set_active_adapter(model, "new_domain")
    else:
        old_accuracy = adapters.accuracy(model, old.test)
    seconds = time.perf_counter() - started
    result = ShiftAdaptation(
        method, new_before, old_before, new_accuracy, old_accuracy, trainable, seconds
    )
    return model, result


def plot_adaptations(results: list[ShiftAdaptation], ax=None, title: str | None = None):
    """Bars per method: accuracy on the new and on the old domain, before-lines for reference."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    methods = list(dict.fromkeys(r.method for r in results))

    def mean_std(method, name):
        values = [getattr(r, name) for r in results if r.method == method]
        return float(np.mean(values)), float(np.std(values))

    positions = np.arange(len(methods))
    for offset, name, label in (
        (-0.2, "new_accuracy", "new domain"),
        (0.2, "old_accuracy", "old domain"),
    ):
        stats = [mean_std(m, name) for m in methods]
        ax.bar(
            positions + offset, [s[0] for s in stats], 0.4, yerr=[s[1] for s in stats], label=label
        )
    ax.axhline(np.mean([r.old_before for r in results]), color="tab:orange", linestyle="--",
               linewidth=1, label="old domain, before")  # fmt: skip
    ax.axhline(np.mean([r.new_before for r in results]), color="tab:blue", linestyle=":",
               linewidth=1, label="new domain, before")  # fmt: skip
    ax.set_xticks(positions, methods)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    if title:
        ax.set_title(title)
    return ax
