"""Label efficiency on text: the methods `experiments.label_efficiency` runs on tweets.

`label_efficiency` and the method protocol are the image track's: only how a method starts
differs, because a text model first needs a tokenizer and a pretrained Transformer:

    methods = [TfidfLogisticBaseline(), TextFineTuneMethod("scratch"), TextFineTuneMethod("full"),
               TextFineTuneMethod(addition="lora")]
    table = label_efficiency(load_text("tweets"), methods, labels_per_class=(100, 1000),
                             seeds=range(3), test_size=5000, validation_per_class=100)

What each method may see is what the image track allows: labels of `split.labelled`,
`split.validation` for early stopping and model choice, and, without labels, every text that
is not a test text (pretraining and the tokenizer's vocabulary use those). The pretrained
encoder depends only on those texts and its config, so one pretraining serves every seed and
size; it is cached on disk by `pretrained_text_encoder` (and in memory by the PretrainCache).
"""

from __future__ import annotations

import copy
from dataclasses import astuple, dataclass, field
from typing import ClassVar

import numpy as np

from mtkit.data import FewLabelSplit, Tokenizer
from mtkit.experiments.baselines import TfidfLogisticBaseline
from mtkit.experiments.protocol import ClassifierMethod, Method, PretrainCache
from mtkit.models import TextEncoder
from mtkit.stages.pretrain import TextPretrainConfig, pretrained_text_encoder

# Fine-tuning settings for the tiny Transformer, chosen by validation accuracy on tweets splits
# with seeds 100-102 (never the benchmark's seeds 0-2, never a test tweet): see bench/text.py.
TEXT_FINE_TUNE = {"epochs": 40, "patience": 6, "batch_size": 32, "weight_decay": 1e-2}
TEXT_LR = {"scratch": 1e-4, "full": 3e-4, "lora": 1e-2, "prompt": 3e-3}


def non_test_texts(split: FewLabelSplit) -> list[str]:
    """Every text of the split except the test texts (labelled, validation and pool), in the
    dataset's order: splits with the same test texts give the same list, and so share one
    pretrained encoder. Their labels are not part of the result."""
    positions = np.concatenate(
        [split.labelled_indices, split.validation_indices, split.unlabelled_indices]
    )
    texts = [*split.labelled.texts, *split.validation.texts, *split.unlabelled.texts]
    return [texts[i] for i in np.argsort(positions, kind="stable")]


def encode_texts(data, tokenizer, max_length: int):
    """A TextDataset → its tensors_for(tokenizer) ((ids,) or (ids, labels)); a list of texts →
    N×max_length token ids."""
    if hasattr(data, "tensors_for"):
        return data.tensors_for(tokenizer, max_length)
    return tokenizer.encode(list(data), max_length=max_length)


@dataclass
class TextFineTuneMethod(ClassifierMethod):
    """A Classifier on the pretrained TextEncoder of notebook 05, trained on the labelled texts.

    strategy: "scratch" trains the same architecture (and tokenizer) from random weights, the
        baseline pretraining has to beat; default "full" (or "linear_probe" with an adapter).
    addition: e.g. "lora" (rank 4 on every attention query and value projection) or "prompt"
        (8 learned vectors in front of every text); only it and the head train then.
    pretrain: the masked-token pretraining (see TextPretrainConfig), on all non-test texts.
    options: more keyword arguments for fine_tune, over TEXT_FINE_TUNE and TEXT_LR.
    """

    pretrain: TextPretrainConfig = field(default_factory=TextPretrainConfig)

    DEFAULT_STRATEGY: ClassVar[str] = "full"
    LR: ClassVar[dict] = TEXT_LR
    FINE_TUNE: ClassVar[dict] = TEXT_FINE_TUNE
    ADDITION_DEFAULTS: ClassVar[dict] = {"lora": {"rank": 4}, "prompt": {"length": 8}}
    SCRATCH_NAME: ClassVar[str] = "same Transformer from scratch"

    def start(self, split, seed, cache):
        texts = non_test_texts(split)
        config = self.pretrain
        if self.chosen_strategy == "scratch":
            tokenizer, _ = cache.remember(
                ("tokenizer", config.vocab_size, hash(tuple(texts))),
                lambda: Tokenizer.fit(texts, max_vocab=config.vocab_size),
            )
            return TextEncoder(config.encoder, vocab_size=tokenizer.vocab_size), tokenizer, 0.0
        pretrained, seconds = cache.remember(
            ("masked_tokens", astuple(config), hash(tuple(texts))),
            lambda: pretrained_text_encoder(texts, config, progress=False),
        )
        # The history's own seconds: a disk-cache hit still reports what pretraining cost.
        seconds = pretrained.history.total_seconds or seconds
        return copy.deepcopy(pretrained.encoder), pretrained.tokenizer, seconds

    def training_data(self, dataset, tokenizer):
        return encode_texts(dataset, tokenizer, self.pretrain.max_length)

    def inputs(self, data, tokenizer):
        encoded = encode_texts(data, tokenizer, self.pretrain.max_length)
        return encoded[0] if isinstance(encoded, tuple) else encoded


def default_text_methods(pretrain: TextPretrainConfig | None = None) -> list[Method]:
    """The text benchmark's line-up: TF-IDF + logistic regression, the Transformer from
    scratch, pretrained with full fine-tuning, LoRA and prompt tuning."""
    pretrain = pretrain or TextPretrainConfig()
    return [
        TfidfLogisticBaseline(),
        TextFineTuneMethod("scratch", pretrain=pretrain),
        TextFineTuneMethod("full", pretrain=pretrain),
        TextFineTuneMethod(addition="lora", pretrain=pretrain),
        TextFineTuneMethod(addition="prompt", pretrain=pretrain),
    ]


__all__ = [
    "TEXT_FINE_TUNE",
    "TEXT_LR",
    "PretrainCache",
    "TextFineTuneMethod",
    "TfidfLogisticBaseline",
    "default_text_methods",
    "encode_texts",
    "non_test_texts",
]
