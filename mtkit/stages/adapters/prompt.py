"""Prompt tuning (Lester et al., 2021): learned "words" in front of the input.

For a transformer, an input is a sequence of token embeddings, N×T×D. Prompt tuning prepends P
learned vectors to every sequence (N×(P+T)×D); the frozen transformer attends to them like to
any token, and training only those P·D numbers steers it towards the task. Nothing inside the
transformer changes, so one model serves every task: only the prepended vectors differ.

    SoftPrompt     the P×D learned vectors of one task
    PromptTuning   a slot between the embeddings and the transformer that prepends the active
                   task's vectors (an AdaptedModule, see wrapper.py)
    add_prompt     put a prompt into a text classifier, as add_lora puts LoRA in
"""

from __future__ import annotations

import torch
from torch import nn

from mtkit.core.utils import MtkitError, check_positive
from mtkit.stages.adapters.tasks import freeze_base
from mtkit.stages.adapters.wrapper import AdaptedModule


class SoftPrompt(nn.Module):
    """P learned vectors of width D (`vectors`, P×D), initialised like nn.Embedding rows."""

    def __init__(self, num_prompts: int, embedding_dim: int):
        super().__init__()
        check_positive("num_prompts", num_prompts, integer=True)
        check_positive("embedding_dim", embedding_dim, integer=True)
        self.config = {"num_prompts": num_prompts}
        self.vectors = nn.Parameter(torch.randn(num_prompts, embedding_dim))


class PromptTuning(AdaptedModule):
    """Prepends the active adapter's prompt vectors to a batch of token embeddings.

    Put it in a model between the token embeddings (plus position embeddings: prompts have no
    position) and the transformer; mtkit's TextEncoder has a `prompt` slot for it.
    embedding_dim: D. num_prompts: P of a first prompt called `adapter_name` (None: start
    without one); `add(name, num_prompts=...)` adds more.
    forward(embeddings N×T×D, padding N×T bool or None; True marks padding, as in
    nn.TransformerEncoder) → (N×(P+T)×D embeddings, N×(P+T) padding or None): prompt
    positions are never padding. With no active prompt both come back unchanged.
    """

    kind = "prompt"

    def __init__(self, embedding_dim: int, num_prompts: int | None = 8, adapter_name="default"):
        super().__init__(nn.Identity())
        self.embedding_dim = check_positive("embedding_dim", embedding_dim, integer=True)
        if num_prompts is not None:
            self.add(adapter_name, num_prompts=num_prompts)
            self.active_adapter = adapter_name

    def add(self, name: str, num_prompts: int = 8) -> SoftPrompt:
        return self._add(name, SoftPrompt(num_prompts, self.embedding_dim))

    @property
    def num_prompts(self) -> int:
        """How many vectors forward prepends now (0 without an active prompt)."""
        return 0 if self.active is None else self.active.vectors.shape[0]

    def forward(self, embeddings: torch.Tensor, padding: torch.Tensor | None = None):
        if embeddings.dim() != 3 or embeddings.shape[-1] != self.embedding_dim:
            raise MtkitError(
                f"PromptTuning expects token embeddings N×T×{self.embedding_dim}, "
                f"got {tuple(embeddings.shape)}"
            )
        if padding is not None and padding.shape != embeddings.shape[:2]:
            raise MtkitError(
                f"padding must be N×T = {tuple(embeddings.shape[:2])}, got {tuple(padding.shape)}"
            )
        if self.active is None:
            return embeddings, padding
        count = len(embeddings)
        prompts = self.active.vectors.to(embeddings.dtype).expand(count, -1, -1)
        embeddings = torch.cat([prompts, embeddings], dim=1)
        if padding is not None:
            padding = torch.cat([padding.new_zeros(count, self.num_prompts), padding], dim=1)
        return embeddings, padding

    @torch.no_grad()
    def initialize_from(self, embedding: nn.Embedding, generator=None) -> None:
        """Start the active prompt from random rows of a vocabulary (Lester et al. found that
        trains better than random vectors): each prompt vector copies one token's embedding."""
        if self.active is None:
            raise MtkitError("no active prompt to initialise")
        rows = torch.randint(0, embedding.num_embeddings, (self.num_prompts,), generator=generator)
        self.active.vectors.copy_(embedding.weight[rows.to(embedding.weight.device)])


def add_prompt(model: nn.Module, num_prompts: int = 8, adapter_name: str = "default") -> SoftPrompt:
    """Give a text classifier's encoder a learned prompt of `num_prompts` vectors (in place).

    model: a Classifier whose encoder has a `prompt` slot and a `token_embedding` (mtkit's
        TextEncoder and PretrainedTextEncoder). The vectors start as random rows of that
        vocabulary (Lester et al. found that trains better than random vectors).
    As with add_lora, the prompt becomes the active adapter and the only thing that trains
    (freeze_base). Returns the new SoftPrompt.
    """
    encoder = getattr(model, "encoder", None)
    embedding = getattr(encoder, "token_embedding", None)
    if not hasattr(encoder, "prompt") or not isinstance(embedding, nn.Embedding):
        raise MtkitError(
            "prompt tuning needs a classifier whose encoder has a `prompt` slot and a "
            f"`token_embedding` (a text encoder); {type(encoder).__name__} has not"
        )
    if encoder.prompt is None:
        encoder.prompt = PromptTuning(embedding.embedding_dim, None)
    prompt = encoder.prompt.add(adapter_name, num_prompts=num_prompts)
    encoder.prompt.active_adapter = adapter_name
    encoder.prompt.initialize_from(embedding)
    freeze_base(model)
    return prompt
