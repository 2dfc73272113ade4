"""Few-label splits: a fixed test set, a handful of labels per class, and a large unlabelled pool.

This is the setting of semi-supervised learning and of pretraining-then-fine-tuning: labels are
scarce, unlabelled data is plentiful, and the test set must stay the same across seeds so that
results from different seeds can be compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mtkit.core.checks import shown
from mtkit.core.utils import MtkitError, check_positive
from mtkit.data.images import ImageDataset, index_array
from mtkit.data.text import TextDataset


@dataclass(eq=False, repr=False)
class FewLabelSplit:
    """The four disjoint parts of a dataset, and where each came from.

    labelled: `labels_per_class` labelled examples per class, for training.
    validation: `validation_per_class` labelled examples per class, for model selection.
    unlabelled: the remaining training examples with labels=None (the pool).
    test: held out; chosen with `test_seed` only, so it is the same for every `seed`.
    *_indices: int64 positions of each part in the original dataset (sorted).
    """

    labelled: ImageDataset | TextDataset
    unlabelled: ImageDataset | TextDataset
    validation: ImageDataset | TextDataset
    test: ImageDataset | TextDataset
    labelled_indices: np.ndarray
    unlabelled_indices: np.ndarray
    validation_indices: np.ndarray
    test_indices: np.ndarray
    seed: int
    test_seed: int
    labels_per_class: int
    validation_per_class: int
    _unlabelled_labels: torch.Tensor | None = field(default=None, repr=False)

    def unlabelled_labels_for_evaluation(self) -> torch.Tensor:
        """The true labels of the unlabelled pool, int64 (len(unlabelled),).

        For analysis only (e.g. how accurate pseudo-labels are): never train on them, or the
        pool is no longer unlabelled and the few-label results mean nothing.
        """
        if self._unlabelled_labels is None:
            raise MtkitError(
                "this split's pool labels were removed (splits handed to experiment methods "
                "carry none); ask the code that made the split"
            )
        return self._unlabelled_labels.clone()

    def summary(self) -> str:
        """A few lines with the size of each part."""
        return "\n".join(
            [
                f"FewLabelSplit(seed={self.seed}, test_seed={self.test_seed})",
                f"  labelled:   {len(self.labelled):>7} ({self.labels_per_class} per class)",
                f"  validation: {len(self.validation):>7} ({self.validation_per_class} per class)",
                f"  unlabelled: {len(self.unlabelled):>7}",
                f"  test:       {len(self.test):>7}",
            ]
        )

    def __repr__(self) -> str:
        return (
            f"FewLabelSplit(labelled={len(self.labelled)}, validation={len(self.validation)}, "
            f"unlabelled={len(self.unlabelled)}, test={len(self.test)}, seed={self.seed}, "
            f"test_seed={self.test_seed})"
        )


def few_labels(
    dataset,
    labels_per_class: int = 10,
    *,
    validation_per_class: int | None = None,
    test_size: float | int = 0.25,
    seed: int = 0,
    test_seed: int = 0,
    test_indices=None,
) -> FewLabelSplit:
    """Split a labelled ImageDataset or TextDataset into labelled / validation / pool / test.

    1. Test: a stratified `test_size` (fraction in (0, 1) or a count) chosen with `test_seed`;
       or exactly the examples at `test_indices` when given (e.g. a dataset's official test
       images appended to its training images), and then test_size is not used.
    2. From the rest, per class: `labels_per_class` labelled and `validation_per_class`
       (default: as many as labelled, an honestly small validation set) chosen with `seed`.
    3. Everything left is the unlabelled pool, returned with its labels hidden.
    Every example lands in exactly one part. Returns a FewLabelSplit.
    """
    if not isinstance(dataset, (ImageDataset, TextDataset)):
        raise MtkitError(
            f"few_labels splits an ImageDataset or a TextDataset, got {type(dataset).__name__}; "
            "build one with ImageDataset.from_tensors or TextDataset.from_lists"
        )
    if dataset.labels is None:
        raise MtkitError("few_labels needs a labelled dataset, but this one has labels=None")
    check_positive("labels_per_class", labels_per_class, integer=True)
    if validation_per_class is None:
        validation_per_class = labels_per_class
    check_positive("validation_per_class", validation_per_class, integer=True, allow_zero=True)
    for name, value in (("seed", seed), ("test_seed", test_seed)):
        check_positive(name, value, integer=True, allow_zero=True)

    labels = dataset.labels.cpu().numpy()
    class_names = dataset.class_names  # the datasets guarantee labels index these
    members = [np.flatnonzero(labels == c) for c in range(len(class_names))]

    members, fixed_test, test_counts = _test_choice(members, len(labels), test_size, test_indices)
    test_rng = np.random.default_rng(test_seed)
    rng = np.random.default_rng(seed)
    parts = {"labelled": [], "validation": [], "unlabelled": [], "test": [fixed_test]}
    for c, indices in enumerate(members):
        # Two generators: the test draw must not depend on `seed`, only on `test_seed`.
        shuffled = test_rng.permutation(indices)
        parts["test"].append(shuffled[: test_counts[c]])
        rest = rng.permutation(shuffled[test_counts[c] :])
        wanted = labels_per_class + validation_per_class
        if wanted > len(rest):
            raise MtkitError(
                f"class {class_names[c]!r} has {len(rest)} examples left after the test split, "
                f"but {labels_per_class} labelled + {validation_per_class} validation = {wanted} "
                "were asked for; lower labels_per_class / validation_per_class or test_size"
            )
        parts["labelled"].append(rest[:labels_per_class])
        parts["validation"].append(rest[labels_per_class:wanted])
        parts["unlabelled"].append(rest[wanted:])
    indices = {
        name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()
    }

    pool = dataset[indices["unlabelled"]]
    return FewLabelSplit(
        labelled=dataset[indices["labelled"]],
        unlabelled=pool.without_labels(),
        validation=dataset[indices["validation"]],
        test=dataset[indices["test"]],
        labelled_indices=indices["labelled"],
        unlabelled_indices=indices["unlabelled"],
        validation_indices=indices["validation"],
        test_indices=indices["test"],
        seed=seed,
        test_seed=test_seed,
        labels_per_class=labels_per_class,
        validation_per_class=validation_per_class,
        _unlabelled_labels=pool.labels,
    )


def _test_choice(members: list, num_examples: int, test_size, test_indices):
    """Returns (members without a fixed test set, the fixed test indices, test counts per class).

    With `test_indices` the test set is exactly those examples and no class gives more;
    otherwise each class gives its stratified share of `test_size`, drawn later.
    """
    if test_indices is None:
        test_total = _test_total(test_size, num_examples)
        counts = _stratified_counts([len(m) for m in members], test_total)
        return members, np.zeros(0, dtype=np.int64), counts
    try:
        fixed_test = np.unique(index_array(test_indices, num_examples))
    except (IndexError, MtkitError):
        raise MtkitError(
            f"test_indices must be positions in [0, {num_examples}) (or a bool mask of that "
            f"length), got {shown(test_indices)}"
        ) from None
    if len(fixed_test) == 0:
        raise MtkitError("test_indices selects no example: the test set would be empty")
    return [np.setdiff1d(m, fixed_test) for m in members], fixed_test, [0] * len(members)


def _test_total(test_size: float | int, num_examples: int) -> int:
    """How many examples the test part gets in total (a fraction rounds up, as in scikit-learn)."""
    if isinstance(test_size, float) and 0.0 < test_size < 1.0:
        return math.ceil(test_size * num_examples)
    if isinstance(test_size, int) and not isinstance(test_size, bool):
        if 0 < test_size < num_examples:
            return test_size
    raise MtkitError(
        f"test_size must be a fraction in (0, 1) or a count in [1, {num_examples}), "
        f"got {test_size!r}"
    )


def _stratified_counts(class_sizes: list[int], total: int) -> list[int]:
    """Share `total` among classes in proportion to their sizes (largest remainder method),
    so the counts add up to exactly `total`. Deterministic: ties go to the lower class index."""
    quotas = np.asarray(class_sizes, dtype=np.float64) * total / sum(class_sizes)
    counts = np.floor(quotas).astype(int)
    by_remainder = sorted(range(len(quotas)), key=lambda c: (counts[c] - quotas[c], c))
    for c in by_remainder[: total - counts.sum()]:
        counts[c] += 1
    return counts.tolist()
