"""SetFit (Tunstall et al., 2022): few-shot classification with a sentence model, in two steps.

A sentence model (MiniLM here) already puts texts of similar meaning near each other, but
"similar" is its own notion, not the task's. With only a few labelled texts, SetFit first
teaches it the task's notion, contrastively, then fits a small head on the result:

    1. body   make pairs of labelled texts, same class or not, and fine-tune the encoder so
              that cos(u, v) is 1 for a same-class pair and 0 for a pair of different classes
    2. head   embed the labelled texts with the fine-tuned encoder and fit a logistic
              regression on those embeddings (mtkit/experiments/setfit.py)

The pairs are what makes this work with few labels: n labelled texts give up to n² pairs, so
eight tweets per class already give hundreds of training signals for the body.

    sentence_pairs          the pairs, SetFit's way: per round, one positive and one negative
                            pair for every labelled text
    cosine_similarity_loss  (cos(u, v) - same)², averaged: sentence-transformers'
                            CosineSimilarityLoss, SetFit's default
    contrastive_fine_tune   step 1: AdamW with linear warm-up and decay over batches of pairs
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from mtkit.core.batches import model_device
from mtkit.core.utils import MtkitError, check_positive, seed_everything


def sentence_pairs(
    labels: torch.Tensor, pairs_per_text: int = 5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SetFit's pairs of labelled texts (the paper's R rounds of pair sampling).

    labels: (N,) int64 classes of the labelled texts. In each of `pairs_per_text` rounds every
    text i is the first text of one positive pair (i, a random other text of its class) and of
    one negative pair (i, a random text of another class). A class with a single text has no
    other member: its text is paired with itself (cos = 1 already, so that pair teaches nothing
    but keeps the counts balanced).
    Returns (first, second, same): int64 (P,) positions into `labels` (never outside the
    labelled set) and float32 (P,) 1.0 for same class, 0.0 otherwise; P = 2 · rounds · N, half
    of them positive. Deterministic given `seed`.
    (The setfit package 1.x samples differently: it cycles through all shuffled combinations of
    two texts; the counts and the balance of positives and negatives are the same.)
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise MtkitError(f"labels must be a 1-D tensor of class indices (N,), got {shape}")
    check_positive("pairs_per_text", pairs_per_text, integer=True)
    labels = labels.cpu().long()
    if labels.unique().numel() < 2:
        raise MtkitError(
            "sentence_pairs needs labelled texts of at least 2 classes (negative pairs join "
            f"two classes), got only class(es) {labels.unique().tolist()}"
        )
    generator = torch.Generator().manual_seed(seed)
    anchors = torch.arange(len(labels))
    first, second, same = [], [], []
    for _ in range(pairs_per_text):
        positives = torch.empty_like(anchors)
        negatives = torch.empty_like(anchors)
        for label in labels.unique():
            members = anchors[labels == label]  # sorted positions of this class
            others = anchors[labels != label]
            count = len(members)
            # A random *other* member: draw among count - 1 and skip the text's own place.
            draw = torch.randint(max(count - 1, 1), (count,), generator=generator)
            own = torch.arange(count)
            positives[members] = members[draw + (draw >= own).long()] if count > 1 else members
            negatives[members] = others[torch.randint(len(others), (count,), generator=generator)]
        first += [anchors, anchors]
        second += [positives, negatives]
        same += [torch.ones(len(anchors)), torch.zeros(len(anchors))]
    return torch.cat(first), torch.cat(second), torch.cat(same)


def cosine_similarity_loss(
    first_embeddings: torch.Tensor, second_embeddings: torch.Tensor, same: torch.Tensor
) -> torch.Tensor:
    """The mean squared error between each pair's cosine similarity and its target:

        loss = 1/P · Σ_p (cos(u_p, v_p) − same_p)²,   cos(u, v) = u·v / (|u| |v|)

    first_embeddings, second_embeddings: P×D embeddings of the two texts of P pairs; same: (P,)
    1.0 for a same-class pair, 0.0 otherwise. Returns a scalar. This is what
    sentence_transformers' CosineSimilarityLoss (SetFit's default loss) computes.
    """
    if first_embeddings.shape != second_embeddings.shape or first_embeddings.dim() != 2:
        raise MtkitError(
            "cosine_similarity_loss needs two P×D embeddings of the same shape, got "
            f"{tuple(first_embeddings.shape)} and {tuple(second_embeddings.shape)}"
        )
    if same.shape != (len(first_embeddings),):
        raise MtkitError(f"same must have shape ({len(first_embeddings)},), got {same.shape}")
    similarity = torch.cosine_similarity(first_embeddings, second_embeddings, dim=1)
    return F.mse_loss(similarity, same.to(similarity))


def _warmup_then_decay(total_steps: int, warmup: float):
    """The learning-rate factor at each step: 0 → 1 over the first ⌈warmup · total⌉ steps,
    then linearly down to 0 at the end (transformers' linear schedule, as SetFit trains)."""
    warmup_steps = math.ceil(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _optimizer(parameters, lr: float, weight_decay: float, total_steps: int, warmup: float):
    """AdamW with weight decay on weight matrices only (not on biases or LayerNorm scales, as
    transformers' Trainer does), and its warm-up-then-decay schedule: (optimizer, scheduler)."""
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    schedule = _warmup_then_decay(total_steps, warmup)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def contrastive_fine_tune(
    encoder: nn.Module,
    token_ids: torch.Tensor,
    labels: torch.Tensor,
    *,
    pairs_per_text: int = 5,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """SetFit's body training: fine-tune `encoder` so same-class texts get similar embeddings.

    encoder: token ids N×L → N×D embeddings (e.g. a PretrainedTextEncoder), trained in place on
        the device its parameters are on. Only parameters with requires_grad train, so with LoRA
        attached beforehand only LoRA does. token_ids: N×L int64 ids of the labelled texts;
        labels: (N,) their classes.
    The pairs (`sentence_pairs`, made once) are shuffled every epoch and taken `batch_size` at
    a time; both texts of every pair of a batch go through the encoder in one call. AdamW with
    `weight_decay` on weight matrices, the learning rate warmed up over the first `warmup`
    fraction of the steps then decayed linearly to 0, gradients clipped to norm 1: the settings
    of transformers' Trainer, which SetFit trains with.
    Returns the loss of every step (a list of floats, one per batch). The encoder's training
    mode is put back afterwards.
    """
    check_positive("epochs", epochs, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    if not 0.0 <= warmup < 1.0:
        raise MtkitError(f"warmup must be a fraction of the steps in [0, 1), got {warmup!r}")
    if token_ids.dim() != 2 or len(token_ids) != len(labels):
        raise MtkitError(
            f"token_ids must be N×L with one row per label, got {tuple(token_ids.shape)} for "
            f"{len(labels)} labels"
        )
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    if not trainable:
        raise MtkitError("the encoder has no parameter with requires_grad: nothing would train")
    first, second, same = sentence_pairs(labels, pairs_per_text, seed)
    seed_everything(seed)  # dropout masks
    steps_per_epoch = math.ceil(len(same) / batch_size)
    optimizer, scheduler = _optimizer(trainable, lr, weight_decay, epochs * steps_per_epoch, warmup)
    device = model_device(encoder)
    shuffler = torch.Generator().manual_seed(seed)
    losses = []
    was_training = encoder.training
    encoder.train()  # dropout on, as sentence-transformers trains
    bar = tqdm(total=epochs * steps_per_epoch, desc="SetFit body", disable=not progress)
    try:
        for _ in range(epochs):
            for batch in torch.randperm(len(same), generator=shuffler).split(batch_size):
                both = torch.cat([token_ids[first[batch]], token_ids[second[batch]]])
                u, v = encoder(both.to(device)).chunk(2)
                loss = cosine_similarity_loss(u, v, same[batch].to(device))
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(trainable, max_norm=1.0)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        bar.close()
        encoder.train(was_training)
    return losses
