"""Text methods for label_efficiency: what they see, what they train, and that they learn."""

from __future__ import annotations

import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.data import TextDataset, few_labels
from mtkit.experiments.efficiency import PretrainCache, label_efficiency
from mtkit.experiments.text import (
    TextFineTuneMethod,
    TfidfLogisticBaseline,
    default_text_methods,
    non_test_texts,
)
from mtkit.stages.method import LoRA, Prompt
from mtkit.stages.pretrain import TextPretrainConfig

TINY = TextPretrainConfig(vocab_size=60, max_length=8, width=16, depth=1, heads=2, epochs=1)
FAST = {"epochs": 3, "patience": None}
WORDS = {0: ["awful", "late", "rude"], 1: ["gate", "seat", "plane"], 2: ["great", "love", "nice"]}


def sentiment_texts(count: int = 150) -> TextDataset:
    """Tweets of three words whose class decides the words: easy to learn, numbered to trace."""
    generator = torch.Generator().manual_seed(0)
    texts, labels = [], []
    for index in range(count):
        label = index % 3
        picks = torch.randint(0, 3, (3,), generator=generator).tolist()
        texts.append(f"t{index} " + " ".join(WORDS[label][p] for p in picks))
        labels.append(label)
    return TextDataset.from_lists(texts, labels, class_names=["neg", "neu", "pos"])


def test_non_test_texts_exclude_the_test_texts_and_do_not_depend_on_the_labels_drawn():
    data = sentiment_texts()
    small = few_labels(data, 5, test_size=30, seed=0)
    large = few_labels(data, 20, test_size=30, seed=3)
    texts = non_test_texts(small)
    assert len(texts) == len(data) - 30
    assert not set(texts) & set(small.test.texts)
    assert texts == non_test_texts(large)  # same test texts → same pretraining data


def test_tfidf_baseline_learns_and_picks_its_regularisation_on_validation():
    split = few_labels(sentiment_texts(), 10, test_size=30, seed=0)
    result = TfidfLogisticBaseline(C_grid=(0.01, 10.0)).run(split, seed=0)
    accuracy = (result.predictions == split.test.labels).float().mean()
    assert result.predictions.shape == (30,) and accuracy > 0.9
    with pytest.raises(MtkitError, match="C_grid"):
        TfidfLogisticBaseline(C_grid=()).run(split, seed=0)


@pytest.mark.parametrize(
    "method, trainable",
    [
        (TextFineTuneMethod("scratch", pretrain=TINY, options=FAST), "all"),
        (TextFineTuneMethod("full", pretrain=TINY, options=FAST), "all"),
        (TextFineTuneMethod("linear_probe", pretrain=TINY, options=FAST), "head"),
        (TextFineTuneMethod(addition=LoRA(rank=2), pretrain=TINY, options=FAST), "lora"),
        (TextFineTuneMethod(addition=Prompt(length=3), pretrain=TINY, options=FAST), "p"),
    ],
    ids=lambda value: getattr(value, "name", value),
)
def test_each_text_method_trains_exactly_what_it_claims(method, trainable, tmp_path, monkeypatch):
    monkeypatch.setenv("MTKIT_CACHE", str(tmp_path))
    split = few_labels(sentiment_texts(), 10, test_size=30, seed=0)
    fitted = method.fine_tuned(split, seed=0)
    classifier, tokenizer, seconds = fitted.model, fitted.tokenizer, fitted.pretrain_seconds
    names = {name for name, p in classifier.named_parameters() if p.requires_grad}
    every = {name for name, _ in classifier.named_parameters()}
    head = {"head.weight", "head.bias"}
    lora = {
        f"encoder.blocks.{block}.attention.{layer}.adapters.default.{matrix}"
        for block in range(TINY.depth)
        for layer in ("query", "value")
        for matrix in "AB"
    }
    expected = {
        "all": every,
        "head": head,
        "lora": lora | head,
        "p": {"encoder.prompt.adapters.default.vectors"} | head,
    }[trainable]
    assert names == expected
    assert (seconds == 0.0) == (method.chosen_strategy == "scratch")
    test_ids = split.test.tensors_for(tokenizer, TINY.max_length)[0]
    assert classifier(test_ids).shape == (30, 3)


def test_pretrained_encoder_is_built_once_and_never_changed_by_fine_tuning(tmp_path, monkeypatch):
    monkeypatch.setenv("MTKIT_CACHE", str(tmp_path))
    split = few_labels(sentiment_texts(), 10, test_size=30, seed=0)
    cache = PretrainCache()
    method = TextFineTuneMethod("full", pretrain=TINY, options=FAST)
    method.run(split, seed=0, cache=cache)
    spent = cache.seconds_spent
    ((pretrained, _),) = [value for value in cache._store.values() if hasattr(value[0], "encoder")]
    before = {k: v.clone() for k, v in pretrained.encoder.state_dict().items()}
    method.run(few_labels(sentiment_texts(), 20, test_size=30, seed=1), seed=1, cache=cache)
    assert cache.seconds_spent == spent  # a cache hit: no second pretraining
    after = pretrained.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_label_efficiency_runs_unchanged_on_text(tmp_path, monkeypatch):
    monkeypatch.setenv("MTKIT_CACHE", str(tmp_path))
    methods = [
        TfidfLogisticBaseline(),
        TextFineTuneMethod("scratch", pretrain=TINY, options={"epochs": 30, "lr": 3e-3}),
    ]
    table = label_efficiency(
        sentiment_texts(), methods, labels_per_class=(10,), seeds=(0, 1), test_size=30
    )
    assert len(table) == 4 and table.methods() == [m.name for m in methods]
    for row in table:
        assert row.accuracy > 0.6 and 0 <= row.macro_f1 <= 1  # the words give the class away


def test_bad_method_settings_raise_clear_errors():
    with pytest.raises(MtkitError, match="unknown addition"):
        TextFineTuneMethod(addition="adapter")
    with pytest.raises(MtkitError, match="scratch"):
        TextFineTuneMethod("scratch", addition="lora")
    with pytest.raises(MtkitError, match="linear_probe"):
        TextFineTuneMethod("full", addition="lora")  # an adapter keeps the encoder frozen
    with pytest.raises(MtkitError, match="strategy"):
        TextFineTuneMethod("fast")
    with pytest.raises(MtkitError, match="validation"):
        TextFineTuneMethod(options={"validation": None})
    assert [m.name for m in default_text_methods()][:2] == [
        "TF-IDF + logistic regression",
        "same Transformer from scratch",
    ]
