"""Models: autoencoders whose encoders get fine-tuned later, and the classifier that does it."""

from mtkit.models.autoencoders import (
    AUTOENCODERS,
    AutoencoderConfig,
    ConvAutoencoder,
    DenseAutoencoder,
    DenseAutoencoderConfig,
    Encoder,
    VariationalAutoencoder,
    build_autoencoder,
    vae_loss_terms,
)
from mtkit.models.classifier import Classifier

__all__ = [
    "AUTOENCODERS",
    "build_autoencoder",
    "AutoencoderConfig",
    "Classifier",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "DenseAutoencoderConfig",
    "Encoder",
    "VariationalAutoencoder",
    "vae_loss_terms",
]
