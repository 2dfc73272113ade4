"""mtkit: multi-stage training for learners. `import mtkit as mt` gives the whole public API."""

from mtkit import adapters, evaluate, experiments, plots
from mtkit.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    save_model,
)
from mtkit.data import (
    DatasetUnavailable,
    FewLabelSplit,
    ImageDataset,
    TextDataset,
    Tokenizer,
    few_labels,
    load_images,
    load_text,
)
from mtkit.finetune import FineTuneResult, Forgetting, fine_tune, forgetting, predict
from mtkit.models import (
    AutoencoderConfig,
    BagOfWordsAutoencoder,
    Classifier,
    ConvAutoencoder,
    DenseAutoencoder,
    DenseAutoencoderConfig,
    MaskedTokenModel,
    TextEncoder,
    VariationalAutoencoder,
    build_autoencoder,
)
from mtkit.pretrain import (
    PretrainedText,
    TextPretrainConfig,
    add_noise,
    pretrain_autoencoder,
    pretrain_bag_of_words,
    pretrain_masked_tokens,
    pretrained_text_encoder,
    reconstruction_error,
)
from mtkit.selftrain import SelfTrainResult, self_train
from mtkit.train import (
    Callback,
    Checkpoint,
    EarlyStopping,
    History,
    LambdaCallback,
    TrainingDiverged,
    fit,
)
from mtkit.utils import MtkitError, get_device, seed_everything
from mtkit.widgets import HyperparameterPanel, hyperparameter

__version__ = "0.1.0"

__all__ = [
    "Forgetting",
    "experiments",
    "forgetting",
    "adapters",
    "PretrainedText",
    "TextPretrainConfig",
    "TextEncoder",
    "BagOfWordsAutoencoder",
    "MaskedTokenModel",
    "pretrain_bag_of_words",
    "pretrain_masked_tokens",
    "pretrained_text_encoder",
    "build_autoencoder",
    "evaluate",
    "AutoencoderConfig",
    "Classifier",
    "ConvAutoencoder",
    "FineTuneResult",
    "SelfTrainResult",
    "VariationalAutoencoder",
    "fine_tune",
    "plots",
    "predict",
    "self_train",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "DatasetUnavailable",
    "DenseAutoencoder",
    "DenseAutoencoderConfig",
    "EarlyStopping",
    "FewLabelSplit",
    "History",
    "HyperparameterPanel",
    "ImageDataset",
    "LambdaCallback",
    "MtkitError",
    "TextDataset",
    "Tokenizer",
    "TrainingDiverged",
    "add_noise",
    "few_labels",
    "fit",
    "get_device",
    "hyperparameter",
    "load_checkpoint",
    "load_model_state",
    "load_images",
    "load_text",
    "pretrain_autoencoder",
    "reconstruction_error",
    "save_checkpoint",
    "save_model",
    "seed_everything",
]
