"""Models: autoencoders whose encoders get fine-tuned later, and the classifier that does it."""

from mtkit.models import autoencoders
from mtkit.models.autoencoders import (
    AUTOENCODERS,
    AutoencoderConfig,
    ConvAutoencoder,
    DenseAutoencoder,
    Encoder,
    VariationalAutoencoder,
    build_autoencoder,
    vae_loss_terms,
)
from mtkit.models.classifier import Classifier
from mtkit.models.summary import LayerRow, ModelSummary
from mtkit.models.text import (
    BagOfWordsAutoencoder,
    BagOfWordsConfig,
    MaskedTokenModel,
    TextEncoder,
    TextEncoderConfig,
    mask_tokens,
    masked_token_loss,
)

__all__ = [
    "BagOfWordsAutoencoder",
    "BagOfWordsConfig",
    "MaskedTokenModel",
    "TextEncoder",
    "TextEncoderConfig",
    "mask_tokens",
    "masked_token_loss",
    "AUTOENCODERS",
    "build_autoencoder",
    "AutoencoderConfig",
    "Classifier",
    "LayerRow",
    "ModelSummary",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "Encoder",
    "VariationalAutoencoder",
    "vae_loss_terms",
]


def __getattr__(name: str):
    """Old names (DenseAutoencoderConfig): answered with a DeprecationWarning."""
    return autoencoders.renamed(name, __name__)
