"""Classifier: a linear head on top of any encoder.

The encoder is the part that pretraining taught; the head is new and learns from the labels.
Fine-tuning strategies decide which of the two (and which blocks of the encoder) may change.
"""

from __future__ import annotations

import torch
from torch import nn

from mtkit.core.batches import forward_in_batches
from mtkit.core.utils import MtkitError


class Classifier(nn.Module):
    """encoder → feature standardisation → dropout → linear head.

    encoder: any module mapping a batch of inputs to N×feature_size features. Its size is read
        from `encoder.output_size` unless `feature_size` is given.
    forward(inputs) returns N×num_classes logits.

    The features are standardised with a mean and spread stored as buffers (identity until
    `standardize_features` sets them from unlabelled data): pretrained codes can have any scale,
    and a head learns from few labels far better on standardised inputs.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        dropout: float = 0.0,
        feature_size: int | None = None,
    ):
        super().__init__()
        feature_size = feature_size or getattr(encoder, "output_size", None)
        if not isinstance(feature_size, int) or feature_size < 1:
            raise MtkitError(
                "cannot tell how many features the encoder outputs: give feature_size=... or use "
                "an encoder with an `output_size` attribute (every mtkit encoder has one)"
            )
        if not isinstance(num_classes, int) or num_classes < 2:
            raise MtkitError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not 0 <= dropout < 1:
            raise MtkitError(f"dropout must be in [0, 1), got {dropout}")
        self.encoder = encoder
        self.feature_size = feature_size
        self.num_classes = num_classes
        self.register_buffer("feature_mean", torch.zeros(feature_size))
        self.register_buffer("feature_std", torch.ones(feature_size))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_size, num_classes)

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """N×... inputs → N×feature_size standardised features."""
        return (self.encoder(inputs) - self.feature_mean) / self.feature_std

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(inputs)))

    @torch.no_grad()
    def standardize_features(self, inputs: torch.Tensor, batch_size: int = 1024) -> Classifier:
        """Set the feature mean and spread from `inputs`, e.g. the unlabelled pool; returns self."""
        codes = forward_in_batches(self, inputs, batch_size=batch_size, fn=self.encoder)
        codes = codes.to(self.feature_mean.device)  # the statistics on the model's device
        self.feature_mean.copy_(codes.mean(dim=0))
        # A floor keeps dead features (spread 0) from dividing by zero.
        self.feature_std.copy_(codes.std(dim=0).clamp_min(1e-4))
        return self

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """[(name, module), ...] bottom to top: the encoder's groups, then "head"."""
        if hasattr(self.encoder, "layer_groups"):
            groups = list(self.encoder.layer_groups())
        else:
            groups = [
                (name, child)
                for name, child in self.encoder.named_children()
                if any(True for _ in child.parameters())
            ]
        return [(f"encoder.{name}", module) for name, module in groups] + [("head", self.head)]
