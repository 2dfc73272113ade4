"""PretrainedTransformerMethod(domain_adapt=...): it starts from MiniLM adapted to the split's
non-test texts, once per test split, and never shows the adaptation a test text."""

from __future__ import annotations

import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.data import TextDataset, few_labels
from mtkit.experiments import pretrained as pretrained_module
from mtkit.experiments.pretrained import PretrainedTransformerMethod
from mtkit.experiments.protocol import PretrainCache
from mtkit.experiments.text import non_test_texts
from mtkit.stages.domain_adapt import DomainAdaptConfig

TINY = DomainAdaptConfig(max_steps=2, batch_size=4, max_length=16)
WORDS = {0: ["awful service", "so late"], 1: ["the gate", "a seat"], 2: ["great crew", "love it"]}


def texts(count: int = 60) -> TextDataset:
    """Short numbered texts whose class decides the words."""
    rows = [f"{i}: {WORDS[i % 3][(i // 3) % 2]}" for i in range(count)]
    return TextDataset.from_lists(rows, [i % 3 for i in range(count)], ["neg", "neu", "pos"])


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_name_says_domain_adapted_and_bad_settings_fail():
    assert PretrainedTransformerMethod().name == "MiniLM + linear probe"
    adapted = PretrainedTransformerMethod(domain_adapt=TINY)
    assert adapted.name == "MiniLM (domain-adapted) + linear probe"
    assert PretrainedTransformerMethod("full", domain_adapt=TINY).name.startswith(
        "MiniLM (domain-adapted) + "
    )
    assert PretrainedTransformerMethod(domain_adapt=TINY, title="DAPT").name == "DAPT"
    with pytest.raises(MtkitError, match="domain_adapt"):
        PretrainedTransformerMethod(domain_adapt={"max_steps": 3})


def test_the_adapted_model_depends_on_the_split():
    with pytest.raises(MtkitError, match="split"):
        PretrainedTransformerMethod(domain_adapt=TINY).pretrained(PretrainCache())


def test_the_method_starts_from_adapted_weights_and_never_sees_a_test_text(tmp_path, monkeypatch):
    seen = []
    real = pretrained_module.domain_adapted_encoder

    def recording(model, texts, config, **options):
        seen.append(list(texts))
        return real(model, texts, config, **options)

    monkeypatch.setattr(pretrained_module, "domain_adapted_encoder", recording)
    data = texts()
    split = few_labels(data, 4, validation_per_class=4, test_size=15, seed=0)
    other_seed = few_labels(data, 4, validation_per_class=4, test_size=15, seed=1)
    cache, folder = PretrainCache(), str(tmp_path)
    method = PretrainedTransformerMethod(domain_adapt=TINY, cache_folder=folder)
    plain = PretrainedTransformerMethod(cache_folder=folder)

    fitted = method.fine_tuned(split, seed=0, cache=cache)
    predictions = method.predict(fitted, split.test, cache)
    encoder, _, seconds = method.start(other_seed, seed=1, cache=cache)  # same test texts
    assert len(seen) == 1  # one adaptation for every split with these test texts
    assert seen[0] == non_test_texts(split) and not set(seen[0]) & set(split.test.texts)
    assert predictions.shape == (len(split.test),) and seconds > 0

    original = plain.start(split, seed=0, cache=cache)[0].state_dict()
    adapted = encoder.state_dict()
    assert any(not torch.equal(adapted[k], original[k]) for k in original)
    assert all(
        torch.equal(a, b)
        for a, b in zip(fitted.model.encoder.state_dict().values(), adapted.values(), strict=True)
    )  # the probe's frozen encoder is the adapted one
    words = split.labelled.texts[:3]
    assert not torch.allclose(
        method.embeddings(words, cache, split), plain.embeddings(words, cache)
    )  # keyed by the weights: the embedding cache never mixes them up
