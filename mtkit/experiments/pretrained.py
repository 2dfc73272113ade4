"""Label efficiency with a real pretrained Transformer (all-MiniLM-L6-v2) on tweets.

The model comes from mtkit/models/pretrained.py; this module makes it a method that
`experiments.label_efficiency` runs beside TF-IDF and the small Transformer of notebook 05:

    methods = [TfidfLogisticBaseline(), PretrainedTransformerMethod("linear_probe"),
               PretrainedTransformerMethod(addition="lora"), PretrainedTransformerMethod("full")]
    table = label_efficiency(load_text("tweets"), methods, labels_per_class=(100, 1000),
                             seeds=range(3), test_size=5000, validation_per_class=100)

Running a 22.7 M-parameter Transformer over texts is the expensive part (about 7 ms per tweet
on 2 CPU cores), so two things keep it affordable:

    embed_texts          the frozen model's embeddings of a list of texts, cached on disk under
                         a key made of the model's weights and the exact texts: a linear probe
                         embeds its labelled, validation and test tweets once, ever
    predict_by_length    predictions in batches of texts of similar length: most tweets are far
                         shorter than the longest, and padding costs as much as words

What a method may see is what `label_efficiency` allows every method: the labels of
`split.labelled`, `split.validation` for early stopping, and texts without labels (the feature
standardisation uses the labelled and validation texts; never a test text). With
`domain_adapt=DomainAdaptConfig()` a method starts from MiniLM after more masked-token training
on every non-test text of the split (mtkit/stages/domain_adapt.py), done once per test split
and cached on disk, so all seeds and sizes with the same test texts share it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from mtkit.core.batches import forward_in_batches
from mtkit.core.cache import cache_dir, cache_key, fingerprint, load_or_build
from mtkit.core.checkpoint import content_hash
from mtkit.core.utils import MtkitError, get_device
from mtkit.experiments.protocol import ClassifierMethod, FineTuned, PretrainCache
from mtkit.experiments.text import encode_texts, non_test_texts
from mtkit.models import Classifier
from mtkit.models.pretrained import PretrainedTextModel, load_pretrained_text_encoder
from mtkit.stages.domain_adapt import DomainAdaptConfig, domain_adapted_encoder
from mtkit.stages.finetune import FineTuneResult, fine_tune, set_trainable
from mtkit.stages.method import train_method

# Fine-tuning settings, chosen on tweets splits with seeds 100-104 and 300 labels (never the
# benchmark's seeds 0-2, never a test tweet): `python bench/minilm.py --tune`; what was tried
# and why these won is in that script's docstring and in BENCHMARKS.md.
PRETRAINED_FINE_TUNE = {
    "epochs": 20,
    "patience": 5,
    "monitor": "val_accuracy",
    "batch_size": 16,
    "weight_decay": 1e-2,
}
PRETRAINED_LR = {"lora": 1e-3, "bottleneck": 1e-3, "prompt": 3e-3, "full": 2e-5}
# A linear probe on cached features costs milliseconds an epoch: fine_tune's own patience.
PROBE_FINE_TUNE = {"epochs": 300, "patience": 50, "lr": 3e-3}


# ---------------------------------------------------------------------------------------------
# Running the model over texts: in length order, and cached.


def length_order(token_ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """The permutation that sorts N×L token ids by their number of real tokens: (N,) int64."""
    return torch.argsort((token_ids != pad_id).sum(dim=1), stable=True)


def _run_by_length(model: nn.Module, token_ids, pad_id: int, batch_size: int) -> torch.Tensor:
    """model(token_ids) in eval mode, batch by batch in length order: N×... rows on the CPU, in
    the order of `token_ids`. Each batch is cut to its longest text by the model itself."""
    order = length_order(token_ids, pad_id)
    return forward_in_batches(model, token_ids, batch_size=batch_size, order=order)


def predict_by_length(classifier: nn.Module, token_ids: torch.Tensor, batch_size: int = 128):
    """Class probabilities N×num_classes (CPU) for N×L token ids, like `mtkit.predict`, but
    batching texts of similar length together (about twice as fast on tweets)."""
    pad_id = classifier.encoder.config.pad_id
    return torch.softmax(_run_by_length(classifier, token_ids, pad_id, batch_size), dim=1)


def embed_texts(
    encoder: nn.Module,
    tokenizer,
    texts,
    *,
    batch_size: int = 128,
    cache: bool = True,
    folder=None,
) -> torch.Tensor:
    """The encoder's embeddings of `texts`: N×output_size float32 on the CPU (eval mode).

    encoder: a PretrainedTextEncoder (anything with `config.name`, `config.max_length` and
        `config.pad_id`), on the device to run it on; tokenizer: its tokenizer.
    cache: read the result from the disk cache (`mtkit.core.cache.cache_dir(folder)`) when this
        encoder already embedded exactly these texts, else compute and store it there. The key
        is a hash of the encoder's weights (adapters included) and of the texts, so a changed
        model or a changed text never returns a stale embedding.
    """
    texts = list(texts)
    if not texts:
        raise MtkitError("nothing to embed: the list of texts is empty")
    config = encoder.config

    def build():
        ids = tokenizer.encode(texts, max_length=config.max_length)
        embeddings = _run_by_length(encoder, ids, config.pad_id, batch_size)
        return {"embeddings": embeddings}, {"model": config.name, "texts": len(texts)}

    if not cache:
        return build()[0]["embeddings"]
    key = cache_key(
        kind="text-embeddings",
        model=config.name,
        weights=content_hash(encoder.state_dict()),
        max_length=config.max_length,
        texts=fingerprint(texts),
    )
    path = cache_dir(folder) / f"embeddings-{config.name}-{key}.pt"
    state, _, _ = load_or_build(path, key, build)
    return state["embeddings"]


# ---------------------------------------------------------------------------------------------
# The method for label_efficiency.


def _texts(data) -> list[str]:
    return list(data.texts) if hasattr(data, "texts") else list(data)


@dataclass
class PretrainedTransformerMethod(ClassifierMethod):
    """A Classifier on the pretrained Transformer, trained on the labelled texts.

    strategy: "linear_probe" (default: the Transformer frozen, a linear head on its cached
        embeddings) or "full" (every weight learns); with an addition, "linear_probe".
    addition: "lora" (rank 8 on every attention query and value projection), "bottleneck"
        (width 16 after every attention output and feed-forward layer, Houlsby et al.'s
        places), "prompt" (8 learned vectors in front of every text), or an Addition with
        other sizes. Only it and the head train then.
    Features are standardised with the mean and spread of the frozen model's embeddings of the
    labelled and validation texts.
    probe_first: start the head of an adapter or full fine-tuning from a linear probe on the
        cached embeddings (LP-FT, Kumar et al., 2022), instead of from random weights.
    options: more keyword arguments for `fine_tune` (lr, epochs, patience, batch_size, ...),
        over PRETRAINED_FINE_TUNE (PROBE_FINE_TUNE for the probe) and PRETRAINED_LR.
    model: which pretrained model (see models.pretrained.PRETRAINED_TEXT_MODELS).
    cache_folder: where embed_texts keeps embeddings (None: mtkit.core.cache.cache_dir()), and
        the domain-adapted encoders.
    domain_adapt: None, or a DomainAdaptConfig: start from the model after masked-token training
        on the split's non-test texts (their labels are never read), named "... (domain-adapted)".
    """

    model: str = field(default="minilm", kw_only=True)
    probe_first: bool = field(default=False, kw_only=True)
    cache_folder: str | None = field(default=None, kw_only=True)
    domain_adapt: DomainAdaptConfig | None = field(default=None, kw_only=True)

    DEFAULT_STRATEGY: ClassVar[str] = "linear_probe"
    LR: ClassVar[dict] = PRETRAINED_LR
    FINE_TUNE: ClassVar[dict] = PRETRAINED_FINE_TUNE
    ADDITION_DEFAULTS: ClassVar[dict] = {
        "lora": {"rank": 8},
        "bottleneck": {"size": 16},
        "prompt": {"length": 8},
    }
    TRACK: ClassVar[str] = "MiniLM"
    STRATEGY_LABELS: ClassVar[dict] = {"linear_probe": "linear probe", "full": "full fine-tuning"}

    def __post_init__(self):
        super().__post_init__()
        if self.chosen_strategy not in ("linear_probe", "full"):
            raise MtkitError(
                f"the pretrained Transformer takes strategy 'linear_probe' or 'full', "
                f"got {self.chosen_strategy!r}"
            )
        if self.domain_adapt is not None and not isinstance(self.domain_adapt, DomainAdaptConfig):
            raise MtkitError(
                f"domain_adapt must be None or a DomainAdaptConfig, got {self.domain_adapt!r}"
            )

    @property
    def name(self) -> str:
        name = super().name
        if self.domain_adapt is None or self.title:
            return name
        if name.startswith(self.TRACK):
            return f"{self.TRACK} (domain-adapted){name[len(self.TRACK) :]}"
        return f"{name} (domain-adapted)"

    @property
    def probes_only(self) -> bool:
        """A linear probe and nothing else: it never runs the Transformer after embedding."""
        return self.chosen_strategy == "linear_probe" and self.chosen_addition is None

    def pretrained(self, cache: PretrainCache | None = None, split=None) -> PretrainedTextModel:
        """The loaded model, on the device training will use; loaded once per PretrainCache.
        With domain_adapt: the model adapted to `split`'s non-test texts (split is needed then),
        once per PretrainCache and test split. Do not modify it: fine_tuned works on a copy."""
        return self._start_model(cache, split)[0]

    def _start_model(self, cache, split) -> tuple[PretrainedTextModel, float]:
        """(the model to start from, seconds its pretraining took: 0 for the plain model)."""
        cache = PretrainCache() if cache is None else cache
        if self.domain_adapt is None:
            return cache.remember(("pretrained_text", self.model), self._load)[0], 0.0
        if split is None:
            raise MtkitError(
                "with domain_adapt the starting model depends on the split (it is adapted to "
                "its non-test texts): pass split= to pretrained() and embeddings()"
            )
        texts = non_test_texts(split)  # never a test text; no label is read
        key = ("domain_adapted_text", self.model, self.domain_adapt, fingerprint(texts))
        adapted = cache.remember(key, lambda: self._adapt(texts))[0]
        # The adaptation's own seconds: a disk-cache hit still reports what it cost.
        return adapted, adapted.result.seconds

    def _load(self) -> PretrainedTextModel:
        loaded = load_pretrained_text_encoder(self.model)
        loaded.encoder.to(get_device())
        return loaded

    def _adapt(self, texts):
        adapted = domain_adapted_encoder(
            self.model, texts, self.domain_adapt, folder=self.cache_folder
        )
        adapted.encoder.to(get_device())
        return adapted

    def embeddings(self, texts, cache: PretrainCache | None = None, split=None) -> torch.Tensor:
        """The frozen model's N×width embeddings of `texts`, from the disk cache if it has them
        (keyed by the weights, so adapted and plain models never share an entry)."""
        loaded = self.pretrained(cache, split)
        return embed_texts(loaded.encoder, loaded.tokenizer, texts, folder=self.cache_folder)

    def start(self, split, seed, cache):
        loaded, seconds = self._start_model(cache, split)
        return copy.deepcopy(loaded.encoder), loaded.tokenizer, seconds

    def prepare(self, classifier, split, cache):
        classifier.to(next(self.pretrained(cache, split).encoder.parameters()).device)
        if self.probes_only:
            set_trainable(classifier.encoder, False)
        known = torch.cat(  # no test text among them
            [self.embeddings(split.labelled.texts, cache, split),
             self.embeddings(split.validation.texts, cache, split)]
        )  # fmt: skip
        classifier.feature_mean.copy_(known.mean(dim=0))
        classifier.feature_std.copy_(known.std(dim=0).clamp_min(1e-4))

    def training_options(self, seed):
        return {**super().training_options(seed), "seed": seed}

    def fine_tuned(self, split, seed, cache=None) -> FineTuned:
        """The probe on cached embeddings (and for LP-FT the head's start), then the adapter or
        full fine-tuning on token ids with length-ordered validation."""
        cache = PretrainCache() if cache is None else cache
        fitted = self.new_classifier(split, seed, cache)
        if self.probes_only or self.probe_first:
            fitted.result = self._probe(fitted.model, split, seed, cache)
            if self.probes_only:
                return fitted
        config = fitted.model.encoder.config
        labelled = split.labelled.tensors_for(fitted.tokenizer, config.max_length)
        val_ids = split.validation.tensors_for(fitted.tokenizer, config.max_length)[0]
        # Validation runs in order: sorted by length, its batches carry little padding.
        order = length_order(val_ids, config.pad_id)
        validation = (val_ids[order], split.validation.labels[order])
        fitted.result = train_method(
            fitted.model,
            labelled,
            self.chosen_strategy,
            self.chosen_addition,
            validation=validation,
            **self.training_options(seed),
        )
        return fitted

    def _probe(self, classifier, split, seed, cache) -> FineTuneResult:
        """Train `classifier`'s head on cached features: the same Classifier and fine_tune, with
        the encoder's work already done (nn.Identity stands in for it). The head and the
        standardisation are then `classifier`'s, so it works on token ids as usual."""
        probe = Classifier(
            nn.Identity(), classifier.num_classes, feature_size=classifier.feature_size
        )
        probe.feature_mean.copy_(classifier.feature_mean)
        probe.feature_std.copy_(classifier.feature_std)
        options = {**PROBE_FINE_TUNE, "progress": False, "seed": seed}
        if self.probes_only:
            options.update(self.options)
        labelled = (self.embeddings(split.labelled.texts, cache, split), split.labelled.labels)
        validation = (
            self.embeddings(split.validation.texts, cache, split),
            split.validation.labels,
        )
        result = fine_tune(
            probe, labelled, strategy="linear_probe", validation=validation, **options
        )
        classifier.head.load_state_dict(probe.head.state_dict())
        return result

    def predict_proba(self, fitted, data, cache=None) -> torch.Tensor:
        """N×num_classes probabilities for N texts. A linear probe reads the cached embeddings
        of its frozen encoder (the start model's weights); every other method runs its model."""
        classifier = fitted.model
        if self.probes_only:
            with torch.no_grad():
                features = embed_texts(
                    classifier.encoder, fitted.tokenizer, _texts(data), folder=self.cache_folder
                ).to(classifier.head.weight)
                standardised = (features - classifier.feature_mean) / classifier.feature_std
                return torch.softmax(classifier.head(standardised), dim=1).cpu()
        ids = encode_texts(_texts(data), fitted.tokenizer, classifier.encoder.config.max_length)
        return predict_by_length(classifier, ids)
