"""Domain-adaptive pretraining of MiniLM: the config, the tied masked-word head, BERT's masking
rule, that a few steps learn, the time budget, exact resumption, and the disk cache."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch.nn import functional as F

from mtkit.core.utils import MtkitError
from mtkit.models.pretrained import load_pretrained_text_encoder
from mtkit.stages import domain_adapt
from mtkit.stages.domain_adapt import (
    DomainAdaptConfig,
    MaskedLMHead,
    continue_masked_lm,
    domain_adapted_encoder,
    first_word_id,
    mask_word_pieces,
    masked_lm_loss,
    masked_word_guesses,
)

TWEETS = [
    "my flight got delayed again",
    "the crew was great, thanks!",
    "lost my bag at the airport",
    "worst customer service ever",
    "love the new seats",
    "stuck on the runway for two hours",
    "thanks for the upgrade",
    "why is the wifi so slow",
]
# MiniLM steps on 4 short texts: a few tenths of a second each on one CPU thread.
TINY = DomainAdaptConfig(max_steps=4, batch_size=4, max_length=16, warmup_steps=0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic every run, and fair to a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def minilm():
    return load_pretrained_text_encoder("minilm")


def fresh(minilm, seed: int = 0):
    """A copy of MiniLM's encoder and a new head, seeded."""
    encoder = copy.deepcopy(minilm.encoder)
    return encoder, MaskedLMHead.for_encoder(encoder, seed)


def same_weights(first, second) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_steps", 0),
        ("time_budget_s", 0),
        ("batch_size", 2.5),
        ("lr", -1e-5),
        ("head_lr", 0),
        ("warmup_steps", -1),
        ("mask_probability", 0),
        ("mask_probability", 1.0),
        ("max_length", 2),
        ("checkpoint_every", 0),
        ("seed", -1),
    ],
)
def test_config_rejects_bad_values_naming_the_field(name, value):
    with pytest.raises(MtkitError, match=name):
        DomainAdaptConfig(**{name: value})


def test_config_is_frozen_and_hashable():
    config = DomainAdaptConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    assert hash(config) == hash(DomainAdaptConfig())


def test_the_heads_decoder_is_the_encoders_word_embedding(minilm):
    encoder, head = fresh(minilm)
    words = encoder.token_embedding.weight
    assert all(p.shape != words.shape for p in head.parameters())  # no copy of its own
    hidden = torch.randn(3, words.shape[1])
    logits = head(hidden, words)
    expected = head.layer_norm(F.gelu(head.dense(hidden))) @ words.T + head.bias
    assert logits.shape == (3, words.shape[0])
    assert torch.allclose(logits, expected, atol=1e-5)
    logits[:, 2000].sum().backward()  # a guess's gradient reaches that word's input vector
    assert words.grad[2000].abs().sum() > 0 and words.grad[2001].abs().sum() == 0


def test_masking_follows_berts_rule_and_never_touches_special_tokens():
    generator = torch.Generator().manual_seed(0)
    count, length, first, vocab = 4000, 40, 999, 30522
    ids = torch.randint(first, vocab, (count, length), generator=generator)
    ids[:, 0] = 101  # [CLS]
    ends = torch.randint(5, length, (count,), generator=generator)
    ids[torch.arange(count), ends] = 102  # [SEP]
    ids[torch.arange(length) > ends[:, None]] = 0  # [PAD]
    ids[:, 3] = 100  # [UNK]
    masking = {"mask_id": 103, "first_word": first, "vocab_size": vocab, "probability": 0.15}
    inputs, targets = mask_word_pieces(ids, **masking, generator=torch.Generator().manual_seed(1))

    special = ids < first
    assert torch.equal(inputs[special], ids[special]) and (targets[special] == -100).all()
    chosen = targets != -100
    assert torch.equal(targets[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert abs(chosen.sum() / (~special).sum() - 0.15) < 0.005
    masked = (inputs[chosen] == 103).float().mean()
    kept = (inputs[chosen] == ids[chosen]).float().mean()
    replaced = inputs[chosen][(inputs[chosen] != 103) & (inputs[chosen] != ids[chosen])]
    assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.01
    assert abs(len(replaced) / chosen.sum() - 0.1) < 0.01
    assert (replaced >= first).all() and (replaced < vocab).all()  # never a special or [unused]
    again = mask_word_pieces(ids, **masking, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs)


def test_first_word_id_skips_special_and_unused_pieces(minilm):
    tokenizer = minilm.tokenizer
    assert first_word_id(tokenizer) == 999
    assert tokenizer.tokenizer.convert_ids_to_tokens([998, 999]) == ["[unused993]", "!"]


def test_a_few_steps_lower_the_masked_token_loss_on_those_tweets(minilm):
    encoder, head = fresh(minilm)
    before = masked_lm_loss(encoder, head, minilm.tokenizer, TWEETS, max_length=16)
    result = continue_masked_lm(encoder, minilm.tokenizer, TWEETS, TINY, head=head)
    after = masked_lm_loss(encoder, head, minilm.tokenizer, TWEETS, max_length=16)
    assert (result.steps, len(result.losses), result.stopped_by) == (4, 4, "steps")
    assert after < before - 0.5, (before, after)
    assert not same_weights(encoder, minilm.encoder)
    assert not encoder.training and not head.training


def test_lr_zero_trains_the_head_alone(minilm):
    encoder, head = fresh(minilm)
    start = copy.deepcopy(head)
    config = dataclasses.replace(TINY, max_steps=2, lr=0.0)
    continue_masked_lm(encoder, minilm.tokenizer, TWEETS, config, head=head)
    assert same_weights(encoder, minilm.encoder)
    assert all(p.grad is None and p.requires_grad for p in encoder.parameters())
    assert not same_weights(head, start)


def test_the_time_budget_stops_training(minilm):
    encoder, head = fresh(minilm)
    config = dataclasses.replace(TINY, max_steps=100, time_budget_s=1e-6)
    result = continue_masked_lm(encoder, minilm.tokenizer, TWEETS, config, head=head)
    assert (result.stopped_by, result.steps) == ("time", 1)
    assert result.seconds > 0


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(
    minilm, tmp_path, monkeypatch
):
    path = tmp_path / "adapt.pt"
    whole, whole_head = fresh(minilm)
    uninterrupted = continue_masked_lm(whole, minilm.tokenizer, TWEETS, TINY, head=whole_head)

    real_step = domain_adapt._forward_backward

    def interrupt_at_step_two(encoder, head, ids, masking, config, step):
        if step == 2:
            raise KeyboardInterrupt
        return real_step(encoder, head, ids, masking, config, step)

    monkeypatch.setattr(domain_adapt, "_forward_backward", interrupt_at_step_two)
    encoder, head = fresh(minilm)
    with pytest.raises(KeyboardInterrupt):
        continue_masked_lm(encoder, minilm.tokenizer, TWEETS, TINY, head=head, checkpoint_path=path)
    assert path.exists()  # checkpoint_every is 50: only the interrupt saved it
    monkeypatch.undo()

    encoder, head = fresh(minilm, seed=1)  # another head: the checkpoint's replaces it
    resumed = continue_masked_lm(
        encoder, minilm.tokenizer, TWEETS, TINY, head=head, checkpoint_path=path
    )
    assert (resumed.resumed_from, resumed.steps) == (2, 4)
    assert resumed.losses == uninterrupted.losses  # exactly: every draw depends on the step
    assert same_weights(encoder, whole) and same_weights(head, whole_head)


def test_a_checkpoint_of_other_settings_is_not_resumed(minilm, tmp_path):
    path = tmp_path / "adapt.pt"
    config = dataclasses.replace(TINY, max_steps=1)
    encoder, head = fresh(minilm)
    continue_masked_lm(encoder, minilm.tokenizer, TWEETS, config, head=head, checkpoint_path=path)
    other = dataclasses.replace(config, lr=1e-4)
    encoder, head = fresh(minilm)
    with pytest.warns(UserWarning, match="starting afresh"):
        result = continue_masked_lm(
            encoder, minilm.tokenizer, TWEETS, other, head=head, checkpoint_path=path
        )
    assert (result.resumed_from, result.steps) == (0, 1)


CACHED = DomainAdaptConfig(max_steps=2, batch_size=4, max_length=16)


def test_the_adapted_encoder_is_cached_by_texts_and_config(minilm, tmp_path):
    first = domain_adapted_encoder("minilm", TWEETS, CACHED, folder=tmp_path)
    again = domain_adapted_encoder("minilm", TWEETS, CACHED, folder=tmp_path)
    assert not first.from_cache and again.from_cache
    assert same_weights(first.encoder, again.encoder) and same_weights(first.head, again.head)
    assert again.result == first.result and first.result.steps == 2
    assert not same_weights(first.encoder, minilm.encoder)
    assert len(list(tmp_path.iterdir())) == 1  # the resumable checkpoint is gone

    other_texts = domain_adapted_encoder("minilm", TWEETS[:-1], CACHED, folder=tmp_path)
    other_config = dataclasses.replace(CACHED, seed=1)
    other = domain_adapted_encoder("minilm", TWEETS, other_config, folder=tmp_path)
    assert not other_texts.from_cache and not other.from_cache
    assert len(list(tmp_path.glob("domain-adapted-*.pt"))) == 3


def test_a_corrupt_cache_entry_is_rebuilt_with_a_warning(tmp_path):
    first = domain_adapted_encoder("minilm", TWEETS, CACHED, folder=tmp_path)
    (entry,) = tmp_path.glob("domain-adapted-*.pt")
    entry.write_bytes(b"not a checkpoint at all")
    with pytest.warns(UserWarning, match="rebuilding the cache entry"):
        rebuilt = domain_adapted_encoder("minilm", TWEETS, CACHED, folder=tmp_path)
    assert not rebuilt.from_cache
    assert same_weights(rebuilt.encoder, first.encoder)  # the same training, again
    ids = rebuilt.tokenizer.encode(TWEETS[:2], max_length=16)
    assert torch.isfinite(rebuilt.encoder(ids)).all()
    assert domain_adapted_encoder("minilm", TWEETS, CACHED, folder=tmp_path).from_cache


def test_masked_word_guesses_gives_top_k_word_pieces_per_mask(minilm):
    encoder, head = fresh(minilm)
    guesses = masked_word_guesses(
        encoder, head, minilm.tokenizer, "my [MASK] got [MASK] again", top_k=3
    )
    assert len(guesses) == 2 and all(len(row) == 3 for row in guesses)
    assert not any(piece.startswith("[") for row in guesses for piece in row)
    with pytest.raises(MtkitError, match="no \\[MASK\\]"):
        masked_word_guesses(encoder, head, minilm.tokenizer, "nothing hidden here")


def test_an_unusable_cache_folder_costs_no_training(tmp_path):
    """MTKIT_CACHE naming a regular file: neither the resume checkpoint nor the cache entry can
    be written, and the adapted encoder still comes back, with warnings saying why."""
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("I am a file")
    with pytest.warns(UserWarning) as caught:
        adapted = domain_adapted_encoder("minilm", TWEETS, CACHED, folder=not_a_folder)
    messages = " ".join(str(w.message) for w in caught)
    assert "without a resume checkpoint" in messages and "not cached" in messages
    assert adapted.result.steps == CACHED.max_steps and not adapted.from_cache
    ids = adapted.tokenizer.encode(TWEETS[:2], max_length=16)
    assert torch.isfinite(adapted.encoder(ids)).all()
