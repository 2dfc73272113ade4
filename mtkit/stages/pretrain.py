"""Unsupervised pretraining: teach an autoencoder to rebuild images, no labels needed.

A *denoising* autoencoder sees a corrupted image and must rebuild the clean one. The corruption
stops it from learning the identity and pushes it towards features that describe digits rather
than single pixels. Noise is an option of the pretraining call, not a different model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.batches import forward_in_batches
from mtkit.core.train import History, fit
from mtkit.core.utils import MtkitError, check_choice, check_positive, seed_everything
from mtkit.data.length_buckets import LengthBuckets
from mtkit.data.tokenizer import MASK_ID, SPECIAL_TOKENS, Tokenizer
from mtkit.models.text import MaskedTokenModel, TextEncoder, TextEncoderConfig, mask_tokens

NOISE_TYPES = ("none", "gaussian", "masking")


def add_noise(images: torch.Tensor, noise: str = "gaussian", level: float = 0.3) -> torch.Tensor:
    """Corrupt a batch of images; the input is never modified.

    images: N×C×H×W in [0, 1].
    noise: "none", "gaussian" (add N(0, level²) and clip to [0, 1]) or "masking" (set a random
        `level` fraction of the pixels to 0).
    Returns a new tensor of the same shape.
    """
    check_choice("noise", noise, NOISE_TYPES)
    check_positive("noise level", level, allow_zero=True)
    if noise == "none" or level == 0:
        return images.clone()
    if noise == "gaussian":
        return (images + level * torch.randn_like(images)).clamp(0.0, 1.0)
    if level >= 1:
        raise MtkitError(f"masking noise level is the fraction of pixels hidden; got {level}")
    keep = torch.rand_like(images) >= level
    return images * keep


def reconstruction_loss(model: nn.Module, batch, noise: str = "none", level: float = 0.0):
    """The autoencoder's loss for rebuilding the clean images from (noisy) copies of them.

    batch: a tuple whose first element is N×C×H×W images (labels, if any, are ignored).
    Uses `model.training_loss(inputs, targets)` when the model defines one (a VAE adds its KL
    term there), else the mean squared error.
    """
    images = batch[0]
    inputs = add_noise(images, noise, level)
    if hasattr(model, "training_loss"):
        return model.training_loss(inputs, images)
    return F.mse_loss(model(inputs), images)


def pretrain_autoencoder(
    model: nn.Module,
    images,
    *,
    noise: str = "none",
    noise_level: float = 0.3,
    epochs: int = 50,
    lr: float = 3e-3,
    batch_size: int = 64,
    val_images=None,
    **fit_options,
) -> History:
    """Train `model` to reconstruct `images` (an ImageDataset or an N×C×H×W tensor).

    Labels are never read: only the images go into training. Extra keyword arguments go to
    `mtkit.fit` (callbacks, weight_decay, schedule, seed, ...). Returns the History.
    """
    check_choice("noise", noise, NOISE_TYPES)
    check_positive("noise_level", noise_level, allow_zero=True)
    train = _images_only(images)
    val = None if val_images is None else _images_only(val_images)

    def loss_fn(model, batch):
        # Only corrupt while training: validation measures how well clean images are rebuilt.
        return reconstruction_loss(model, batch, noise if model.training else "none", noise_level)

    fit_options.update(epochs=epochs, lr=lr, batch_size=batch_size, val_data=val)
    return fit(model, loss_fn, train, **fit_options)


def reconstruction_error(model: nn.Module, images, batch_size: int = 512) -> float:
    """Mean squared reconstruction error of `model` over all images (clean inputs)."""
    data = _images_only(images)[0]

    def batch_error(chunk):  # one sum per batch, added up in the same order as always
        return F.mse_loss(model(chunk), chunk, reduction="sum").reshape(1)

    sums = forward_in_batches(model, data, batch_size=batch_size, fn=batch_error)
    return sum(sums.tolist()) / data.numel()


def _images_only(images) -> tuple[torch.Tensor]:
    """Accept an ImageDataset (labels dropped) or a tensor; return a 1-tuple of images."""
    if isinstance(images, torch.Tensor):
        tensor = images
    elif hasattr(images, "images"):
        tensor = images.images
    else:
        raise MtkitError(
            f"expected an ImageDataset or an N×C×H×W tensor of images, got {type(images).__name__}"
        )
    if tensor.dim() != 4 or len(tensor) == 0:
        raise MtkitError(f"expected a non-empty N×C×H×W image tensor, got {tuple(tensor.shape)}")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        nan, infinite = int(tensor.isnan().sum()), int(tensor.isinf().sum())
        raise MtkitError(
            f"the images hold {nan} NaN and {infinite} infinite pixel values: clean the data "
            "(e.g. torch.nan_to_num) before training"
        )
    return (tensor,)


# --- text ---------------------------------------------------------------------------------------


def pretrain_masked_tokens(
    model,
    token_ids: torch.Tensor,
    *,
    mask_rate: float = 0.15,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 128,
    val_ids: torch.Tensor | None = None,
    bucket_by_length: bool = True,
    **fit_options,
) -> History:
    """Masked-token pretraining (BERT): hide `mask_rate` of the tokens, learn to restore them.

    model: a `MaskedTokenModel`. token_ids: N×L int64 from `Tokenizer.encode` (labels, if any,
    are never used). Validation, if given, masks with a fixed seed so its loss is comparable
    between epochs. bucket_by_length: batch texts of similar length together (`LengthBuckets`),
    which makes an epoch of tweets about twice as fast and changes nothing else.
    Extra keyword arguments go to `mtkit.fit`. Returns the History, whose records include
    `train_accuracy`/`val_accuracy`: how often a hidden token was guessed.
    """
    if not isinstance(token_ids, torch.Tensor) or token_ids.dtype != torch.long:
        raise MtkitError("token_ids must be an N×L int64 tensor from Tokenizer.encode")
    config = model.encoder.config

    def corrupt(ids, generator=None):
        return mask_tokens(
            ids, mask_id=MASK_ID, vocab_size=config.vocab_size, rate=mask_rate, generator=generator
        )

    def loss_fn(model, batch):
        # Training batches are (ids,) and get fresh masks every time; validation batches arrive
        # already masked, once, so validation losses compare between epochs.
        inputs, targets = batch if len(batch) == 2 else corrupt(batch[0])
        loss, accuracy = model.loss(inputs, targets)
        return loss, {"accuracy": accuracy}

    val = None
    if val_ids is not None:
        val = corrupt(val_ids, torch.Generator().manual_seed(0))
    train = (token_ids,)
    if bucket_by_length:
        train = LengthBuckets(token_ids, batch_size=batch_size, pad_id=config.pad_id)
    fit_options.update(epochs=epochs, lr=lr, batch_size=batch_size, val_data=val)
    return fit(model, loss_fn, train, **fit_options)


def pretrain_bag_of_words(
    model,
    token_ids: torch.Tensor,
    *,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 256,
    val_ids: torch.Tensor | None = None,
    **fit_options,
) -> History:
    """Train a `BagOfWordsAutoencoder` to rebuild which words each text contains."""
    val = None if val_ids is None else (val_ids,)
    return fit(
        model,
        lambda model, batch: model.training_loss(batch[0]),
        (token_ids,),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        val_data=val,
        **fit_options,
    )


@dataclass(init=False)
class TextPretrainConfig:
    """Everything that determines a pretrained text encoder (and so its cache entry): the
    encoder's shape, and how masked-token pretraining trains it.

    encoder: the TextEncoder's shape. Its vocab_size is the most words the tokenizer keeps; the
        encoder gets the tokenizer's own size, which is smaller when the texts hold fewer words.
    The encoder's fields may also be given directly, `TextPretrainConfig(width=32, epochs=2)`
    (over those of `encoder`, when both are given), and read as `config.width`.
    """

    encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    mask_rate: float = 0.15
    epochs: int = 6
    lr: float = 2e-3
    batch_size: int = 128
    schedule: str | None = None  # or "cosine" / "one_cycle", as in `fit`
    seed: int = 0

    def __init__(self, encoder: TextEncoderConfig | None = None, **values):
        shape = {name: values.pop(name) for name in _ENCODER_FIELDS if name in values}
        encoder = TextEncoderConfig() if encoder is None else encoder
        self.encoder = replace(encoder, **shape) if shape else encoder
        defaults = {f.name: f.default for f in fields(self) if f.name != "encoder"}
        unknown = set(values) - set(defaults)
        if unknown:
            raise TypeError(f"TextPretrainConfig has no field {sorted(unknown)[0]!r}")
        for name, default in defaults.items():
            setattr(self, name, values.get(name, default))


_ENCODER_FIELDS = tuple(f.name for f in fields(TextEncoderConfig))


def _encoder_field(name: str) -> property:
    return property(lambda config: getattr(config.encoder, name), doc=f"`encoder.{name}`")


for _name in _ENCODER_FIELDS:  # config.width is config.encoder.width (read-only)
    setattr(TextPretrainConfig, _name, _encoder_field(_name))
del _name


def _finished(metadata: dict) -> bool:
    """False for a pretraining ended by Stop or a kernel interrupt: returned, never cached as
    the finished one."""
    return metadata["history"]["stopped_reason"] != "interrupted"


@dataclass
class PretrainedText:
    """What `pretrained_text_encoder` returns."""

    model: nn.Module  # the MaskedTokenModel (encoder + the head that guesses hidden words)
    tokenizer: object  # the Tokenizer whose ids the encoder understands
    history: History  # the pretraining run's History (also when read from the cache)
    from_cache: bool

    @property
    def encoder(self) -> nn.Module:
        """The pretrained TextEncoder: the part that fine-tuning keeps."""
        return self.model.encoder


def pretrained_text_encoder(
    texts,
    config: TextPretrainConfig | None = None,
    *,
    cache=None,
    progress: bool = True,
    callbacks=(),
) -> PretrainedText:
    """A TextEncoder pretrained with masked tokens on `texts`, cached on disk.

    texts: the unlabelled training texts (list of str, or a TextDataset). Never pass test texts.
    The cache entry is keyed by the config, the exact texts and the mtkit version; set
    `cache=False` to always train, or a folder to use instead of ~/.cache/mtkit.
    `callbacks` go to `fit` when training happens (a cache hit trains nothing).
    """
    from mtkit.core.cache import cache_dir, cache_key, fingerprint, load_or_build

    config = config or TextPretrainConfig()
    texts = list(texts.texts if hasattr(texts, "texts") else texts)
    if not texts:
        raise MtkitError("pretrained_text_encoder needs at least one text")

    def encoder_for(tokenizer):
        return TextEncoder(config.encoder, vocab_size=tokenizer.vocab_size)

    def build():
        seed_everything(config.seed)
        tokenizer = Tokenizer.fit(texts, max_vocab=config.vocab_size)
        model = MaskedTokenModel(encoder_for(tokenizer))
        history = pretrain_masked_tokens(
            model,
            tokenizer.encode(texts, max_length=config.max_length),
            mask_rate=config.mask_rate,
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            schedule=config.schedule,
            progress=progress,
            seed=config.seed,
            callbacks=callbacks,
        )
        metadata = {"tokenizer": tokenizer.to_dict(), "history": history.to_dict()}
        return model.state_dict(), metadata

    if cache is False:
        state_dict, metadata = build()
        from_cache = False
    else:
        key = cache_key(config=asdict(config), texts=fingerprint(texts), kind="masked_tokens")
        path = cache_dir(cache) / f"text-encoder-{key}.pt"
        state_dict, metadata, from_cache = load_or_build(path, key, build, keep=_finished)
    tokenizer = Tokenizer.from_dict(metadata["tokenizer"])
    model = MaskedTokenModel(encoder_for(tokenizer))
    model.load_state_dict(state_dict)
    return PretrainedText(model, tokenizer, History(**metadata["history"]), from_cache)


@torch.no_grad()
def fill_masks(model, tokenizer, text: str, top_k: int = 5, max_length: int = 48):
    """The model's guesses for every `<mask>` in `text`, e.g. "i <mask> this flight".

    Returns one list per `<mask>`, each of `top_k` (word, probability) pairs, best first.
    """
    check_positive("top_k", top_k, integer=True)
    pieces = text.split("<mask>")
    tokens = []
    for index, piece in enumerate(pieces):
        tokens += tokenizer.tokenize(piece)
        if index < len(pieces) - 1:
            tokens.append("<mask>")
    token_ids = [tokenizer.cls_id] + [
        tokenizer.token_to_id.get(t, tokenizer.unk_id) for t in tokens
    ]
    ids = torch.tensor([token_ids[:max_length]])
    positions = (ids[0] == tokenizer.mask_id).nonzero().flatten()
    if len(positions) == 0:
        raise MtkitError(f"no <mask> in {text!r}: write <mask> where a word should be guessed")

    def guesses_at_masks(batch):
        return torch.softmax(model(batch)[:, positions], dim=-1)

    probabilities = forward_in_batches(model, ids, fn=guesses_at_masks)[0]
    guesses = []
    for row in probabilities:
        row[: len(SPECIAL_TOKENS)] = 0  # never suggest a special token
        top = row.topk(top_k)
        guesses.append(
            [(tokenizer.tokens[i], float(p)) for p, i in zip(top.values, top.indices, strict=True)]
        )
    return guesses
