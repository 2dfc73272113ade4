"""Forgetting for text: the masked-token loss before and after fine-tuning.

    masked_token_error(pretrained, split.test)                        # the pretraining loss
    masked_token_forgetting(pretrained, classifier, split.test)       # before / after / weights

The text counterpart of `mtkit.forgetting` (reconstruction error) for autoencoders: a text
encoder learned by restoring hidden tokens, so how well it still restores them after
fine-tuning measures what fine-tuning cost it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mtkit.core.batches import forward_in_batches
from mtkit.core.checks import check_number
from mtkit.core.utils import MtkitError, check_positive
from mtkit.evaluation.forgetting import Forgetting, relative_change
from mtkit.evaluation.inputs import unlabelled_inputs


def _masked_model_and_tokenizer(pretrained, tokenizer):
    """(MaskedTokenModel, tokenizer) of a PretrainedText (model + tokenizer) or a bare
    MaskedTokenModel (then `tokenizer` as given, possibly None)."""
    if hasattr(pretrained, "model") and hasattr(pretrained, "tokenizer"):
        return pretrained.model, tokenizer or pretrained.tokenizer
    if not hasattr(pretrained, "loss") or not hasattr(pretrained, "encoder"):
        raise MtkitError(
            "expected the masked-token model: a PretrainedText or a MaskedTokenModel, "
            f"got {type(pretrained).__name__}"
        )
    return pretrained, tokenizer


def masked_token_error(
    pretrained,
    data,
    *,
    tokenizer=None,
    mask_rate: float = 0.15,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """Mean cross-entropy of restoring hidden tokens: the text model's pretraining loss.

    pretrained: a PretrainedText or a MaskedTokenModel. data: N×L token ids, a TextDataset (with
    `tokenizer`, taken from a PretrainedText by default) or an (ids, labels) tuple.
    Tokens are hidden with BERT's scheme at `mask_rate`, with a fixed `seed`, so two models
    scored with the same seed face exactly the same blanks. Returns a float; lower is better.
    """
    from mtkit.models.text import mask_tokens

    model, tokenizer = _masked_model_and_tokenizer(pretrained, tokenizer)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("seed", seed, integer=True, allow_zero=True)
    check_number("mask_rate", mask_rate, low=0, high=1, low_open=True, high_open=True)
    config = model.encoder.config
    ids = unlabelled_inputs(data, model, tokenizer, config.max_length)
    if ids.dtype != torch.long or ids.dim() != 2 or len(ids) == 0:
        raise MtkitError(f"expected N×L int64 token ids, got {tuple(ids.shape)} {ids.dtype}")
    mask_id = tokenizer.mask_id if tokenizer is not None else 2  # the Tokenizer's fixed id
    inputs, targets = mask_tokens(
        ids,
        mask_id=mask_id,
        vocab_size=config.vocab_size,
        rate=mask_rate,
        generator=torch.Generator().manual_seed(seed),
    )

    def batch_loss(pairs: torch.Tensor) -> torch.Tensor:
        """pairs: B×2×L (corrupted ids, targets) → B×2 rows (the batch's mean loss, the row's
        hidden tokens). model.loss averages over a whole batch (trimmed to its longest text),
        so the loss is only defined per batch and is repeated on each row."""
        batch_inputs, batch_targets = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
        rows = torch.zeros(len(pairs), 2, device=pairs.device)
        rows[:, 1] = (batch_targets != -100).sum(dim=1)
        if rows[:, 1].any():  # a batch with nothing hidden has no loss
            rows[:, 0] = model.loss(batch_inputs, batch_targets)[0]
        return rows

    rows = forward_in_batches(
        model, torch.stack([inputs, targets], dim=1), batch_size=batch_size, fn=batch_loss
    )
    total, hidden = 0.0, 0
    for batch in rows.split(batch_size):  # the batches forward_in_batches ran, in order
        count = int(batch[:, 1].sum())
        if count:
            total += float(batch[0, 0]) * count
            hidden += count
    if hidden == 0:
        raise MtkitError("no token was hidden: the texts are empty or mask_rate is too small")
    return total / hidden


def masked_token_forgetting(
    pretrained, classifier: nn.Module, data, *, tokenizer=None, mask_rate: float = 0.15, seed=0
) -> Forgetting:
    """How far fine-tuning moved a text encoder away from its masked-token pretraining.

    pretrained: the PretrainedText (or MaskedTokenModel) the classifier's encoder was copied
        from; left untouched. classifier: a Classifier whose encoder has the same architecture.
    data: texts to score (e.g. the test TextDataset; labels unused).
    Returns mtkit's Forgetting with before/after = masked-token cross-entropy of the pretrained
    model and of the same model with the fine-tuned encoder put in (the output layer shares the
    token embeddings, so it uses the fine-tuned ones), and the encoder's relative weight change.
    """
    model, tokenizer = _masked_model_and_tokenizer(pretrained, tokenizer)
    if not hasattr(classifier, "encoder"):
        raise MtkitError("expected a Classifier (an encoder with a head)")
    weight_change = relative_change(model.encoder, classifier.encoder)
    after_model = copy.deepcopy(model)
    after_model.encoder = copy.deepcopy(classifier.encoder).to(next(model.parameters()).device)
    options = dict(tokenizer=tokenizer, mask_rate=mask_rate, seed=seed)
    return Forgetting(
        before=masked_token_error(model, data, **options),
        after=masked_token_error(after_model, data, **options),
        weight_change=weight_change,
    )


__all__ = ["masked_token_error", "masked_token_forgetting"]
