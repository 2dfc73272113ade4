"""SetFitMethod: against the setfit package on MiniLM (same embeddings and loss, similar
accuracy), deterministic per seed, blind to the pool's labels, and LoRA training LoRA alone."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.data import TextDataset, few_labels, load_text
from mtkit.experiments.protocol import PretrainCache
from mtkit.experiments.setfit import SetFitMethod
from mtkit.models.pretrained import model_folder
from mtkit.stages.adapters import LoRAWeights
from mtkit.stages.domain_adapt import DomainAdaptConfig
from mtkit.stages.method import LoRA
from mtkit.stages.setfit import cosine_similarity_loss, sentence_pairs

WORDS = {
    0: ["awful service", "so late again", "rude staff"],
    1: ["the gate", "a seat", "the plane"],
    2: ["great crew", "love it", "nice flight"],
}
FULL_ENCODER = 22_565_376  # MiniLM's weights
HEAD = 384 * 3 + 3  # the logistic regression's


def sentiment_texts(count: int = 90) -> TextDataset:
    """Short texts whose class decides the words: easy for a sentence model."""
    generator = torch.Generator().manual_seed(0)
    texts, labels = [], []
    for index in range(count):
        label = index % 3
        picks = torch.randint(0, 3, (2,), generator=generator).tolist()
        texts.append(f"{index}: " + " and ".join(WORDS[label][p] for p in picks))
        labels.append(label)
    return TextDataset.from_lists(texts, labels, class_names=["neg", "neu", "pos"])


class PoolWithoutLabels:
    """The unlabelled pool, with labels that fail the test when anything reads them."""

    def __init__(self, texts):
        self.texts = list(texts)

    def __len__(self):
        return len(self.texts)

    @property
    def labels(self):
        raise AssertionError("SetFit read the labels of the unlabelled pool")


def tiny_split(seed: int = 0):
    split = few_labels(sentiment_texts(), 5, validation_per_class=5, test_size=30, seed=seed)
    return dataclasses.replace(
        split,
        unlabelled=PoolWithoutLabels(split.unlabelled.texts),
        test=split.test.without_labels(),
    )


@pytest.fixture(scope="module")
def cache():
    """One PretrainCache for the module: MiniLM is loaded once."""
    return PretrainCache()


@pytest.fixture(autouse=True)
def private_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MTKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_names_and_bad_settings():
    assert SetFitMethod().name == "MiniLM + SetFit"
    assert SetFitMethod(addition="lora").name == "MiniLM + SetFit (LoRA r=8)"
    assert SetFitMethod(addition=LoRA(rank=4)).name == "MiniLM + SetFit (LoRA r=4)"
    assert SetFitMethod(addition="lora").learning_rate() == 1e-3
    assert SetFitMethod().learning_rate() == 2e-5
    with pytest.raises(MtkitError, match="strategy 'full' or an adapter"):
        SetFitMethod("linear_probe")
    with pytest.raises(MtkitError, match="logistic regression"):
        SetFitMethod(addition="mlp_head")
    with pytest.raises(MtkitError, match="pairs_per_text"):
        SetFitMethod(pairs_per_text=-1)
    assert SetFitMethod(pairs_per_text=0).name == "MiniLM + logistic head (no pairs)"
    adapted = SetFitMethod(domain_adapt=DomainAdaptConfig(max_steps=2))
    assert adapted.name == "MiniLM (domain-adapted) + SetFit"
    with pytest.raises(MtkitError, match="head_c"):
        SetFitMethod(head_c=-1.0)
    with pytest.raises(MtkitError, match="options may be"):
        SetFitMethod(options={"patience": 3})
    with pytest.raises(MtkitError, match="probe_first"):
        SetFitMethod(probe_first=True)


def test_setfit_is_deterministic_per_seed_and_never_reads_the_pool_labels(cache):
    method = SetFitMethod(pairs_per_text=1)
    fitted = method.fine_tuned(tiny_split(), seed=0, cache=cache)
    again = method.fine_tuned(tiny_split(), seed=0, cache=cache)
    other = method.fine_tuned(tiny_split(), seed=1, cache=cache)
    assert len(fitted.model.losses) == 2  # 2 · 15 pairs in batches of 16
    assert fitted.model.losses == again.model.losses != other.model.losses
    probabilities = method.predict_proba(fitted, tiny_split().test, cache)
    assert torch.equal(probabilities, method.predict_proba(again, tiny_split().test, cache))
    assert probabilities.dtype == torch.float32 and probabilities.shape == (30, 3)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(30), atol=1e-5)
    result = method.run(tiny_split(), seed=0, cache=cache)
    assert torch.equal(probabilities.argmax(dim=1), result.predictions)
    assert result.trainable_parameters == FULL_ENCODER + HEAD
    # A list of texts works too (what a distillation helper hands over).
    texts = tiny_split().test.texts[:4]
    assert torch.allclose(method.predict_proba(fitted, texts), probabilities[:4], atol=1e-5)
    truth = few_labels(sentiment_texts(), 5, validation_per_class=5, test_size=30, seed=0)
    assert (result.predictions == truth.test.labels).float().mean() > 0.8


def test_no_pairs_fits_the_head_alone_on_the_untouched_encoder(cache):
    method = SetFitMethod(pairs_per_text=0)
    fitted = method.fine_tuned(tiny_split(), seed=0, cache=cache)
    original = method.pretrained(cache).encoder.state_dict()
    assert fitted.model.losses == [] and fitted.model.frozen
    assert all(torch.equal(v, original[k]) for k, v in fitted.model.encoder.state_dict().items())
    assert fitted.count_trainable() == HEAD
    probabilities = method.predict_proba(fitted, tiny_split().test, cache)
    assert probabilities.shape == (30, 3)


def test_setfit_with_lora_trains_lora_alone(cache):
    method = SetFitMethod(addition="lora", pairs_per_text=1)
    fitted = method.fine_tuned(tiny_split(), seed=0, cache=cache)
    encoder = fitted.model.encoder
    lora = [m for m in encoder.modules() if isinstance(m, LoRAWeights)]
    assert len(lora) == 12  # query and value in 6 blocks
    trainable = [name for name, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all("adapters" in name for name in trainable)
    assert fitted.count_trainable() == 6 * 2 * 8 * (384 + 384) + HEAD
    assert any(m.B.abs().sum() > 0 for m in lora)  # B starts at 0: LoRA has moved
    pretrained = method.pretrained(cache).encoder.state_dict()
    for name, value in encoder.state_dict().items():
        if "adapters" not in name:
            assert torch.equal(value, pretrained[name.replace(".base.", ".")]), name


# Against the setfit package (a test-only dependency). -------------------------------------------


def test_embeddings_and_loss_agree_with_the_setfit_package_on_minilm(cache):
    setfit = pytest.importorskip("setfit")
    body = setfit.SetFitModel.from_pretrained(str(model_folder("minilm"))).model_body.eval()
    losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    texts = ["i love this airline", "worst flight ever", "the gate is b12", "thanks!!"]
    labels = torch.tensor([2, 0, 1, 2])
    first, second, same = sentence_pairs(labels, pairs_per_text=1, seed=0)
    first, second, same = first[[0, 1, 4, 5]], second[[0, 1, 4, 5]], same[[0, 1, 4, 5]]
    loaded = SetFitMethod().pretrained(cache)
    with torch.no_grad():
        theirs = body.encode(texts, convert_to_tensor=True, normalize_embeddings=True).cpu()
        ours = loaded.encoder(loaded.tokenizer.encode(texts, max_length=128).to("cpu"))
        # Their body ends with a Normalize layer; the direction is what the loss sees.
        ours_normalised = torch.nn.functional.normalize(ours.cpu(), dim=1)
        assert (ours_normalised - theirs).abs().max() < 1e-4
        features = [body.preprocess([texts[i] for i in side]) for side in (first, second)]
        their_loss = losses.CosineSimilarityLoss(body)(features, same)
        our_loss = cosine_similarity_loss(ours[first], ours[second], same)
    assert float(our_loss) == pytest.approx(float(their_loss), abs=1e-5)
    assert same.tolist() == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.filterwarnings("ignore:'pin_memory' argument")
def test_accuracy_is_within_noise_of_the_setfit_trainer_on_tweets(cache, tmp_path):
    """8 tweets per class, 2 rounds of pairs: ours and setfit.Trainer on the same 300 validation
    tweets (about 20 s on 2 threads). On seeds 100-103 they differed by +1.4, -5.3, +2.6 and
    -1.0 points; a frozen MiniLM with the same head scores about as well at 8 per class, so
    this checks the whole method against setfit's, not that the body training helps."""
    setfit = pytest.importorskip("setfit")
    datasets = pytest.importorskip("datasets")
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    started = time.perf_counter()
    try:
        split = few_labels(
            load_text("tweets"), 8, validation_per_class=100, test_size=5000, seed=100
        )
        validation = split.validation
        method = SetFitMethod(pairs_per_text=2)
        fitted = method.fine_tuned(split, seed=100, cache=cache)
        ours = (method.predict(fitted, validation) == validation.labels).float().mean().item()
        model = setfit.SetFitModel.from_pretrained(str(model_folder("minilm")))
        arguments = setfit.TrainingArguments(
            output_dir=str(tmp_path), save_strategy="no", report_to="none",
            batch_size=16, num_epochs=1, num_iterations=2, seed=100, show_progress_bar=False,
        )  # fmt: skip
        train = {"text": split.labelled.texts, "label": split.labelled.labels.tolist()}
        trainer = setfit.Trainer(model, arguments, datasets.Dataset.from_dict(train))
        trainer.train()
        predicted = np.asarray(model.predict(validation.texts, as_numpy=True))
        theirs = float((predicted == validation.labels.numpy()).mean())
    finally:
        torch.set_num_threads(threads)
    print(f"SetFit on 300 tweets: ours {ours:.3f}, setfit {theirs:.3f}, "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    assert abs(ours - theirs) <= 0.08
    assert ours > 0.4  # above chance (1/3)
