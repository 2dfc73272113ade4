"""MiniLM methods for label_efficiency: cached embeddings, length-ordered prediction, and that
each method learns, trains what it should and never sees a test label."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.data import TextDataset, few_labels
from mtkit.experiments.efficiency import PretrainCache, label_efficiency
from mtkit.experiments.pretrained import (
    PretrainedTransformerMethod,
    embed_texts,
    length_order,
    predict_by_length,
)
from mtkit.models import Classifier
from mtkit.stages.finetune import predict
from mtkit.stages.method import LoRA

WORDS = {
    0: ["awful service", "so late again", "rude staff"],
    1: ["the gate", "a seat", "the plane"],
    2: ["great crew", "love it", "nice flight"],
}
FAST = {"epochs": 1, "patience": None}


def sentiment_texts(count: int = 90) -> TextDataset:
    """Short texts whose class decides the words: easy for a sentence model, numbered to trace."""
    generator = torch.Generator().manual_seed(0)
    texts, labels = [], []
    for index in range(count):
        label = index % 3
        picks = torch.randint(0, 3, (2,), generator=generator).tolist()
        texts.append(f"{index}: " + " and ".join(WORDS[label][p] for p in picks))
        labels.append(label)
    return TextDataset.from_lists(texts, labels, class_names=["neg", "neu", "pos"])


@pytest.fixture(scope="module")
def cache():
    """One PretrainCache for the module: the model is loaded once."""
    return PretrainCache()


@pytest.fixture(autouse=True)
def private_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MTKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_embeddings_are_cached_on_disk_by_weights_and_texts(cache, private_cache_folder):
    loaded = PretrainedTransformerMethod().pretrained(cache)
    texts = sentiment_texts(12).texts
    first = embed_texts(loaded.encoder, loaded.tokenizer, texts)
    files = list(private_cache_folder.glob("embeddings-minilm-*.pt"))
    assert first.shape == (12, 384) and len(files) == 1
    again = embed_texts(loaded.encoder, loaded.tokenizer, texts)
    assert torch.equal(first, again) and len(list(private_cache_folder.iterdir())) == 1
    fresh = embed_texts(loaded.encoder, loaded.tokenizer, texts, cache=False)
    assert (fresh - first).abs().max() < 1e-5
    embed_texts(loaded.encoder, loaded.tokenizer, texts[:5])  # other texts: another entry
    changed = copy.deepcopy(loaded.encoder)
    with torch.no_grad():
        changed.transformer.encoder.layer[0].output.dense.bias.add_(0.1)
    moved = embed_texts(changed, loaded.tokenizer, texts)  # other weights: another entry
    assert len(list(private_cache_folder.glob("*.pt"))) == 3
    assert not torch.allclose(moved, first)
    with pytest.raises(MtkitError, match="empty"):
        embed_texts(loaded.encoder, loaded.tokenizer, [])


def test_predicting_in_length_order_gives_the_rows_back_in_their_order(cache):
    loaded = PretrainedTransformerMethod().pretrained(cache)
    texts = ["ok", "a much longer text about a delayed flight and a lost bag", "fine thanks"]
    ids = loaded.tokenizer.encode(texts, max_length=24)
    assert length_order(ids).tolist() == [0, 2, 1]
    classifier = Classifier(copy.deepcopy(loaded.encoder), num_classes=3)
    expected = predict(classifier, ids)
    assert (predict_by_length(classifier, ids, batch_size=2) - expected).abs().max() < 1e-5


def test_method_names_and_bad_settings():
    assert PretrainedTransformerMethod(addition="lora").name == "MiniLM + LoRA r=8"
    assert PretrainedTransformerMethod("linear_probe").name == "MiniLM + linear probe"
    assert PretrainedTransformerMethod("full").name == "MiniLM + full fine-tuning"
    lora = PretrainedTransformerMethod(addition=LoRA(rank=16))
    assert dataclasses.replace(lora, addition=LoRA(rank=2)).name == "MiniLM + LoRA r=2"
    with pytest.raises(MtkitError, match="strategy"):
        PretrainedTransformerMethod("distill")
    with pytest.raises(MtkitError, match="'linear_probe' or 'full'"):
        PretrainedTransformerMethod("gradual_unfreeze")
    with pytest.raises(MtkitError, match="lora rank"):
        PretrainedTransformerMethod(addition=LoRA(rank=0))
    with pytest.raises(MtkitError, match="validation"):
        PretrainedTransformerMethod(addition="lora", options={"validation": None})


@pytest.mark.parametrize(
    "method, trainable",
    [
        ("linear_probe", 384 * 3 + 3),
        ("lora", 6 * 2 * 8 * (384 + 384) + 384 * 3 + 3),
        ("prompt", 8 * 384 + 384 * 3 + 3),
        ("full", 22_565_376 + 384 * 3 + 3),
    ],
)
def test_each_method_trains_what_it_should_and_predicts_every_test_text(cache, method, trainable):
    split = few_labels(sentiment_texts(), 5, validation_per_class=5, test_size=30, seed=0)
    blind = few_labels(sentiment_texts(), 5, validation_per_class=5, test_size=30, seed=0)
    blind = dataclasses.replace(blind, test=blind.test.without_labels())  # as label_efficiency
    strategy, addition = (method, None) if method in ("linear_probe", "full") else (None, method)
    options = {} if method == "linear_probe" else FAST
    chosen = PretrainedTransformerMethod(strategy, addition=addition, options=options)
    result = chosen.run(blind, seed=0, cache=cache)
    assert result.predictions.shape == (30,) and result.trainable_parameters == trainable
    if method == "linear_probe":  # a probe on a sentence model separates these easily
        assert (result.predictions == split.test.labels).float().mean() > 0.8


def test_probe_first_starts_the_head_from_a_linear_probe(cache):
    split = few_labels(sentiment_texts(), 5, validation_per_class=5, test_size=30, seed=0)
    method = PretrainedTransformerMethod(
        addition="lora", probe_first=True, options={"epochs": 1, "lr": 1e-9}
    )
    fitted = method.fine_tuned(split, seed=0, cache=cache)
    guesses = method.predict(fitted, split.test.texts, cache)
    probabilities = method.predict_proba(fitted, split.test, cache)
    assert probabilities.shape == (30, 3) and torch.equal(probabilities.argmax(dim=1), guesses)
    assert (guesses == split.test.labels).float().mean() > 0.8  # the probe's head, barely moved


def test_label_efficiency_runs_the_pretrained_methods_unchanged(cache):
    table = label_efficiency(
        sentiment_texts(),
        [PretrainedTransformerMethod("linear_probe")],
        labels_per_class=[5],
        seeds=[0, 1],
        test_size=30,
        validation_per_class=5,
        cache=cache,
    )
    assert len(table) == 2 and all(row.accuracy > 0.8 for row in table)
