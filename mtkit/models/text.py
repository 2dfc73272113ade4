"""Text models: a small Transformer encoder, its masked-token pretraining head, and a
bag-of-words autoencoder as the simplest contrast.

Masked-token pretraining (BERT's objective) *is* a denoising autoencoder for text: hide some
tokens (the noise), ask the model to restore them (the reconstruction). Everything after
pretraining — `Classifier`, every fine-tuning strategy, LoRA, adapters — treats a `TextEncoder`
exactly like an image encoder: token ids in, an N×width feature vector out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mtkit.core.utils import MtkitError, check_choice
from mtkit.data.tokenizer import SPECIAL_IDS
from mtkit.models.autoencoders import Encoder


def check_vocabulary(token_ids: torch.Tensor, vocab_size: int, hint: str) -> None:
    """Raise MtkitError unless every id of N×L `token_ids` lies in [0, vocab_size); `hint` says
    what probably went wrong."""
    if len(token_ids) and (token_ids.min() < 0 or token_ids.max() >= vocab_size):
        raise MtkitError(f"token ids must lie in [0, {vocab_size}); {hint}")


@dataclass
class TextEncoderConfig:
    """Shape of a TextEncoder. Defaults are sized for a laptop CPU (about 0.6 M parameters with
    an 8k vocabulary, most of them in the token embeddings)."""

    vocab_size: int = 8000
    max_length: int = 48
    width: int = 64
    depth: int = 2
    heads: int = 4
    dropout: float = 0.1
    pooling: str = "mean"  # "mean" over real tokens, or "cls" (the first position)
    pad_id: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "max_length", "width", "depth", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise MtkitError(f"{name} must be a positive integer, got {value!r}")
        if self.width % self.heads:
            raise MtkitError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if not 0 <= self.dropout < 1:
            raise MtkitError(f"dropout must be in [0, 1), got {self.dropout}")
        check_choice("pooling", self.pooling, ("mean", "cls"))


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate `query`, `key`, `value` and `out` projections,
    named as in BERT so that LoRA can target `query` and `value` by name."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """hidden: N×L×D; padding: N×L bool, True where a position is padding. Returns N×L×D."""
        count, length, width = hidden.shape

        def split_heads(x):  # N×L×D → N×heads×L×(D/heads)
            return x.view(count, length, self.heads, width // self.heads).transpose(1, 2)

        query, key, value = (split_heads(f(hidden)) for f in (self.query, self.key, self.value))
        allowed = ~padding[:, None, None, :]  # every position may look at every real token
        mixed = F.scaled_dot_product_attention(
            query, key, value, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(mixed.transpose(1, 2).reshape(count, length, width))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads, dropout)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.dropout(self.attention(self.attention_norm(hidden), padding))
        return hidden + self.mlp(self.mlp_norm(hidden))


class TextEncoder(nn.Module):
    """Token ids N×L → pooled features N×width (also: `sequence` gives N×L×width).

    Layer groups, bottom to top: "embeddings", ("prompt" when set), "block0", ..., "final_norm".
    `prompt` may hold a module (see adapters.PromptTuning) that gets the token embeddings and
    the padding mask and returns longer ones with learned vectors in front.
    """

    # Where adapters go, in module names relative to this encoder (fnmatch patterns).
    # LoRA: the attention's query and value projections, as in the LoRA paper and in BERT.
    lora_targets = ("*.query", "*.value")
    # Bottleneck adapters: Houlsby et al.'s places, after the attention's output projection and
    # after the feed-forward layers, before each residual sum. (A whole block cannot be wrapped:
    # it takes the padding mask besides the hidden states.)
    bottleneck_places = ("blocks.*.attention.out", "blocks.*.mlp")

    def __init__(self, config: TextEncoderConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = TextEncoderConfig(**overrides)
        elif overrides:
            config = TextEncoderConfig(**{**asdict(config), **overrides})
        self.config = config
        self.output_size = config.width
        self.embeddings = TokenEmbeddings(config)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.width, config.heads, config.dropout)
            for _ in range(config.depth)
        )
        self.final_norm = nn.LayerNorm(config.width)
        self.prompt: nn.Module | None = None

    def sequence(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N×L ids → (N×L'×width hidden states, N×L' padding mask); L' = L plus any prompt."""
        self._check_ids(token_ids)
        padding = token_ids == self.config.pad_id
        hidden = self.embeddings(token_ids)
        if self.prompt is not None:
            hidden, padding = self.prompt(hidden, padding)
        for block in self.blocks:
            hidden = block(hidden, padding)
        return self.final_norm(hidden), padding

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        self._check_ids(token_ids)  # before trimming, so too-long input is still reported
        hidden, padding = self.sequence(trim_padding(token_ids, self.config.pad_id))
        if self.config.pooling == "cls":
            return hidden[:, 0]
        real = (~padding).unsqueeze(-1).to(hidden.dtype)
        return (hidden * real).sum(dim=1) / real.sum(dim=1).clamp_min(1.0)

    @property
    def token_embedding(self) -> nn.Embedding:
        """The vocabulary×width token embedding (its rows can start prompt-tuning vectors)."""
        return self.embeddings.token

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        groups = [("embeddings", self.embeddings)]
        if self.prompt is not None:  # prompt tuning's vectors sit between embeddings and blocks
            groups.append(("prompt", self.prompt))
        groups += [(f"block{index}", block) for index, block in enumerate(self.blocks)]
        return groups + [("final_norm", self.final_norm)]

    def _check_ids(self, token_ids: torch.Tensor) -> None:
        if token_ids.dim() != 2 or token_ids.dtype != torch.long:
            raise MtkitError(
                f"TextEncoder expects an N×L int64 tensor of token ids (Tokenizer.encode), got "
                f"{tuple(token_ids.shape)} {token_ids.dtype}"
            )
        if token_ids.shape[1] > self.config.max_length:
            raise MtkitError(
                f"texts of {token_ids.shape[1]} tokens are longer than max_length="
                f"{self.config.max_length}; encode with max_length={self.config.max_length}"
            )
        check_vocabulary(token_ids, self.config.vocab_size, "encoded with another tokenizer?")


def trim_padding(token_ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Drop the columns that are padding in every row: N×L ids → N×L' ids, L' ≤ L.

    Padding comes last and no real token attends to it, so the trimmed columns cannot change any
    real token's output; but attention costs grow with L², and most tweets fill less than half
    of the 48 positions. With batches of similar lengths (see `LengthBuckets`) this is the
    largest speed-up there is on a CPU.
    """
    real = (token_ids != pad_id).any(dim=0).nonzero()
    length = int(real[-1]) + 1 if len(real) else 1
    return token_ids[:, :length]


class TokenEmbeddings(nn.Module):
    """Token embedding + learned position embedding: N×L ids → N×L×width."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.width, padding_idx=config.pad_id)
        self.position = nn.Embedding(config.max_length, config.width)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Small vectors (BERT's 0.02), not PyTorch's N(0, 1): the output layer reuses these
        # vectors, and unit-size ones would start it with huge, overconfident logits.
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        with torch.no_grad():
            self.token.weight[self.token.padding_idx].zero_()

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        return self.dropout(self.token(token_ids) + self.position(positions))


class MaskedTokenModel(nn.Module):
    """A TextEncoder plus a head that guesses, at every position, which token belongs there.

    forward(token_ids N×L) returns N×L×vocab_size logits. The output layer shares its weights
    with the token embeddings ("tied"), as in BERT: a word's input and output vectors are one.
    """

    def __init__(self, encoder: TextEncoder):
        super().__init__()
        self.encoder = encoder
        width = encoder.config.width
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.output_bias = nn.Parameter(torch.zeros(encoder.config.vocab_size))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.encoder.sequence(token_ids)
        return self.word_logits(hidden)

    def word_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """...×width hidden states → ...×vocab_size logits."""
        token_vectors = self.encoder.embeddings.token.weight  # V×width, shared with the input
        return F.linear(self.transform(hidden), token_vectors, self.output_bias)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor):
        """Masked-token loss and accuracy (both scalars) for corrupted `inputs` (N×L) and
        `targets` (N×L, -100 where nothing was hidden).

        Only the hidden positions go through the output layer: with an 8k vocabulary that layer
        is most of the work, and the other 85% of positions would be thrown away anyway.
        """
        self.encoder._check_ids(inputs)
        inputs = trim_padding(inputs, self.encoder.config.pad_id)
        targets = targets[:, : inputs.shape[1]]  # the trimmed columns hold nothing to guess
        hidden, _ = self.encoder.sequence(inputs)
        chosen = targets != -100
        if not chosen.any():
            zero = hidden.sum() * 0.0  # keeps the graph, so backward() still works
            return zero, torch.zeros((), device=hidden.device)
        logits = self.word_logits(hidden[chosen])
        wanted = targets[chosen]
        accuracy = (logits.argmax(-1) == wanted).float().mean()
        return F.cross_entropy(logits, wanted), accuracy


def mask_tokens(
    token_ids: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: tuple[int, ...] = SPECIAL_IDS,
    rate: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption: choose `rate` of the real tokens; of those, 80% become <mask>, 10% a
    random token, 10% stay as they are. Padding and special tokens are never chosen.

    token_ids: N×L int64. Returns (inputs N×L, targets N×L) where targets hold the original id at
    chosen positions and -100 (ignored by cross_entropy) everywhere else.
    """
    if not 0 < rate < 1:
        raise MtkitError(f"the masking rate is a fraction in (0, 1), got {rate}")
    if vocab_size <= max(special_ids) + 1:
        raise MtkitError(
            f"vocab_size={vocab_size} leaves no ordinary words after the special ids "
            f"{special_ids}: random replacements need at least one"
        )
    device = token_ids.device

    def uniform(shape):
        return torch.rand(shape, generator=generator, device="cpu").to(device)

    maskable = torch.ones_like(token_ids, dtype=torch.bool)
    for special in special_ids:
        maskable &= token_ids != special
    chosen = maskable & (uniform(token_ids.shape) < rate)
    targets = torch.where(chosen, token_ids, torch.full_like(token_ids, -100))
    roll = uniform(token_ids.shape)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    low = max(special_ids) + 1  # random replacements are ordinary words, never specials
    random_ids = (low + (uniform(token_ids.shape) * (vocab_size - low)).long()).clamp_max(
        vocab_size - 1
    )
    inputs = torch.where(to_mask, torch.full_like(token_ids, mask_id), token_ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, targets


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the chosen positions only (targets == -100 elsewhere).

    logits: N×L×V; targets: N×L. Returns a scalar.
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )


class BagOfWords(nn.Module):
    """Token ids N×L → N×vocab_size binary bag of words (which words occur); no parameters."""

    def __init__(self, vocab_size: int, ignore_ids: tuple[int, ...] = SPECIAL_IDS):
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("ignore", torch.tensor(ignore_ids, dtype=torch.long), persistent=False)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        bag = torch.zeros(len(token_ids), self.vocab_size, device=token_ids.device)
        bag.scatter_(1, token_ids, 1.0)
        bag[:, self.ignore] = 0.0
        return bag


@dataclass
class BagOfWordsConfig:
    vocab_size: int = 8000
    hidden_size: int = 256
    latent_size: int = 64

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise MtkitError(f"{name} must be a positive integer, got {value!r}")


class BagOfWordsAutoencoder(nn.Module):
    """The simplest text autoencoder: which words occur → a short code → which words occur.

    Word order is thrown away, so it can only learn which words go together — a useful contrast
    to the Transformer. `encoder` takes token ids (N×L) and returns N×latent_size codes.
    """

    def __init__(self, config: BagOfWordsConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = BagOfWordsConfig(**overrides)
        elif overrides:
            config = BagOfWordsConfig(**{**asdict(config), **overrides})
        self.config = config
        vocab_size, hidden_size, latent_size = (
            config.vocab_size,
            config.hidden_size,
            config.latent_size,
        )
        self.bag = BagOfWords(vocab_size)
        self.encoder = Encoder(
            {
                "bag": self.bag,
                "block0": nn.Sequential(nn.Linear(vocab_size, hidden_size), nn.ReLU()),
                "latent": nn.Linear(hidden_size, latent_size),
            },
            latent_size,
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, vocab_size)
        )

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """N×L ids → N×vocab_size logits of each word being present."""
        return self.decoder(self.encoder(token_ids))

    def training_loss(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy between predicted and actual word presence, summed over the
        vocabulary and averaged over texts (a per-word mean would be swamped by absent words)."""
        logits = self(token_ids)
        bag = self.bag(token_ids)
        return F.binary_cross_entropy_with_logits(logits, bag, reduction="sum") / len(token_ids)
