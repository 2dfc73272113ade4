"""SetFit's body training: the pairs it makes, its loss against sentence-transformers' and a
loop, its schedule against transformers', and that training pulls same-class texts together."""

import math

import pytest
import torch
from torch import nn

from mtkit.core.utils import MtkitError
from mtkit.stages.setfit import (
    _warmup_then_decay,
    contrastive_fine_tune,
    cosine_similarity_loss,
    sentence_pairs,
)

LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])


def test_pairs_stay_in_the_labelled_set_and_join_the_right_classes():
    first, second, same = sentence_pairs(LABELS, pairs_per_text=4, seed=0)
    assert first.dtype == second.dtype == torch.int64 and same.dtype == torch.float32
    assert len(first) == len(second) == len(same) == 2 * 4 * len(LABELS)
    # Positions into the labelled texts only: a validation or test text cannot be in a pair.
    for side in (first, second):
        assert side.min() >= 0 and side.max() < len(LABELS)
    positive = same == 1
    assert torch.equal(LABELS[first[positive]], LABELS[second[positive]])
    assert (first[positive] != second[positive]).all()  # every class here has 2+ texts
    assert (LABELS[first[~positive]] != LABELS[second[~positive]]).all()


def test_pairs_are_balanced_every_text_is_the_anchor_of_one_of_each_a_round():
    rounds = 3
    first, _, same = sentence_pairs(LABELS, pairs_per_text=rounds, seed=1)
    assert int(same.sum()) == len(same) // 2
    expected = torch.full((len(LABELS),), rounds)
    assert torch.equal(torch.bincount(first[same == 1], minlength=len(LABELS)), expected)
    assert torch.equal(torch.bincount(first[same == 0], minlength=len(LABELS)), expected)


def test_a_class_with_one_text_pairs_it_with_itself_for_its_positive():
    labels = torch.tensor([0, 1, 1, 1])
    first, second, same = sentence_pairs(labels, pairs_per_text=2, seed=0)
    alone = (first == 0) & (same == 1)
    assert alone.sum() == 2 and (second[alone] == 0).all()
    assert (second[(first == 0) & (same == 0)] != 0).all()


def test_pairs_depend_on_the_seed_only():
    once = sentence_pairs(LABELS, 5, seed=7)
    again = sentence_pairs(LABELS, 5, seed=7)
    other = sentence_pairs(LABELS, 5, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(once, again, strict=True))
    assert not torch.equal(once[1], other[1])


def test_pairs_refuse_bad_labels_and_rounds():
    with pytest.raises(MtkitError, match="at least 2 classes"):
        sentence_pairs(torch.zeros(5, dtype=torch.long), 2, seed=0)
    with pytest.raises(MtkitError, match="pairs_per_text"):
        sentence_pairs(LABELS, 0, seed=0)
    with pytest.raises(MtkitError, match="1-D"):
        sentence_pairs(LABELS.view(2, 5), 1, seed=0)
    with pytest.raises(MtkitError, match="1-D"):
        sentence_pairs(LABELS.float(), 1, seed=0)
    with pytest.raises(MtkitError, match="1-D"):
        sentence_pairs([0, 1, 1], 1, seed=0)


def loss_by_loop(u, v, same):
    """1/P Σ (u·v / (|u| |v|) − same)², pair by pair."""
    total = 0.0
    for a, b, target in zip(u.tolist(), v.tolist(), same.tolist(), strict=True):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        total += (dot / norms - target) ** 2
    return total / len(u)


def test_loss_is_sentence_transformers_cosine_similarity_loss_and_the_formula():
    losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    same = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    ours = cosine_similarity_loss(u, v, same)
    # Its model is only used to embed texts; the embeddings are given here.
    reference = losses.CosineSimilarityLoss(model=nn.Identity())
    theirs = reference.compute_loss_from_embeddings([u, v], same)
    assert ours.dim() == 0 and float(ours) == pytest.approx(float(theirs), abs=1e-7)
    assert float(ours) == pytest.approx(loss_by_loop(u, v, same), rel=1e-5)
    assert float(cosine_similarity_loss(u, 3 * u, torch.ones(6))) == pytest.approx(0, abs=1e-6)
    with pytest.raises(MtkitError, match="same shape"):
        cosine_similarity_loss(u, v[:5], same)
    with pytest.raises(MtkitError, match="same must have shape"):
        cosine_similarity_loss(u, v, same[:5])


def test_the_schedule_is_transformers_linear_warmup_and_decay():
    transformers = pytest.importorskip("transformers")
    total, warmup = 23, 0.1
    ours = _warmup_then_decay(total, warmup)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    warmup_steps = math.ceil(warmup * total)
    theirs = transformers.get_linear_schedule_with_warmup(optimizer, warmup_steps, total)
    for step in range(total):
        assert ours(step) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12)
        optimizer.step()
        theirs.step()


class BagEncoder(nn.Module):
    """Token ids N×L → N×8: the mean of their vectors (padding 0 left out), then a frozen map."""

    def __init__(self):
        super().__init__()
        self.words = nn.EmbeddingBag(30, 8, mode="mean", padding_idx=0)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    def forward(self, token_ids):
        return self.frozen(self.words(token_ids))


def class_texts(count=24, seed=0):
    """Texts of 3 classes: two of its class's words (1-3, 4-6, 7-9) among shared words 10-29."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 3
    ids = torch.randint(10, 30, (count, 6), generator=generator)
    ids[:, :2] = 1 + 3 * labels[:, None] + torch.randint(3, (count, 2), generator=generator)
    ids[:, 5] = 0  # some padding
    return ids, labels


def pair_loss_and_gap(encoder, ids, labels):
    """(the loss over all pairs, mean same-class cosine − mean different-class cosine)."""
    with torch.no_grad():
        embeddings = encoder(ids)
    first, second = torch.triu_indices(len(ids), len(ids), offset=1)
    same = (labels[first] == labels[second]).float()
    loss = cosine_similarity_loss(embeddings[first], embeddings[second], same)
    cosine = torch.cosine_similarity(embeddings[first], embeddings[second])
    return float(loss), float(cosine[same == 1].mean() - cosine[same == 0].mean())


def test_contrastive_fine_tune_pulls_classes_together_and_trains_only_what_may_train():
    torch.manual_seed(0)
    encoder = BagEncoder()
    ids, labels = class_texts()
    frozen = encoder.frozen.weight.clone()
    words = encoder.words.weight.detach().clone()
    loss_before, gap_before = pair_loss_and_gap(encoder, ids, labels)
    encoder.eval()
    losses = contrastive_fine_tune(
        encoder, ids, labels, pairs_per_text=4, epochs=5, batch_size=8, lr=0.05, seed=0
    )
    loss_after, gap_after = pair_loss_and_gap(encoder, ids, labels)
    assert len(losses) == 5 * math.ceil(2 * 4 * len(ids) / 8)  # one loss per step
    assert loss_after < 0.5 * loss_before
    assert gap_before < 0.2 and gap_after > 0.5
    assert torch.equal(encoder.frozen.weight, frozen)
    assert not torch.allclose(encoder.words.weight, words)
    assert not encoder.training  # its mode is put back


def test_contrastive_fine_tune_is_deterministic_and_checks_its_arguments():
    ids, labels = class_texts()
    results = []
    for _ in range(2):
        torch.manual_seed(1)
        encoder = BagEncoder()
        losses = contrastive_fine_tune(encoder, ids, labels, pairs_per_text=1, lr=0.01, seed=3)
        results.append((losses, encoder.words.weight.detach()))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
    encoder = BagEncoder()
    with pytest.raises(MtkitError, match="one row per label"):
        contrastive_fine_tune(encoder, ids, labels[:5])
    with pytest.raises(MtkitError, match="warmup"):
        contrastive_fine_tune(encoder, ids, labels, warmup=1.0)
    with pytest.raises(MtkitError, match="lr"):
        contrastive_fine_tune(encoder, ids, labels, lr=0)
    encoder.requires_grad_(False)
    with pytest.raises(MtkitError, match="nothing would train"):
        contrastive_fine_tune(encoder, ids, labels)
