"""Self-training: the unlabelled pool, used a second time.

Pretraining learnt features from the pool's images; self-training learns from the classifier's
own guesses about them. In rounds: predict the pool, keep the confident guesses as
pseudo-labels, fine-tune on labelled + pseudo-labelled examples, keep the round that validates
best (a later round is preferred when validation cannot tell them apart). The pool's labels
are never read (there are none to read: `few_labels` hides them).

Plain self-training gains little when the classifier is confidently wrong about some images:
trained on its own mistakes, it learns to repeat them. So before thresholding, each guess is
blended with the guesses for its nearest neighbours in the classifier's feature space (label
propagation on a k-nearest-neighbour graph). Neighbours rarely share a lone mistake. And each
round trains with mixup (pairs of examples blended, labels too), so the mistakes that remain
are not learnt by heart.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from mtkit.core.batches import forward_in_batches
from mtkit.core.train import History
from mtkit.core.utils import MtkitError, check_choice, check_positive
from mtkit.stages.finetune import STRATEGIES, fine_tune, labelled_tensors, pool_inputs, predict


def neighbour_graph(features: torch.Tensor, k: int, chunk_size: int = 1024) -> torch.Tensor:
    """The k-nearest-neighbour graph of the rows: each row's k nearest other rows (Euclidean),
    as int64 N×k indices.

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

    probabilities: N×num_classes; neighbours: N×k indices (see neighbour_graph).
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
        it came in. `best_round` is the one whose weights were kept: the last round whose
        validation accuracy is within self_train's `tolerance` of the best.
    pseudo_labels: per round, (pool indices, pseudo-labels) it trained on; compare with
        FewLabelSplit.unlabelled_labels_for_evaluation() to see how many were right.
    """

    rounds: list[dict]
    best_round: int
    histories: list[History]
    pseudo_labels: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


def _features(classifier, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The classifier's standardised features of `inputs`, N×feature_size on the CPU."""
    return forward_in_batches(classifier, inputs, batch_size=batch_size, fn=classifier.features)


def self_train(
    classifier,
    labelled,
    unlabelled,
    *,
    validation,
    rounds: int = 8,
    threshold: float = 0.7,
    balance: bool = True,
    neighbours: int = 10,
    smoothing: float = 0.8,
    tolerance: float = 0.02,
    strategy: str = "full",
    augment=True,
    mixup: float = 0.4,
    epochs: int = 25,
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
       `augment` (each example seen slightly shifted and rotated), `mixup` (pairs of examples
       blended, labels too; see fine_tune), `epochs` and `batch_size`.
    Inside a round there is no early stopping by default (`patience`=None): it trains `epochs`
    epochs and keeps its epoch of lowest validation loss.

    Which round's weights are kept (round 0 = the classifier as it came in) is decided on
    validation, so a round that hurts is undone: a round replaces the kept one unless its
    validation accuracy is more than `tolerance` below the best so far. With ~100 validation
    images (10 per class), a point or two is one or two images, which is noise; a later round
    has had more rounds of cleaner pseudo-labels, so within that noise it is the better bet.
    tolerance=0 keeps the round of best validation accuracy (ties to the later one).

    unlabelled: the pool (an ImageDataset or an N×... tensor). Only its images are read.
    validation: labelled data to choose the round; required, since without it a harmful
        round could not be noticed.
    smoothing=0 gives plain self-training: the classifier's few confident mistakes, trained on,
    teach it to repeat them; its neighbours rarely share them.
    fine_tune_options: passed to every round's fine_tune (lr, weight_decay, dropout, ...).
    Returns a SelfTrainResult; `classifier` ends with the kept round's weights.

    How the defaults were chosen, and what else was tried: bench/selftrain_tuning.py.
    """
    _check_options(rounds, threshold, smoothing, tolerance, neighbours, mixup, strategy)
    if validation is None:
        raise MtkitError("self_train needs validation data to keep the best round")
    pool = pool_inputs(unlabelled)
    if len(pool) < 2:
        raise MtkitError(f"the unlabelled pool needs at least 2 examples, got {len(pool)}")
    labelled, validation = labelled_tensors(labelled), labelled_tensors(validation)
    pseudo_options = dict(
        threshold=threshold, balance=balance, neighbours=neighbours, smoothing=smoothing
    )
    round_options = dict(
        strategy=strategy, validation=validation, augment=augment, mixup=mixup, epochs=epochs,
        batch_size=batch_size, patience=patience, **fine_tune_options,
    )  # fmt: skip
    return _run_rounds(
        classifier, labelled, pool, validation, rounds, tolerance, pseudo_options, round_options
    )


def _run_rounds(
    classifier, labelled, pool, validation, rounds, tolerance, pseudo_options, round_options
) -> SelfTrainResult:
    """`rounds` rounds of pseudo-labelling the pool and fine-tuning on it; the classifier ends
    with the weights of the last round within `tolerance` of the best validation accuracy
    (round 0: the classifier as it came in)."""
    best_accuracy = _accuracy(classifier, validation)  # the best of any round so far
    kept = {"round": 0, "state": copy.deepcopy(classifier.state_dict())}
    records = [{"round": 0, "pseudo_labelled": 0, "val_accuracy": best_accuracy}]
    histories, chosen = [], []
    for round_number in range(1, rounds + 1):
        indices, guesses = _pseudo_label(classifier, pool, **pseudo_options)
        chosen.append((indices, guesses))
        combined = (torch.cat([labelled[0], pool[indices]]), torch.cat([labelled[1], guesses]))
        histories.append(fine_tune(classifier, combined, **round_options).history)
        accuracy = _accuracy(classifier, validation)
        records.append(
            {"round": round_number, "pseudo_labelled": len(indices), "val_accuracy": accuracy}
        )
        best_accuracy = max(best_accuracy, accuracy)
        # Within `tolerance` of the best, the later round wins (see self_train). The kept round
        # is then also within `tolerance` of the best of all rounds, later ones included: a
        # later, better round would have been kept instead.
        if accuracy >= best_accuracy - tolerance - 1e-9:  # 1e-9: float rounding at the edge
            kept = {"round": round_number, "state": copy.deepcopy(classifier.state_dict())}
    classifier.load_state_dict(kept["state"])
    return SelfTrainResult(records, kept["round"], histories, chosen)


def _check_options(rounds, threshold, smoothing, tolerance, neighbours, mixup, strategy) -> None:
    """Raise MtkitError for a bad option of self_train, before any time is spent."""
    check_positive("rounds", rounds, integer=True)
    _check_fraction("threshold", threshold, "is a probability in [0, 1)")
    _check_fraction("smoothing", smoothing, "must be in [0, 1)")
    _check_fraction("tolerance", tolerance, "is an accuracy difference in [0, 1)")
    check_positive("neighbours", neighbours, integer=True)
    check_positive("mixup", mixup, allow_zero=True)
    check_choice("strategy", strategy, STRATEGIES)
    if strategy == "scratch":
        raise MtkitError("self_train continues from the classifier; strategy='scratch' would not")


def _check_fraction(name: str, value, description: str) -> None:
    """Raise MtkitError unless `value` is a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MtkitError(f"{name} {description}, got {value!r}")
    if not 0 <= value < 1:
        raise MtkitError(f"{name} {description}, got {value}")


def _pseudo_label(
    classifier, pool: torch.Tensor, *, threshold, balance, neighbours, smoothing
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-3 of a round: predict the pool, smooth the guesses over each example's
    `neighbours` nearest in feature space (with `smoothing` > 0), keep the confident ones.
    Returns (pool indices, int64 pseudo-labels), as select_pseudo_labels."""
    probabilities = predict(classifier, pool)
    if smoothing > 0:
        graph = neighbour_graph(_features(classifier, pool), neighbours)
        probabilities = smooth_over_neighbours(probabilities, graph, smoothing)
    return select_pseudo_labels(probabilities, threshold, balance)


def _accuracy(classifier, validation: tuple[torch.Tensor, torch.Tensor]) -> float:
    """The classifier's accuracy on (inputs, labels)."""
    inputs, labels = validation
    guesses = predict(classifier, inputs).argmax(dim=1)
    return (guesses == labels).double().mean().item()
