"""DistilledMethod: what the teacher and the students see, that they learn, that the teacher is
trained once per cache; and `footprint`'s numbers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mtkit.core.utils import MtkitError
from mtkit.data import TextDataset, few_labels
from mtkit.experiments.baselines import TfidfLogisticBaseline
from mtkit.experiments.distill import DistilledMethod, _predictor, footprint, teacher_key
from mtkit.experiments.pretrained import PretrainedTransformerMethod
from mtkit.experiments.protocol import PretrainCache
from mtkit.experiments.setfit import SetFitMethod
from mtkit.stages.pretrain import TextPretrainConfig

TINY = TextPretrainConfig(vocab_size=60, max_length=8, width=16, depth=1, heads=2, epochs=1)
FAST = {"epochs": 4, "patience": None, "lr": 1e-2}
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


class TextsOnly:
    """The pool as a method may see it: its texts; anything else (labels, tensors) fails."""

    def __init__(self, dataset):
        self.texts = dataset.texts

    def __len__(self):
        return len(self.texts)

    def __getattr__(self, name):
        raise AssertionError(f"a method read the pool's {name!r}")


class RecordingTeacher(TfidfLogisticBaseline):
    """A fast teacher that counts its trainings and records every text it is asked about."""

    def __init__(self):
        super().__init__(C_grid=(10.0,))
        self.trainings, self.asked = 0, []

    def fine_tuned(self, split, seed, cache=None):
        self.trainings += 1
        return super().fine_tuned(split, seed, cache)

    def predict_proba(self, fitted, data, cache=None):
        self.asked += list(data.texts if hasattr(data, "texts") else data)
        return super().predict_proba(fitted, data, cache)


@pytest.fixture(autouse=True)
def private_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MTKIT_CACHE", str(tmp_path / "cache"))


def blind_split(seed: int = 0):
    split = few_labels(sentiment_texts(), 10, test_size=30, seed=seed)
    return dataclasses.replace(split, unlabelled=TextsOnly(split.unlabelled))


def distilled(student, teacher=None, **values):
    teacher = teacher or RecordingTeacher()
    return DistilledMethod(teacher, student, pool_size=40, pretrain=TINY, options=FAST, **values)


@pytest.mark.parametrize("student", ["transformer", "bag_of_words"])
def test_students_learn_from_the_pool_without_its_labels_or_a_test_text(student):
    split, teacher = blind_split(), RecordingTeacher()
    method = distilled(student, teacher)
    fitted = method.fine_tuned(split, seed=0, cache=PretrainCache())
    assert len(teacher.asked) == 40 and set(teacher.asked) <= set(split.unlabelled.texts)
    assert not set(teacher.asked) & set(split.test.texts)
    probs = method.predict_proba(fitted, split.test)
    assert probs.shape == (30, 3) and torch.allclose(probs.sum(dim=1), torch.ones(30))
    assert torch.allclose(probs, method.predict_proba(fitted, split.test.texts))
    accuracy = (probs.argmax(dim=1) == split.test.labels).float().mean()
    assert accuracy > 0.8
    assert fitted.result.strategy == "distill" and fitted.pretrain_seconds > 0


def test_a_run_is_determined_by_its_seed():
    split = blind_split()
    runs = [distilled("transformer").fine_tuned(split, seed, PretrainCache()) for seed in (0, 0, 1)]
    method = distilled("transformer")
    first, again, other = (method.predict_proba(run, split.test.texts) for run in runs)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_teacher_trains_and_labels_the_pool_once_per_cache():
    split, teacher, cache = blind_split(), RecordingTeacher(), PretrainCache()
    for student in ("bag_of_words", "transformer", "bag_of_words"):
        distilled(student, teacher).fine_tuned(split, seed=0, cache=cache)
    assert teacher.trainings == 1 and len(teacher.asked) == 40
    distilled("bag_of_words", teacher).fine_tuned(split, seed=1, cache=cache)  # another seed
    assert teacher.trainings == 2


def test_names_and_bad_arguments():
    teacher = TfidfLogisticBaseline()
    assert (
        DistilledMethod(teacher).name
        == "TF-IDF + logistic regression, distilled → small Transformer"
    )
    assert "bag of words" in DistilledMethod(teacher, "bag_of_words").name
    assert DistilledMethod(teacher, title="student").name == "student"
    with pytest.raises(MtkitError, match="student"):
        DistilledMethod(teacher, "mlp")
    with pytest.raises(MtkitError, match="temperature"):
        DistilledMethod(teacher, temperature=0)
    with pytest.raises(MtkitError, match="pool_size"):
        DistilledMethod(teacher, pool_size=0)
    with pytest.raises(MtkitError, match="labelled"):
        DistilledMethod(teacher, options={"labelled": None})
    with pytest.raises(MtkitError, match="teacher"):
        DistilledMethod("minilm")


def test_footprint_counts_every_parameter_bytes_and_time():
    split, cache = blind_split(), PretrainCache()
    texts = split.test.texts
    for method in (distilled("transformer"), distilled("bag_of_words")):
        fitted = method.fine_tuned(split, 0, cache)
        found = footprint(method, fitted, texts, repeats=2)
        assert found.parameters == sum(p.numel() for p in fitted.model.parameters())
        assert found.model_bytes > 4 * found.parameters  # float32 weights, plus metadata
        assert found.tokenizer_bytes > 0 and found.ms_per_1000 > 0
    baseline = TfidfLogisticBaseline()
    fitted = baseline.fine_tuned(split, 0)
    found = footprint(baseline, fitted, texts)
    coefficients = fitted.model[-1].coef_
    assert found.parameters == coefficients.size + 3 and found.model_bytes > coefficients.nbytes
    assert found.tokenizer_bytes == 0 and found.ms_per_1000 > 0
    with pytest.raises(MtkitError, match="text"):
        footprint(baseline, fitted, [])


def test_a_linear_probe_is_timed_running_its_transformer_with_the_same_predictions():
    split = few_labels(sentiment_texts(60), 4, test_size=12, seed=0)
    method = PretrainedTransformerMethod("linear_probe", options={"epochs": 5, "patience": None})
    fitted = method.fine_tuned(split, 0, PretrainCache())
    found = footprint(method, fitted, split.test.texts, repeats=1)
    assert found.parameters == sum(p.numel() for p in fitted.model.parameters()) > 20_000_000
    assert found.tokenizer_bytes > 0
    probe = method.predict_proba(fitted, split.test.texts)  # from cached embeddings
    deployed = _predictor(method, fitted, None)(split.test.texts)  # what footprint timed
    assert torch.allclose(probe, deployed, atol=1e-4)


def test_footprint_of_setfit_counts_its_encoder_and_its_scikit_learn_head():
    split = few_labels(sentiment_texts(60), 4, test_size=12, seed=0)
    method = SetFitMethod(pairs_per_text=0)  # the head alone: no pair training, quick
    fitted = method.fine_tuned(split, 0, PretrainCache())
    found = footprint(method, fitted, split.test.texts, repeats=1)
    encoder = sum(p.numel() for p in fitted.model.encoder.parameters())
    assert found.parameters == encoder + fitted.model.head_parameters()
    assert found.model_bytes > 4 * encoder and found.ms_per_1000 > 0
    # Deployed, the frozen encoder runs: footprint times it, not a read of the embedding cache.
    running = []
    fitted.model.encoder.register_forward_hook(lambda *args: running.append(1))
    deployed = _predictor(method, fitted, None)(split.test.texts)
    assert running and torch.allclose(deployed, method.predict_proba(fitted, split.test.texts))


def test_teachers_with_the_same_name_but_other_settings_are_cached_apart():
    split = blind_split()
    quick, longer = SetFitMethod(pairs_per_text=0), SetFitMethod(pairs_per_text=0, head_c=0.1)
    assert quick.name == longer.name
    assert teacher_key(quick, split, 0) != teacher_key(longer, split, 0)
    assert teacher_key(quick, split, 0) == teacher_key(SetFitMethod(pairs_per_text=0), split, 0)
