"""LengthBuckets: batches of texts of similar length, so little of each batch is padding."""

from __future__ import annotations

import hashlib
import math

import torch

from mtkit.core.utils import MtkitError, check_positive


class LengthBuckets:
    """Batches of token ids grouped by length: a re-iterable that `fit` takes as train data.

    Every pass over it shuffles the texts, cuts the shuffled order into windows of
    `batch_size × window_batches` texts, sorts each window by length, cuts it into batches and
    shuffles the batches. A batch then holds texts of similar length, so a model that drops the
    all-padding columns (`mtkit.models.text.trim_padding`) does far less work — tweets fill
    about 20 of 48 positions — while the order still changes every epoch.

    tensors: token ids N×L first, then any tensors sharing N (e.g. labels). Each batch is a
    tuple of the same tensors, rows picked together. Randomness comes from torch's global
    generator, so `fit(..., seed=s)` makes the order reproducible.
    """

    def __init__(self, *tensors, batch_size: int = 128, window_batches: int = 50, pad_id: int = 0):
        check_positive("batch_size", batch_size, integer=True)
        check_positive("window_batches", window_batches, integer=True)
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise MtkitError("LengthBuckets needs token ids (N×L tensor) and optional tensors")
        ids = tensors[0]
        if ids.dim() != 2 or ids.dtype != torch.long or len(ids) == 0:
            raise MtkitError(f"token ids must be a non-empty N×L int64 tensor, got {ids.shape}")
        if any(len(t) != len(ids) for t in tensors):
            raise MtkitError(
                f"tensors differ in their first dimension: {[len(t) for t in tensors]}"
            )
        self._tensors = tensors  # not `.tensors`: fit would take that for an in-memory dataset
        self.batch_size = batch_size
        self.window = batch_size * window_batches
        self.lengths = (ids != pad_id).sum(dim=1)

    def __len__(self) -> int:
        """Batches per pass (the last batch of each window may be short)."""
        count = len(self.lengths)
        full_windows, rest = divmod(count, self.window)
        return full_windows * math.ceil(self.window / self.batch_size) + math.ceil(
            rest / self.batch_size
        )

    def __iter__(self):
        order = torch.randperm(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.window):
            window = order[start : start + self.window]
            window = window[torch.argsort(self.lengths[window], stable=True)]
            batches += list(window.split(self.batch_size))
        for index in torch.randperm(len(batches)).tolist():
            rows = batches[index]
            yield tuple(t[rows] for t in self._tensors)


# Batches that depend on (seed, step) alone, so a resumed run sees exactly the batches an
# uninterrupted one would (mtkit.stages.domain_adapt).
GROUP = 50  # batches sorted by length together (see batch_rows)


def seeded_generator(*numbers) -> torch.Generator:
    """A generator seeded by `numbers` (seed, "mask", step...): same numbers, same draws."""
    seed = int(hashlib.sha256(repr(numbers).encode()).hexdigest()[:15], 16)
    return torch.Generator().manual_seed(seed)


def batch_rows(step: int, lengths: torch.Tensor, batch_size: int, seed: int) -> torch.Tensor:
    """The rows (batch_size,) int64 of the texts step `step` trains on, given N text lengths.

    The texts are read in a fresh random order each epoch; each run of GROUP batches of it is
    sorted by length, cut into batches and shuffled, so a batch holds texts of similar length and
    little padding (1.5 s a step instead of 2.0 on a CPU). Rows depend on step and seed alone."""
    count, group = len(lengths), step // GROUP
    positions = torch.arange(group * GROUP * batch_size, (group + 1) * GROUP * batch_size)
    epochs, places = positions // count, positions % count
    rows = torch.empty_like(positions)
    for epoch in epochs.unique().tolist():
        order = torch.randperm(count, generator=seeded_generator(seed, "order", epoch))
        rows[epochs == epoch] = order[places[epochs == epoch]]
    rows = rows[torch.argsort(lengths[rows], stable=True)].reshape(GROUP, batch_size)
    return rows[
        torch.randperm(GROUP, generator=seeded_generator(seed, "batches", group))[step % GROUP]
    ]
