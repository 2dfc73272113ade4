"""SetFit (Tunstall et al., 2022) on the pretrained MiniLM, as a method of `label_efficiency`.

    methods = [PretrainedTransformerMethod("full"), SetFitMethod(), SetFitMethod(addition="lora")]
    table = label_efficiency(load_text("tweets"), methods, labels_per_class=(8, 64), seeds=range(3))

Where PretrainedTransformerMethod trains a softmax head and the encoder together with
cross-entropy, SetFit splits the work (mtkit/stages/setfit.py): the encoder first learns from
pairs of labelled texts (same class or not), then a logistic regression, SetFit's default head,
is fitted on its embeddings of the labelled texts. Like the paper it uses neither the validation
texts (no early stopping) nor the unlabelled pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from mtkit.core.utils import MtkitError, check_positive, seed_everything
from mtkit.experiments.pretrained import (
    PRETRAINED_LR,
    PretrainedTransformerMethod,
    embed_texts,
)
from mtkit.experiments.protocol import FineTuned, PretrainCache
from mtkit.models import Classifier
from mtkit.stages.finetune import count_trainable, set_trainable
from mtkit.stages.method import attach
from mtkit.stages.setfit import contrastive_fine_tune

# What `options` may set in contrastive_fine_tune (the rest are SetFitMethod's fields).
BODY_OPTIONS = ("warmup", "weight_decay", "progress")


@dataclass
class SetFitClassifier:
    """A SetFit model: the fine-tuned encoder and the scikit-learn head on its embeddings.

    encoder: token ids N×L → N×width embeddings; head: a fitted LogisticRegression; num_classes:
    how many columns probabilities have; losses: the body training's loss at every step.
    """

    encoder: nn.Module
    head: Any
    num_classes: int
    losses: list[float] = field(default_factory=list)
    frozen: bool = False  # the encoder never trained: its embeddings may come from the cache

    def predict_proba(self, texts, tokenizer) -> torch.Tensor:
        """N×num_classes float32 probabilities (CPU) for N texts: embedded in length-ordered
        batches by the encoder (from the disk cache only when it is frozen), then the head."""
        features = embed_texts(self.encoder, tokenizer, texts, cache=self.frozen)
        probabilities = torch.zeros(len(features), self.num_classes)
        # A class the head never saw keeps probability 0 (columns follow head.classes_).
        columns = torch.as_tensor(self.head.classes_, dtype=torch.long)
        probabilities[:, columns] = torch.as_tensor(
            self.head.predict_proba(features.numpy()), dtype=torch.float32
        )
        return probabilities

    def head_parameters(self) -> int:
        return int(self.head.coef_.size + self.head.intercept_.size)


@dataclass
class SetFitMethod(PretrainedTransformerMethod):
    """SetFit: contrastive fine-tuning of MiniLM on pairs of labelled texts, then a logistic
    regression on the fine-tuned embeddings.

    strategy: "full" (default: every encoder weight trains on the pairs); with an adapter
        addition ("lora": rank 8 on every attention query and value projection), only the
        adapter trains and the rest of the encoder stays as it was.
    pairs_per_text: rounds of pair sampling (the paper's R, which defaults to 20; 5 costs a
        quarter of the time): each labelled text gets one positive and one negative pair a round.
        0 trains no pairs at all: the head alone on the pretrained embeddings (the ablation that
        shows what the pairs add).
    epochs, batch_size (pairs per step), lr (None: 2e-5 for full fine-tuning, SetFit's body
        rate; the track's adapter rate, e.g. 1e-3 for LoRA): the body training.
    head_c: the logistic regression's inverse regularisation C (1.0, scikit-learn's and SetFit's
        default). options: more keyword arguments for `contrastive_fine_tune` (warmup,
        weight_decay, progress).
    The encoder comes from `start`, so whatever start gives (the pretrained MiniLM, or an
    adapted one) is what SetFit fine-tunes.
    """

    pairs_per_text: int = field(default=5, kw_only=True)
    epochs: int = field(default=1, kw_only=True)
    batch_size: int = field(default=16, kw_only=True)
    lr: float | None = field(default=None, kw_only=True)
    head_c: float = field(default=1.0, kw_only=True)

    DEFAULT_STRATEGY: ClassVar[str] = "full"
    # SetFit's body rate for full fine-tuning; adapters take the track's rates.
    LR: ClassVar[dict] = {**PRETRAINED_LR, "full": 2e-5}

    def __post_init__(self):
        super().__post_init__()
        addition = self.chosen_addition
        if addition is not None and not addition.is_adapter:
            raise MtkitError(
                f"SetFit's head is a logistic regression: addition {addition.label!r} changes "
                "the Classifier head, which SetFit does not use; use an adapter ('lora') or none"
            )
        if addition is None and self.chosen_strategy != "full":
            raise MtkitError(
                "SetFit fine-tunes the encoder on pairs: use strategy 'full' or an adapter "
                f"(addition='lora'), got strategy {self.chosen_strategy!r}"
            )
        if self.probe_first:
            raise MtkitError("SetFit has no softmax head to start from a probe: probe_first=False")
        check_positive("pairs_per_text", self.pairs_per_text, integer=True, allow_zero=True)
        check_positive("epochs", self.epochs, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("head_c", self.head_c)
        if self.lr is not None:
            check_positive("lr", self.lr)
        unknown = sorted(set(self.options) - set(BODY_OPTIONS))
        if unknown:
            raise MtkitError(f"SetFit options may be {BODY_OPTIONS}, got {unknown}")

    @property
    def name(self) -> str:
        if self.title:
            return self.title
        addition = self.chosen_addition
        track = self.TRACK + (" (domain-adapted)" if self.domain_adapt is not None else "")
        if self.pairs_per_text == 0:
            return f"{track} + logistic head (no pairs)"
        return f"{track} + SetFit" + (f" ({addition.label})" if addition else "")

    def fine_tuned(self, split, seed, cache=None) -> FineTuned:
        """The body trained on pairs of `split.labelled`, then the head on its embeddings of them.
        Reads the labelled texts and labels only."""
        from sklearn.linear_model import LogisticRegression

        cache = PretrainCache() if cache is None else cache
        encoder, tokenizer, seconds = self.start(split, seed, cache)
        addition = self.chosen_addition
        seed_everything(seed)  # LoRA's random start
        if addition is None:
            set_trainable(encoder, True)
        else:  # the addition goes where the kit's other methods put it (Classifier names)
            attach(Classifier(encoder, split.labelled.num_classes), addition, head="keep")
        labelled = split.labelled
        ids = tokenizer.encode(labelled.texts, max_length=encoder.config.max_length)
        options = {"progress": False, **self.options}
        frozen = self.pairs_per_text == 0
        if frozen:
            set_trainable(encoder, False)
        losses = (
            []
            if frozen
            else contrastive_fine_tune(
                encoder,
                ids,
                labelled.labels,
                pairs_per_text=self.pairs_per_text,
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr or self.learning_rate(),
                seed=seed,
                **options,
            )
        )
        features = embed_texts(encoder, tokenizer, labelled.texts, cache=frozen)
        # max_iter above scikit-learn's 100: lbfgs on hundreds of texts may need more steps.
        head = LogisticRegression(C=self.head_c, max_iter=1000)
        head.fit(features.numpy(), labelled.labels.numpy())
        model = SetFitClassifier(encoder, head, labelled.num_classes, losses, frozen=frozen)
        trainable = count_trainable(encoder) + model.head_parameters()
        return FineTuned(model, tokenizer, None, seconds, trainable_parameters=trainable)

    def predict_proba(self, fitted, data, cache=None) -> torch.Tensor:
        """N×num_classes float32 probabilities (CPU) for a TextDataset or a list of N texts."""
        texts = list(data.texts) if hasattr(data, "texts") else list(data)
        return fitted.model.predict_proba(texts, fitted.tokenizer)
