"""mtkit: multi-stage training for learners. `import mtkit as mt` gives the whole public API."""

from mtkit import _moved, evaluation, experiments, models, pipeline, plots, stages
from mtkit.core.checkpoint import (
    CheckpointError,
    DiskFullError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    save_model,
)
from mtkit.core.loggers import CSVLogger, TensorBoardLogger
from mtkit.core.train import (
    Callback,
    Checkpoint,
    EarlyStopping,
    History,
    LambdaCallback,
    TrainingDiverged,
    fit,
)
from mtkit.core.utils import MtkitError, get_device, seed_everything
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
from mtkit.evaluation.drift import detect_drift
from mtkit.evaluation.forgetting import Forgetting, forgetting
from mtkit.evaluation.metrics import (
    ClassErrors,
    ClassificationReport,
    Evaluation,
    Mistake,
    ReliabilityCurve,
    TemperatureScaled,
    class_errors,
    classification_report,
    confident_mistakes,
    expected_calibration_error,
    fit_temperature,
    masked_token_error,
    masked_token_forgetting,
    mistakes_table,
    reliability_curve,
)
from mtkit.evaluation.metrics import evaluate as evaluate_model
from mtkit.evaluation.stats import (
    Comparison,
    ConfidenceInterval,
    PairedComparison,
    Spread,
    bootstrap_ci,
    compare,
    mean_and_spread,
    paired_comparison,
)
from mtkit.experiments.distill import DistilledMethod, TrainedOnce, footprint
from mtkit.experiments.pretrained import PretrainedTransformerMethod, embed_texts
from mtkit.experiments.setfit import SetFitMethod
from mtkit.models import (
    AutoencoderConfig,
    BagOfWordsAutoencoder,
    Classifier,
    ConvAutoencoder,
    DenseAutoencoder,
    MaskedTokenModel,
    TextEncoder,
    VariationalAutoencoder,
    build_autoencoder,
)
from mtkit.models.pretrained import (
    PretrainedTextEncoder,
    PretrainedTextModel,
    WordPieceTokenizer,
    load_pretrained_text_encoder,
)
from mtkit.models.summary import ModelSummary, summary
from mtkit.notebook.panel import HyperparameterPanel, hyperparameter
from mtkit.pipeline import (
    ExitCriteria,
    Pipeline,
    PipelineConfig,
    Run,
    RunContext,
    Stage,
    StageOutput,
    TargetReached,
    compare_runs,
    load_config,
    rollback,
    run_config,
    staged_search,
)
from mtkit.stages import adapters
from mtkit.stages.consistency import consistency_train
from mtkit.stages.contrastive import ContrastiveModel, nt_xent_loss, pretrain_contrastive
from mtkit.stages.distill import distill, distillation_loss
from mtkit.stages.domain_adapt import DomainAdaptConfig, domain_adapted_encoder, masked_word_guesses
from mtkit.stages.finetune import (
    STRATEGIES,
    FineTuneResult,
    copy_encoder,
    fine_tune,
    predict,
)
from mtkit.stages.lr_find import LRFinderResult, lr_find
from mtkit.stages.pretrain import (
    PretrainedText,
    TextPretrainConfig,
    add_noise,
    pretrain_autoencoder,
    pretrain_bag_of_words,
    pretrain_masked_tokens,
    pretrained_text_encoder,
    reconstruction_error,
)
from mtkit.stages.selftrain import SelfTrainResult, self_train
from mtkit.stages.setfit import contrastive_fine_tune, cosine_similarity_loss, sentence_pairs
from mtkit.stages.shift import adapt_to_shift

__version__ = "0.1.0"

_moved.install()


def __getattr__(name: str):
    """`mt.finetune`, `mt.stats`, ... (old module names) and `mt.DenseAutoencoderConfig`:
    answered with a DeprecationWarning."""
    if name == "DenseAutoencoderConfig":
        return models.autoencoders.renamed(name, "mtkit")
    new = _moved.new_name(f"mtkit.{name}")
    if new is None:
        raise AttributeError(f"module 'mtkit' has no attribute {name!r}")
    _moved.warn_moved(f"mtkit.{name}", new)
    import importlib

    return importlib.import_module(new)


__all__ = [
    "consistency_train",
    "ContrastiveModel",
    "nt_xent_loss",
    "pretrain_contrastive",
    "STRATEGIES",
    "copy_encoder",
    "evaluation",
    "stages",
    "pipeline",
    "PretrainedTextEncoder",
    "PretrainedTextModel",
    "WordPieceTokenizer",
    "load_pretrained_text_encoder",
    "PretrainedTransformerMethod",
    "embed_texts",
    "SetFitMethod",
    "DistilledMethod",
    "TrainedOnce",
    "footprint",
    "sentence_pairs",
    "cosine_similarity_loss",
    "contrastive_fine_tune",
    "distill",
    "distillation_loss",
    "DomainAdaptConfig",
    "domain_adapted_encoder",
    "masked_word_guesses",
    "adapt_to_shift",
    "detect_drift",
    "ClassErrors",
    "ClassificationReport",
    "Evaluation",
    "Mistake",
    "ReliabilityCurve",
    "TemperatureScaled",
    "class_errors",
    "classification_report",
    "confident_mistakes",
    "expected_calibration_error",
    "fit_temperature",
    "masked_token_error",
    "masked_token_forgetting",
    "mistakes_table",
    "reliability_curve",
    "evaluate_model",
    "ExitCriteria",
    "Pipeline",
    "PipelineConfig",
    "Run",
    "RunContext",
    "Stage",
    "StageOutput",
    "TargetReached",
    "compare_runs",
    "load_config",
    "rollback",
    "run_config",
    "staged_search",
    "Comparison",
    "ConfidenceInterval",
    "PairedComparison",
    "Spread",
    "bootstrap_ci",
    "compare",
    "mean_and_spread",
    "paired_comparison",
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
    "DiskFullError",
    "DatasetUnavailable",
    "DenseAutoencoder",
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
    "CSVLogger",
    "TensorBoardLogger",
    "LRFinderResult",
    "lr_find",
    "ModelSummary",
    "summary",
]
