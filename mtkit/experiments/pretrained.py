"""Label efficiency with a real pretrained Transformer (all-MiniLM-L6-v2) on tweets.

The model comes from mtkit/models/pretrained.py; this module makes it a method that
`experiments.label_efficiency` runs beside TF-IDF and the small Transformer of notebook 05:

    methods = [TfidfLogisticBaseline(), PretrainedTransformerMethod("linear_probe"),
               PretrainedTransformerMethod("lora"), PretrainedTransformerMethod("full")]
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
standardisation uses the labelled and validation texts; never a test text).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from mtkit.core.cache import cache_dir, cache_key, fingerprint, load_or_build
from mtkit.core.checkpoint import content_hash
from mtkit.core.utils import MtkitError, check_choice, check_positive, get_device, seed_everything
from mtkit.data import FewLabelSplit
from mtkit.experiments.efficiency import MethodResult, PretrainCache, _check_options
from mtkit.models import Classifier
from mtkit.models.pretrained import (
    BOTTLENECK_PLACES,
    PretrainedTextModel,
    load_pretrained_text_encoder,
)
from mtkit.stages.adapters import PromptTuning, add_adapters, add_lora, freeze_base, train_adapter
from mtkit.stages.finetune import FineTuneResult, count_trainable, fine_tune

PRETRAINED_METHODS = ("linear_probe", "lora", "bottleneck", "prompt", "full")

# Fine-tuning settings, chosen on tweets splits with seeds 100-104 and 300 labels (never the
# benchmark's seeds 0-2, never a test tweet): `python bench/minilm.py --tune`, whose lines are in
# BENCHMARKS.md. Every setting tried scored within about a point of the others on 2,000 held-out
# pool tweets per seed; training up to 20 epochs and keeping the epoch with the best validation
# accuracy did a little better for LoRA and full fine-tuning than stopping on validation loss,
# which rises (overconfidence) while accuracy still improves. The bottleneck and prompt rates
# come from the first round of that search (10 epochs, stopping on loss).
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


@torch.no_grad()
def _run_by_length(model: nn.Module, token_ids, pad_id: int, batch_size: int) -> torch.Tensor:
    """model(token_ids) in eval mode, batch by batch in length order: N×... rows on the CPU, in
    the order of `token_ids`. Each batch is cut to its longest text by the model itself."""
    check_positive("batch_size", batch_size, integer=True)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = length_order(token_ids, pad_id)
    chunks = [model(token_ids[rows].to(device)).float().cpu() for rows in order.split(batch_size)]
    model.train(was_training)
    outputs = torch.empty(len(token_ids), *chunks[0].shape[1:])
    outputs[order] = torch.cat(chunks)  # back to the caller's order
    return outputs


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


@dataclass
class PretrainedTransformerMethod:
    """A Classifier on the pretrained Transformer, trained on the labelled texts with `method`:

        linear_probe  the Transformer frozen; a linear head on its cached embeddings
        lora          LoRA of rank `lora_rank` on every attention query and value projection
        bottleneck    bottleneck adapters of width `adapter_size` after every attention output
                      and feed-forward layer (Houlsby et al.'s places)
        prompt        `prompt_length` learned vectors in front of every text (prompt tuning)
        full          every weight learns
    With an adapter, only it and the head train. Features are standardised with the mean and
    spread of the frozen model's embeddings of the labelled and validation texts.
    probe_first: start the head of lora/bottleneck/prompt/full from a linear probe on the cached
        embeddings (LP-FT, Kumar et al., 2022), instead of from random weights.
    options: more keyword arguments for `fine_tune` (lr, epochs, patience, batch_size, ...),
        over PRETRAINED_FINE_TUNE (PROBE_FINE_TUNE for the probe) and PRETRAINED_LR.
    model: which pretrained model (see models.pretrained.PRETRAINED_TEXT_MODELS).
    cache_folder: where embed_texts keeps embeddings (None: mtkit.core.cache.cache_dir()).
    """

    method: str = "lora"
    model: str = "minilm"
    lora_rank: int = 8
    lora_alpha: float | None = None
    adapter_size: int = 16
    prompt_length: int = 8
    probe_first: bool = False
    options: dict = field(default_factory=dict)
    name: str = ""
    cache_folder: str | None = None

    def __post_init__(self):
        check_choice("method", self.method, PRETRAINED_METHODS)
        check_positive("lora_rank", self.lora_rank, integer=True)
        check_positive("adapter_size", self.adapter_size, integer=True)
        check_positive("prompt_length", self.prompt_length, integer=True)
        _check_options(self.options, "PretrainedTransformerMethod")
        if not self.name:
            self.name = (
                "MiniLM + "
                + {
                    "linear_probe": "linear probe",
                    "lora": f"LoRA r={self.lora_rank}",
                    "bottleneck": f"bottleneck {self.adapter_size}",
                    "prompt": f"prompt tuning ({self.prompt_length} vectors)",
                    "full": "full fine-tuning",
                }[self.method]
            )

    def pretrained(self, cache: PretrainCache | None = None) -> PretrainedTextModel:
        """The loaded model, on the device training will use; loaded once per PretrainCache.
        Do not modify it: fine_tuned works on a copy."""
        cache = PretrainCache() if cache is None else cache

        def load():
            loaded = load_pretrained_text_encoder(self.model)
            loaded.encoder.to(get_device())
            return loaded

        return cache.remember(("pretrained_text", self.model), load)[0]

    def embeddings(self, texts, cache: PretrainCache | None = None) -> torch.Tensor:
        """The frozen model's N×width embeddings of `texts`, from the disk cache if it has them."""
        loaded = self.pretrained(cache)
        return embed_texts(loaded.encoder, loaded.tokenizer, texts, folder=self.cache_folder)

    def adapted_classifier(self, num_classes: int, cache: PretrainCache | None = None):
        """A new, untrained Classifier on a copy of the model, with this method's adapter in
        place and exactly the parameters that will train set to requires_grad."""
        loaded = self.pretrained(cache)
        classifier = Classifier(copy.deepcopy(loaded.encoder), num_classes)
        classifier.to(next(loaded.encoder.parameters()).device)
        if self.method == "lora":
            add_lora(classifier, ["*.query", "*.value"], rank=self.lora_rank, alpha=self.lora_alpha)
        elif self.method == "bottleneck":
            places = [f"encoder.{place}" for place in BOTTLENECK_PLACES]
            add_adapters(classifier, places, size=self.adapter_size)
        elif self.method == "prompt":
            encoder = classifier.encoder
            encoder.prompt = PromptTuning(encoder.output_size, num_prompts=self.prompt_length)
            encoder.prompt.initialize_from(encoder.transformer.embeddings.word_embeddings)
            freeze_base(classifier)
        elif self.method == "linear_probe":
            classifier.requires_grad_(False)
        classifier.head.requires_grad_(True)  # the task's head always learns
        return classifier

    def fine_tuned(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        """(trained Classifier on token ids, its tokenizer, FineTuneResult) for this split."""
        cache = PretrainCache() if cache is None else cache
        loaded = self.pretrained(cache)
        labels, val_labels = split.labelled.labels, split.validation.labels
        features = self.embeddings(split.labelled.texts, cache)
        val_features = self.embeddings(split.validation.texts, cache)
        seed_everything(seed)
        classifier = self.adapted_classifier(split.labelled.num_classes, cache)
        known = torch.cat([features, val_features])  # no test text among them
        classifier.feature_mean.copy_(known.mean(dim=0))
        classifier.feature_std.copy_(known.std(dim=0).clamp_min(1e-4))
        if self.method == "linear_probe" or self.probe_first:
            result = self._probe(classifier, (features, labels), (val_features, val_labels), seed)
            if self.method == "linear_probe":
                return classifier, loaded.tokenizer, result

        max_length = loaded.encoder.config.max_length
        labelled = split.labelled.tensors_for(loaded.tokenizer, max_length)
        val_ids = split.validation.tensors_for(loaded.tokenizer, max_length)[0]
        # Validation runs in order: sorted by length, its batches carry little padding.
        order = length_order(val_ids, loaded.encoder.config.pad_id)
        validation = (val_ids[order], val_labels[order])
        options = {
            **PRETRAINED_FINE_TUNE,
            "lr": PRETRAINED_LR[self.method],
            "progress": False,
            "seed": seed,
            **self.options,
        }
        if self.method == "full":
            result = fine_tune(
                classifier, labelled, strategy="full", validation=validation, **options
            )
        else:
            result = train_adapter(classifier, labelled, validation=validation, **options)
        return classifier, loaded.tokenizer, result

    def _probe(self, classifier, labelled, validation, seed) -> FineTuneResult:
        """Train `classifier`'s head on cached features: the same Classifier and fine_tune, with
        the encoder's work already done (nn.Identity stands in for it). The head and the
        standardisation are then `classifier`'s, so it works on token ids as usual."""
        probe = Classifier(
            nn.Identity(), classifier.num_classes, feature_size=classifier.feature_size
        )
        probe.feature_mean.copy_(classifier.feature_mean)
        probe.feature_std.copy_(classifier.feature_std)
        options = {**PROBE_FINE_TUNE, "progress": False, "seed": seed}
        if self.method == "linear_probe":
            options.update(self.options)
        result = fine_tune(
            probe, labelled, strategy="linear_probe", validation=validation, **options
        )
        classifier.head.load_state_dict(probe.head.state_dict())
        return result

    def predict(self, classifier, texts, cache: PretrainCache | None = None) -> torch.Tensor:
        """Predicted classes (N,) of a trained classifier for N texts. A linear probe reads the
        frozen model's cached embeddings; every other method runs its changed model."""
        if self.method == "linear_probe":
            with torch.no_grad():
                features = self.embeddings(texts, cache).to(classifier.head.weight)
                standardised = (features - classifier.feature_mean) / classifier.feature_std
                return classifier.head(standardised).argmax(dim=1).cpu()
        loaded = self.pretrained(cache)
        ids = loaded.tokenizer.encode(list(texts), max_length=loaded.encoder.config.max_length)
        return predict_by_length(classifier, ids).argmax(dim=1)

    def run(self, split: FewLabelSplit, seed: int, cache: PretrainCache | None = None):
        cache = PretrainCache() if cache is None else cache
        classifier, _, _ = self.fine_tuned(split, seed, cache)
        predictions = self.predict(classifier, split.test.texts, cache)
        return MethodResult(predictions, count_trainable(classifier))


def default_pretrained_methods() -> list:
    """The MiniLM line-up of bench/minilm.py: a linear probe, LoRA and full fine-tuning."""
    return [
        PretrainedTransformerMethod("linear_probe"),
        PretrainedTransformerMethod("lora"),
        PretrainedTransformerMethod("full"),
    ]
