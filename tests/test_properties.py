"""Property-based tests (hypothesis): the tokenizer, few-label splits, masking and LoRA merging
hold their promises for any input, not just the examples the other tests picked.

Deterministic (derandomize: the same examples every run) and quick (a few dozen each).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from torch import nn

from mtkit.core.utils import MtkitError
from mtkit.data import ImageDataset, Tokenizer, few_labels
from mtkit.data.tokenizer import RESERVED_TOKENS, tokenize
from mtkit.models.text import mask_tokens
from mtkit.stages.adapters import add_lora, merge_lora, unmerge_lora
from mtkit.stages.adapters.wrapper import _adapted_modules

QUICK = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- the tokenizer --------------------------------------------------------------------------------

CORPUS = [
    "I love this airline, the crew was great!",
    "@united lost my bag again... not happy #fail",
    "flight 123 delayed 2 hours, can't believe it",
    "great service thanks @jetblue http://t.co/x",
    "the food was ok, the seats were not",
    "don't fly with them, worst trip ever 😡",
    "Self-driving cars are the future? maybe.",
    "love love love the new seats",
] * 2
TOKENIZER = Tokenizer.fit(CORPUS, min_freq=1)
# Vocabulary entries that are a text of their own: written alone, they tokenize to themselves.
WORDS = [t for t in TOKENIZER.tokens[len(RESERVED_TOKENS) :] if tokenize(t) == [t]]
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=80)


@QUICK
@given(words=st.lists(st.sampled_from(WORDS), max_size=20), extra=st.integers(1, 10))
def test_decode_inverts_encode_for_known_words(words, extra):
    text = " ".join(words)
    ids = TOKENIZER.encode([text], max_length=len(words) + extra)
    assert TOKENIZER.decode(ids) == [text]


@QUICK
@given(texts=st.lists(any_text, min_size=1, max_size=6), max_length=st.integers(1, 40))
def test_encode_never_crashes_and_pads_or_truncates_to_shape(texts, max_length):
    ids = TOKENIZER.encode(texts, max_length=max_length)
    assert ids.shape == (len(texts), max_length) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < len(TOKENIZER)
    assert (ids[:, 0] == TOKENIZER.cls_id).all()
    for row, text in zip(ids, texts, strict=True):
        # <cls>, then one id per token, cut at max_length, then padding to the end.
        real = min(max_length, 1 + len(tokenize(text)))
        assert (row[:real] != TOKENIZER.pad_id).all() and (row[real:] == TOKENIZER.pad_id).all()
    longer = TOKENIZER.encode(texts, max_length=max_length + 7)
    assert torch.equal(longer[:, :max_length], ids)  # truncation keeps the beginning
    assert len(TOKENIZER.decode(ids)) == len(texts)


@QUICK
@given(texts=st.lists(any_text, min_size=1, max_size=6))
def test_without_cls_the_ids_are_those_of_the_tokens(texts):
    ids = TOKENIZER.encode(texts, max_length=100, add_cls=False)
    for row, text in zip(ids, texts, strict=True):
        tokens = tokenize(text)[:100]
        expected = [TOKENIZER.token_to_id.get(t, TOKENIZER.unk_id) for t in tokens]
        assert row[: len(tokens)].tolist() == expected


# --- few-label splits -----------------------------------------------------------------------------


@st.composite
def split_arguments(draw):
    sizes = draw(st.lists(st.integers(1, 40), min_size=2, max_size=5))
    labels = [c for c, size in enumerate(sizes) for _ in range(size)]
    order = draw(st.permutations(range(len(labels))))  # classes interleaved in the dataset
    labels = [labels[i] for i in order]
    if draw(st.booleans()):
        test_size = draw(st.floats(0.05, 0.6))
    else:
        test_size = draw(st.integers(1, len(labels) - 1))
    return dict(
        labels=labels,
        labels_per_class=draw(st.integers(1, 4)),
        validation_per_class=draw(st.integers(0, 3)),
        test_size=test_size,
        seed=draw(st.integers(0, 1000)),
        test_seed=draw(st.integers(0, 1000)),
    )


def make_split(labels, **options):
    images = torch.arange(len(labels), dtype=torch.float32).reshape(-1, 1, 1, 1) / len(labels)
    return few_labels(ImageDataset.from_tensors(images, labels), **options)


@QUICK
@given(arguments=split_arguments())
def test_splits_are_stratified_disjoint_deterministic_and_cover_everything(arguments):
    labels = torch.tensor(arguments.pop("labels"))
    try:
        split = make_split(labels, **arguments)
    except MtkitError as error:  # only ever because a class is too small for what was asked
        assert "were asked for" in str(error)
        event("a class too small")
        return
    parts = ("labelled", "validation", "unlabelled", "test")
    indices = {part: getattr(split, f"{part}_indices") for part in parts}
    everything = sorted(i for part in parts for i in indices[part].tolist())
    assert everything == list(range(len(labels)))  # disjoint, and nothing left out

    classes, sizes = labels.unique(return_counts=True)
    for part, per_class in (
        ("labelled", arguments["labels_per_class"]),
        ("validation", arguments["validation_per_class"]),
    ):
        counts = torch.bincount(labels[indices[part]], minlength=len(classes))
        assert counts.tolist() == [per_class] * len(classes)
        assert torch.equal(getattr(split, part).labels, labels[indices[part]])
    test_counts = torch.bincount(labels[indices["test"]], minlength=len(classes))
    share = len(indices["test"]) * sizes / len(labels)  # proportional: within one of it
    assert ((test_counts - share).abs() < 1).all()
    assert split.unlabelled.labels is None
    # Images follow their indices (each image here holds its own index).
    positions = (split.test.images.flatten() * len(labels)).round().long()
    assert torch.equal(positions, torch.as_tensor(indices["test"]))

    again = make_split(labels, **arguments)
    for part in parts:
        assert (getattr(again, f"{part}_indices") == indices[part]).all()
    other_seed = make_split(labels, **{**arguments, "seed": arguments["seed"] + 1})
    assert (other_seed.test_indices == indices["test"]).all()  # the test set ignores `seed`


# --- masking ----------------------------------------------------------------------------------


@QUICK
@given(
    rows=st.integers(1, 40),
    length=st.integers(1, 40),
    vocab_size=st.integers(5, 300),
    rate=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31),
)
def test_masking_chooses_only_real_tokens_and_targets_hold_the_originals(
    rows, length, vocab_size, rate, seed
):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (rows, length), generator=generator)
    inputs, targets = mask_tokens(
        ids, mask_id=2, vocab_size=vocab_size, rate=rate, generator=generator
    )
    assert inputs.shape == targets.shape == ids.shape
    chosen = targets != -100
    special = ids < 4
    assert not (chosen & special).any()  # padding, <unk>, <mask>, <cls> are never chosen
    assert torch.equal(targets[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    replaced = inputs[chosen]
    assert ((replaced == 2) | (replaced >= 4)).all()  # <mask>, or an ordinary word
    assert (replaced < vocab_size).all()
    maskable = int((~special).sum())
    if maskable >= 50:  # the rate holds, within 5 binomial standard deviations
        spread = 5 * math.sqrt(maskable * rate * (1 - rate))
        assert abs(int(chosen.sum()) - rate * maskable) <= spread + 1


@QUICK
@given(rate=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(math.nan)))
def test_masking_rejects_rates_outside_zero_one(rate):
    with pytest.raises(MtkitError, match="masking rate"):
        mask_tokens(torch.ones(2, 3, dtype=torch.long), mask_id=2, vocab_size=10, rate=rate)


# --- LoRA merging -----------------------------------------------------------------------------


@st.composite
def lora_layers(draw):
    seed = draw(st.integers(0, 2**31))
    torch.manual_seed(seed)
    if draw(st.booleans()):
        layer = nn.Linear(draw(st.integers(1, 12)), draw(st.integers(1, 12)))
        fan = min(layer.in_features, layer.out_features)
        inputs = torch.randn(3, layer.in_features)
    else:
        kernel = draw(st.integers(1, 3))
        layer = nn.Conv2d(
            draw(st.integers(1, 4)),
            draw(st.integers(1, 5)),
            kernel,
            stride=draw(st.integers(1, 2)),
            padding=draw(st.integers(0, 1)),
        )
        fan = min(layer.out_channels, layer.in_channels * kernel * kernel)
        inputs = torch.randn(2, layer.in_channels, 5, 5)
    rank = draw(st.integers(1, fan))
    alpha = draw(st.one_of(st.none(), st.floats(0.1, 16.0)))
    return nn.Sequential(layer), inputs, rank, alpha


@QUICK
@given(case=lora_layers())
@torch.no_grad()
def test_merging_lora_keeps_outputs_and_unmerging_restores_the_weights(case):
    model, inputs, rank, alpha = case
    original = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, type(model[0]), rank=rank, alpha=alpha)
    for _, layer in _adapted_modules(model):  # a trained adapter: B is no longer zero
        layer.adapters["default"].B.normal_()
    model.eval()
    unmerged = model(inputs)
    assume(unmerged.numel() > 0)

    assert merge_lora(model) == ["0"]
    merged = model(inputs)
    scale = 1 + float(unmerged.abs().max())
    assert torch.allclose(merged, unmerged, atol=1e-5 * scale, rtol=1e-5)
    assert unmerge_lora(model) == ["0"]
    base = dict(model.named_parameters())
    for name, tensor in original.items():
        restored = base[f"0.base.{name.split('.', 1)[1]}"]
        assert torch.allclose(restored, tensor, atol=1e-5 * (1 + float(tensor.abs().max())))
    assert torch.allclose(model(inputs), unmerged, atol=1e-5 * scale, rtol=1e-5)
