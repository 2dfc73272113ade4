"""Distillation as a method: a large fine-tuned teacher labels the unlabelled pool, a small
student learns its probabilities (mtkit/stages/distill.py), and is what gets deployed.

    teacher = PretrainedTransformerMethod("linear_probe")          # MiniLM, 22.7 M parameters
    methods = [teacher, DistilledMethod(teacher, "transformer"), DistilledMethod(teacher,
               "bag_of_words"), TfidfLogisticBaseline()]
    footprint(method, fitted, texts)   # parameters, bytes on disk, CPU ms per 1,000 texts

What the method sees is what every method of `label_efficiency` may see: the labelled texts with
their labels, the validation texts for early stopping, and pool texts without labels. The
teacher is trained on the same split, so it sees no more than that; it labels `pool_size` pool
texts (never a test text, never the pool's labels), and the student trains on those soft
targets and on the labelled texts with their true labels.
"""

from __future__ import annotations

import dataclasses
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtkit.core.cache import fingerprint
from mtkit.core.checkpoint import save_model
from mtkit.core.utils import MtkitError, check_choice, check_positive, seed_everything
from mtkit.data import FewLabelSplit
from mtkit.experiments.pretrained import predict_by_length
from mtkit.experiments.protocol import FineTuned, Method, PretrainCache
from mtkit.experiments.text import TEXT_FINE_TUNE, TextFineTuneMethod, encode_texts
from mtkit.models import Classifier
from mtkit.models.text import BagOfWords
from mtkit.stages.distill import distill
from mtkit.stages.finetune import predict
from mtkit.stages.pretrain import TextPretrainConfig

STUDENTS = {"transformer": "small Transformer", "bag_of_words": "bag of words"}
# distill's settings per student, chosen by validation accuracy on one tweets split (seed 100,
# never a benchmark seed, never a test tweet; MiniLM linear probe teacher, 100 labels per class,
# 10,000 pool tweets): the Transformer peaks after 3-8 epochs (12 s each on one CPU thread) at
# lr 1e-3 or 3e-4 alike, the bag of words after 2-6 epochs (under 1 s each).
DISTILL_OPTIONS = {
    "transformer": {"epochs": 10, "lr": 1e-3, "batch_size": 64, "patience": 3,
                    "weight_decay": TEXT_FINE_TUNE["weight_decay"]},
    "bag_of_words": {"epochs": 30, "lr": 3e-3, "batch_size": 64, "patience": 5,
                     "weight_decay": 0.0},
}  # fmt: skip


def teacher_key(teacher: Method, split: FewLabelSplit, seed: int) -> tuple:
    """The PretrainCache key of `teacher` trained on `split` with `seed`: its settings, the seed
    and the exact labelled and validation examples (their positions in the dataset)."""
    return (
        "teacher",
        # repr, not name: two SetFit teachers with different pairs_per_text share a name
        repr(teacher),
        seed,
        np.asarray(split.labelled_indices).tobytes(),
        np.asarray(split.validation_indices).tobytes(),
    )


def fitted_teacher(teacher: Method, split, seed: int, cache: PretrainCache):
    """(teacher.fine_tuned(split, seed, cache), seconds it took), trained once per cache."""
    return cache.remember(
        teacher_key(teacher, split, seed), lambda: teacher.fine_tuned(split, seed, cache)
    )


@dataclass
class TrainedOnce(Method):
    """`method` itself, trained through the PretrainCache like a teacher: scored beside
    DistilledMethod(method, ...) in one label_efficiency run, it is trained once, not twice.
    Its training time then counts as pretraining (the cache's seconds), not as the row's own."""

    method: Method

    @property
    def name(self) -> str:
        return self.method.name

    def fine_tuned(self, split, seed, cache=None) -> FineTuned:
        cache = PretrainCache() if cache is None else cache
        fitted, seconds = fitted_teacher(self.method, split, seed, cache)
        return dataclasses.replace(fitted, pretrain_seconds=fitted.pretrain_seconds + seconds)

    def predict_proba(self, fitted, data, cache=None) -> torch.Tensor:
        return self.method.predict_proba(fitted, data, cache)


@dataclass
class DistilledMethod(Method):
    """A small student trained on what `teacher` predicts for the unlabelled pool.

    student: "transformer" (notebook 05's pretrained TextEncoder, as TextFineTuneMethod starts
        it, with a Classifier; every weight learns) or "bag_of_words" (which of the tokenizer's
        words occur → a linear layer: a logistic regression on word presence).
    temperature: T of the soft targets, softmax(log p_teacher / T) (p^(1/T), normalised).
    pool_size: how many pool texts (drawn with the seed) the teacher labels; None: all of them.
    pretrain: the small Transformer's pretraining (the bag of words uses its tokenizer's vocabulary
        size and max_length).
    options: more keyword arguments for `distill`, over DISTILL_OPTIONS[student].
    pretrain_seconds of the result: the teacher's own pretraining and training, its labelling of
    the pool and the student's pretraining; all of them come from the PretrainCache.
    """

    teacher: Method
    student: str = "transformer"
    temperature: float = 2.0
    pool_size: int | None = 10000
    pretrain: TextPretrainConfig = field(default_factory=TextPretrainConfig, kw_only=True)
    options: dict = field(default_factory=dict, kw_only=True)
    title: str = field(default="", kw_only=True)

    def __post_init__(self):
        if not callable(getattr(self.teacher, "fine_tuned", None)):
            raise MtkitError(f"teacher must be a Method, got {type(self.teacher).__name__}")
        check_choice("student", self.student, STUDENTS)
        check_positive("temperature", self.temperature)
        if self.pool_size is not None:
            check_positive("pool_size", self.pool_size, integer=True)
        if not isinstance(self.options, dict):
            raise MtkitError("options must be a dict of keyword arguments for distill")
        reserved = {"labelled", "validation", "temperature", "seed"} & set(self.options)
        if reserved:
            raise MtkitError(f"DistilledMethod sets {sorted(reserved)} itself; remove them")

    @property
    def name(self) -> str:
        return self.title or f"{self.teacher.name}, distilled → {STUDENTS[self.student]}"

    def pool_texts(self, split: FewLabelSplit, seed: int) -> list[str]:
        """`pool_size` texts of split.unlabelled, drawn with `seed` (only .texts is read)."""
        texts = split.unlabelled.texts
        if len(texts) == 0:
            raise MtkitError("the split has no unlabelled texts for the teacher to label")
        count = len(texts) if self.pool_size is None else min(self.pool_size, len(texts))
        chosen = np.sort(np.random.default_rng(seed).choice(len(texts), count, replace=False))
        return [texts[i] for i in chosen]

    def teacher_probabilities(self, split, seed: int, cache: PretrainCache):
        """(the pool texts, N×C teacher probabilities for them, seconds teacher training and
        labelling took); both come from the cache when another student asked first."""
        teacher, train_seconds = fitted_teacher(self.teacher, split, seed, cache)
        texts = self.pool_texts(split, seed)
        key = ("teacher_probs", *teacher_key(self.teacher, split, seed), fingerprint(texts))
        probs, label_seconds = cache.remember(
            key, lambda: self.teacher.predict_proba(teacher, texts, cache)
        )
        probs = torch.as_tensor(probs, dtype=torch.float32).cpu()
        seconds = teacher.pretrain_seconds + train_seconds + label_seconds
        return texts, probs, seconds

    def start(self, split, seed: int, cache: PretrainCache):
        """(an untrained student Classifier, its tokenizer, pretraining seconds)."""
        if self.student == "transformer":
            encoder, tokenizer, seconds = TextFineTuneMethod(pretrain=self.pretrain).start(
                split, seed, cache
            )
            seed_everything(seed)  # the head's first weights
            return Classifier(encoder, split.labelled.num_classes), tokenizer, seconds
        # The scratch Transformer's tokenizer: fitted on the non-test texts, shared in the cache.
        _, tokenizer, _ = TextFineTuneMethod("scratch", pretrain=self.pretrain).start(
            split, seed, cache
        )
        seed_everything(seed)
        bag = BagOfWords(tokenizer.vocab_size)
        classifier = Classifier(bag, split.labelled.num_classes, feature_size=bag.vocab_size)
        return classifier, tokenizer, 0.0

    def fine_tuned(self, split, seed, cache=None) -> FineTuned:
        cache = PretrainCache() if cache is None else cache
        texts, probs, teacher_seconds = self.teacher_probabilities(split, seed, cache)
        student, tokenizer, student_seconds = self.start(split, seed, cache)
        length = self.pretrain.max_length
        result = distill(
            student,
            tokenizer.encode(texts, max_length=length),
            probs,
            temperature=self.temperature,
            labelled=split.labelled.tensors_for(tokenizer, length),
            validation=split.validation.tensors_for(tokenizer, length),
            seed=seed,
            **{**DISTILL_OPTIONS[self.student], **self.options},
        )
        return FineTuned(student, tokenizer, result, teacher_seconds + student_seconds)

    def predict_proba(self, fitted, data, cache=None) -> torch.Tensor:
        """N×C probabilities (CPU) for a TextDataset or a list of texts."""
        ids = encode_texts(data, fitted.tokenizer, self.pretrain.max_length)
        ids = ids[0] if isinstance(ids, tuple) else ids
        if self.student == "transformer":  # texts of similar length batched together
            return predict_by_length(fitted.model, ids)
        return predict(fitted.model, ids)


# ---------------------------------------------------------------------------------------------
# What a fitted method costs to keep and to run.


@dataclass
class Footprint:
    """parameters: every parameter value predict uses, frozen ones too (scikit-learn: the
        linear model's coefficients and intercepts; the TF-IDF vocabulary is in the bytes).
    model_bytes: the file `save_model` writes for an nn.Module; a pickle for scikit-learn.
    tokenizer_bytes: the tokenizer's saved vocabulary (0 without a tokenizer it can save).
    ms_per_1000: CPU milliseconds to predict 1,000 texts from raw text, best of the repeats."""

    parameters: int
    model_bytes: int
    tokenizer_bytes: int
    ms_per_1000: float


def _module_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as folder:
        return save_model(Path(folder) / "model.pt", model).stat().st_size


def _tokenizer_bytes(tokenizer) -> int:
    """Bytes of the saved vocabulary: mtkit's Tokenizer.save, or a wrapped `transformers`
    tokenizer's save_pretrained (MiniLM's WordPieceTokenizer); 0 for anything else."""
    with tempfile.TemporaryDirectory() as folder:
        if callable(getattr(tokenizer, "save", None)):
            tokenizer.save(Path(folder) / "tokenizer.json")
        elif callable(getattr(getattr(tokenizer, "tokenizer", None), "save_pretrained", None)):
            tokenizer.tokenizer.save_pretrained(folder)
        return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def _predictor(method: Method, fitted: FineTuned, cache):
    """texts → probabilities, as the method would run deployed. A linear probe's predict_proba
    reads cached embeddings; deployed it must run its Transformer, so its whole Classifier
    (encoder, standardisation, head: the same numbers) runs on the token ids instead."""
    if getattr(method, "probes_only", False):
        model, tokenizer = fitted.model, fitted.tokenizer
        length = model.encoder.config.max_length
        return lambda texts: predict_by_length(model, encode_texts(texts, tokenizer, length))
    if getattr(fitted.model, "frozen", False):
        # A frozen SetFit encoder reads its embeddings from the disk cache; deployed, it runs.
        running = dataclasses.replace(fitted.model, frozen=False)
        return lambda texts: running.predict_proba(texts, fitted.tokenizer)
    return lambda texts: method.predict_proba(fitted, texts, cache)


def _linear_size(model) -> tuple[int, int]:
    """(coefficients + intercepts, pickle bytes) of a scikit-learn estimator or Pipeline, whose
    last step is the linear model."""
    head = model[-1] if hasattr(model, "steps") else model
    return int(head.coef_.size + head.intercept_.size), len(pickle.dumps(model))


def _size(model) -> tuple[int, int, nn.Module | None]:
    """(parameters, bytes, the nn.Module to time on the CPU or None) of an nn.Module, a
    scikit-learn model, or an encoder with a scikit-learn head (SetFit's)."""
    if isinstance(model, nn.Module):
        return sum(p.numel() for p in model.parameters()), _module_bytes(model), model
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        head_parameters, head_bytes = _linear_size(model.head)
        encoder_parameters = sum(p.numel() for p in encoder.parameters())
        return encoder_parameters + head_parameters, _module_bytes(encoder) + head_bytes, encoder
    return (*_linear_size(model), None)


def footprint(method: Method, fitted: FineTuned, texts, repeats: int = 3, cache=None) -> Footprint:
    """The size and CPU speed of `fitted` (what method.fine_tuned returned) on `texts`.

    The latency is the best of `repeats` timings of predicting all of `texts` (list of str or a
    TextDataset), tokenizing included, with as many torch threads as the caller set. An nn.Module
    is moved to the CPU for the measurement and back afterwards.
    """
    check_positive("repeats", repeats, integer=True)
    texts = list(texts.texts if hasattr(texts, "texts") else texts)
    if not texts:
        raise MtkitError("footprint needs at least one text to time")
    parameters, model_bytes, module = _size(fitted.model)
    device = None
    if module is not None:
        device = next(module.parameters(), torch.empty(0)).device
        module.cpu()
    try:
        run, best = _predictor(method, fitted, cache), float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            run(texts)
            best = min(best, time.perf_counter() - started)
    finally:
        if device is not None:
            module.to(device)
    ms = 1000 * best * 1000 / len(texts)
    return Footprint(parameters, model_bytes, _tokenizer_bytes(fitted.tokenizer), ms)


__all__ = [
    "DISTILL_OPTIONS",
    "STUDENTS",
    "DistilledMethod",
    "Footprint",
    "TrainedOnce",
    "fitted_teacher",
    "footprint",
    "teacher_key",
]
