"""Label efficiency on text: the methods `experiments.label_efficiency` runs on tweets.

`label_efficiency` itself is the image track's, unchanged: it splits any dataset with
`few_labels`, hides the test labels and scores each method's predictions. Only the methods
differ, because a text model first needs a tokenizer and a pretrained Transformer:

    methods = [TfidfLogisticBaseline(), TextFineTuneMethod("scratch"), TextFineTuneMethod("full"),
               TextFineTuneMethod("full", adapter="lora")]
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

import numpy as np
import torch

from mtkit.core.utils import MtkitError, check_choice, check_positive, seed_everything
from mtkit.data import FewLabelSplit, Tokenizer
from mtkit.experiments.efficiency import MethodResult, PretrainCache, _check_options
from mtkit.models import Classifier, TextEncoder
from mtkit.stages.adapters import PromptTuning, add_lora, freeze_base, train_adapter
from mtkit.stages.finetune import STRATEGIES, count_trainable, fine_tune, predict
from mtkit.stages.pretrain import TextPretrainConfig, pretrained_text_encoder

ADAPTERS = (None, "lora", "prompt")

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


@dataclass
class TfidfLogisticBaseline:
    """TF-IDF of words and word pairs, then a class-weighted logistic regression: the model a
    practitioner would reach for first. Both are fitted on the labelled texts only (as a
    scikit-learn Pipeline would be); the regularisation C is the best of `C_grid` on the
    validation texts, as GridSearchCV would choose it."""

    C_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)
    ngram_range: tuple[int, int] = (1, 2)
    name: str = "TF-IDF + logistic regression"

    def run(self, split: FewLabelSplit, seed: int):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        if not self.C_grid:
            raise MtkitError("C_grid needs at least one value")
        vectorizer = TfidfVectorizer(ngram_range=self.ngram_range, sublinear_tf=True)
        train = vectorizer.fit_transform(split.labelled.texts)
        labels = split.labelled.labels.numpy()

        def model_for(C):
            model = LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
            return model.fit(train, labels)

        validation = vectorizer.transform(split.validation.texts)
        scores = [
            model_for(C).score(validation, split.validation.labels.numpy()) for C in self.C_grid
        ]
        model = model_for(self.C_grid[int(np.argmax(scores))])
        predictions = model.predict(vectorizer.transform(split.test.texts))
        return MethodResult(torch.as_tensor(predictions), model.coef_.size + model.intercept_.size)


@dataclass
class TextFineTuneMethod:
    """A Classifier on the pretrained TextEncoder, trained on the labelled tweets.

    strategy: one of finetune.STRATEGIES; "scratch" trains the same architecture (and
        tokenizer) from random weights, the baseline pretraining has to beat.
    adapter: None (the strategy decides what trains), "lora" (LoRA of `lora_rank` on every
        attention query and value projection) or "prompt" (`prompt_length` learned vectors in
        front of every tweet); with an adapter only it and the head train.
    pretrain: the masked-token pretraining (see TextPretrainConfig), on all non-test texts.
    options: more keyword arguments for `fine_tune` (lr, epochs, dropout, class_balance, ...),
        over TEXT_FINE_TUNE and the learning rate from TEXT_LR.
    """

    strategy: str = "full"
    adapter: str | None = None
    pretrain: TextPretrainConfig = field(default_factory=TextPretrainConfig)
    lora_rank: int = 4
    prompt_length: int = 8
    options: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("adapter", self.adapter, ADAPTERS)
        check_positive("lora_rank", self.lora_rank, integer=True)
        check_positive("prompt_length", self.prompt_length, integer=True)
        _check_options(self.options, "TextFineTuneMethod")
        if self.adapter and self.strategy == "scratch":
            raise MtkitError("an adapter trains on a pretrained encoder; scratch has none")
        if not self.name:
            if self.strategy == "scratch":
                self.name = "same Transformer from scratch"
            elif self.adapter == "lora":
                self.name = f"pretrained + LoRA r={self.lora_rank}"
            elif self.adapter == "prompt":
                self.name = f"pretrained + prompt tuning ({self.prompt_length} vectors)"
            else:
                self.name = f"pretrained + {self.strategy}"

    def encoder_and_tokenizer(self, split: FewLabelSplit, cache: PretrainCache):
        """(a fresh copy of the starting encoder, its tokenizer, pretraining seconds)."""
        texts = non_test_texts(split)
        config = self.pretrain
        if self.strategy == "scratch":
            tokenizer, _ = cache.remember(
                ("tokenizer", config.vocab_size, hash(tuple(texts))),
                lambda: Tokenizer.fit(texts, max_vocab=config.vocab_size),
            )
            encoder = TextEncoder(
                vocab_size=tokenizer.vocab_size,
                max_length=config.max_length,
                width=config.width,
                depth=config.depth,
                heads=config.heads,
            )
            return encoder, tokenizer, 0.0
        pretrained, seconds = cache.remember(
            ("masked_tokens", astuple(config), hash(tuple(texts))),
            lambda: pretrained_text_encoder(texts, config, progress=False),
        )
        # The history's own seconds: a disk-cache hit still reports what pretraining cost.
        seconds = pretrained.history.total_seconds or seconds
        return copy.deepcopy(pretrained.encoder), pretrained.tokenizer, seconds

    def fine_tuned(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        """(trained Classifier, its tokenizer, FineTuneResult, pretraining seconds)."""
        cache = PretrainCache() if cache is None else cache
        encoder, tokenizer, pretrain_seconds = self.encoder_and_tokenizer(split, cache)
        max_length = self.pretrain.max_length
        labelled = split.labelled.tensors_for(tokenizer, max_length)
        validation = split.validation.tensors_for(tokenizer, max_length)
        seed_everything(seed)
        classifier = Classifier(encoder, split.labelled.num_classes)
        key = self.adapter or ("scratch" if self.strategy == "scratch" else "full")
        options = {**TEXT_FINE_TUNE, "lr": TEXT_LR[key], "progress": False, **self.options}
        if self.adapter is None:
            result = fine_tune(
                classifier, labelled, strategy=self.strategy, validation=validation, **options
            )
            return classifier, tokenizer, result, pretrain_seconds
        if self.adapter == "lora":
            add_lora(classifier, ["*.query", "*.value"], rank=self.lora_rank)
        else:
            encoder.prompt = PromptTuning(encoder.config.width, num_prompts=self.prompt_length)
            encoder.prompt.initialize_from(encoder.embeddings.token)
            freeze_base(classifier)
        classifier.head.requires_grad_(True)  # the task's head always learns
        result = train_adapter(classifier, labelled, validation=validation, **options)
        return classifier, tokenizer, result, pretrain_seconds

    def run(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        classifier, tokenizer, _, pretrain_seconds = self.fine_tuned(split, seed, cache)
        test_ids = split.test.tensors_for(tokenizer, self.pretrain.max_length)[0]
        predictions = predict(classifier, test_ids).argmax(dim=1)
        return MethodResult(predictions, count_trainable(classifier), pretrain_seconds)


def default_text_methods(pretrain: TextPretrainConfig | None = None) -> list:
    """The text benchmark's line-up: TF-IDF + logistic regression, the Transformer from
    scratch, pretrained with full fine-tuning, LoRA and prompt tuning."""
    pretrain = pretrain or TextPretrainConfig()
    return [
        TfidfLogisticBaseline(),
        TextFineTuneMethod("scratch", pretrain=pretrain),
        TextFineTuneMethod("full", pretrain=pretrain),
        TextFineTuneMethod("full", adapter="lora", pretrain=pretrain),
        TextFineTuneMethod("full", adapter="prompt", pretrain=pretrain),
    ]
