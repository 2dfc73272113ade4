"""Pipeline configuration: dataclasses, read from TOML with a readable error per field.

A config file has a few top-level fields and one [section] per part:

    name = "digits"
    stages = ["pretrain", "finetune", "adapt"]

    [data]
    dataset = "digits"
    labels_per_class = 10

    [finetune]
    strategy = "full"
    patience = 20

Every field is optional (absent: its default). `python -m mtkit run --help` lists them all,
generated from the `option(...)` help texts below, so the two never disagree. Reading, writing
and describing such dataclasses is config_fields.py's job.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mtkit.core.files import check_name, load_toml
from mtkit.core.utils import MtkitError, check_choice, check_positive
from mtkit.pipeline.config_fields import (
    check_fields,
    describe_fields,
    option,
    read_section,
    to_toml,
)
from mtkit.pipeline.exit import ExitCriteria
from mtkit.stages.finetune import STRATEGIES

__all__ = [  # option, read_section and to_toml (config_fields.py) are importable from here too
    "AdaptConfig",
    "DataConfig",
    "FineTuneConfig",
    "PipelineConfig",
    "PretrainConfig",
    "check_file_name",
    "config_from_dict",
    "describe_config",
    "exit_criteria",
    "load_config",
    "option",
    "read_section",
    "to_toml",
]

DATASETS = ("digits", "tweets")
STAGE_NAMES = ("pretrain", "finetune", "adapt")
PRETRAIN_METHODS = ("autoencoder", "denoising_autoencoder", "vae", "masked_tokens")
ADAPT_METHODS = ("lora", "bottleneck")
SCHEDULES = ("none", "cosine", "one_cycle")
CLASSIFIER_METRICS = ("val_loss", "val_accuracy")


# The one check of names that become file or folder names (mtkit.core.files.check_name),
# under the name the pipeline has always used for it.
check_file_name = check_name


# The exit-criteria fields every stage section has (see ExitCriteria).
EXIT_HELP = {
    "max_epochs": "exit criterion: the most epochs the stage trains",
    "patience": "exit criterion: stop after this many epochs without progress on `monitor` "
    "(0: no early stopping)",
    "monitor": "the metric early stopping watches and the kept epoch is chosen by",
    "target": "exit criterion: stop once `target_metric` reaches this value (absent: no target)",
    "target_metric": "what `target` is compared with (reached: >= for accuracy, <= for loss)",
}


def _check_types(section) -> None:
    """Every field of `section` has its type, as a TOML file's would (config_fields)."""
    if getattr(section, "patience", 0) is None:  # Python callers may say None; TOML has 0
        section.patience = 0
    check_fields(section)


def _check_exit_fields(section) -> None:
    name = section.section
    check_positive(f"{name}.max_epochs", section.max_epochs, integer=True)
    check_positive(f"{name}.patience", section.patience, integer=True, allow_zero=True)


def _check_classifier_training(section) -> None:
    """The fields a stage that trains a classifier has: lr, weight decay, batch size, the
    metrics it watches, and its exit fields."""
    name = section.section
    if section.lr is not None:
        check_positive(f"{name}.lr", section.lr)
    check_positive(f"{name}.weight_decay", section.weight_decay, allow_zero=True)
    check_positive(f"{name}.batch_size", section.batch_size, integer=True)
    check_choice(f"{name}.monitor", section.monitor, CLASSIFIER_METRICS)
    check_choice(f"{name}.target_metric", section.target_metric, CLASSIFIER_METRICS)
    _check_exit_fields(section)


def exit_criteria(section) -> ExitCriteria:
    return ExitCriteria(
        max_epochs=section.max_epochs,
        patience=section.patience or None,  # 0: no early stopping
        monitor=section.monitor,
        target=section.target,
        target_metric=section.target_metric,
    )


@dataclass
class DataConfig:
    """[data]: which dataset, and how it is split into labelled / validation / pool / test."""

    section: typing.ClassVar[str] = "data"
    dataset: str = option(
        "digits", "the data: 8×8 digit images, or tweets labelled by sentiment", DATASETS
    )
    labels_per_class: int = option(10, "labelled training examples per class")
    validation_per_class: int | None = option(
        None, "labelled validation examples per class (absent: as many as labels_per_class)"
    )
    test_size: float | int = option(
        0.25, "the test set: a fraction in (0, 1) or a number of examples"
    )
    seed: int = option(0, "seeds which examples get labels (the test set does not depend on it)")
    test_seed: int = option(0, "seeds which examples are the test set")

    def __post_init__(self):
        _check_types(self)
        check_choice("data.dataset", self.dataset, DATASETS)
        check_positive("data.labels_per_class", self.labels_per_class, integer=True)
        if self.validation_per_class is not None:
            check_positive("data.validation_per_class", self.validation_per_class, integer=True)
        check_positive("data.seed", self.seed, integer=True, allow_zero=True)
        check_positive("data.test_seed", self.test_seed, integer=True, allow_zero=True)


@dataclass
class PretrainConfig:
    """[pretrain]: learning features from the unlabelled pool, without labels."""

    section: typing.ClassVar[str] = "pretrain"
    method: str = option(
        "denoising_autoencoder",
        "images: autoencoder, denoising_autoencoder (Gaussian noise) or vae; "
        "tweets: masked_tokens (cached under ~/.cache/mtkit or $MTKIT_CACHE)",
        PRETRAIN_METHODS,
    )
    hidden_sizes: tuple[int, ...] = option((256,), "images: widths of the hidden layers")
    latent_size: int = option(64, "images: length of the code the encoder outputs")
    noise_level: float = option(0.4, "denoising_autoencoder: standard deviation of the noise")
    width: int = option(64, "masked_tokens: width of the transformer")
    depth: int = option(2, "masked_tokens: number of transformer blocks")
    heads: int = option(4, "masked_tokens: attention heads per block")
    vocab_size: int = option(8000, "masked_tokens: the tokenizer's vocabulary size")
    max_length: int = option(48, "masked_tokens: tokens kept per text")
    mask_rate: float = option(0.15, "masked_tokens: fraction of tokens hidden")
    lr: float = option(1e-2, "learning rate (peak learning rate with a schedule)")
    schedule: str = option("cosine", "learning-rate schedule (images)", SCHEDULES)
    batch_size: int = option(128, "examples per step")
    seed: int | None = option(None, "seeds pretraining (absent: the pipeline's seed)")
    max_epochs: int = option(200, EXIT_HELP["max_epochs"])
    patience: int = option(0, EXIT_HELP["patience"])
    monitor: str = option("val_loss", EXIT_HELP["monitor"], ("val_loss",))
    target: float | None = option(None, EXIT_HELP["target"])
    target_metric: str = option("val_loss", EXIT_HELP["target_metric"], ("val_loss",))

    def __post_init__(self):
        _check_types(self)
        check_choice("pretrain.method", self.method, PRETRAIN_METHODS)
        check_choice("pretrain.schedule", self.schedule, SCHEDULES)
        for name in ("latent_size", "width", "depth", "heads", "vocab_size", "max_length"):
            check_positive(f"pretrain.{name}", getattr(self, name), integer=True)
        for size in self.hidden_sizes:
            check_positive("pretrain.hidden_sizes (each)", size, integer=True)
        check_positive("pretrain.noise_level", self.noise_level, allow_zero=True)
        if not 0 < self.mask_rate < 1:
            raise MtkitError(f"pretrain.mask_rate must be in (0, 1), got {self.mask_rate}")
        check_positive("pretrain.lr", self.lr)
        check_positive("pretrain.batch_size", self.batch_size, integer=True)
        if self.seed is not None:
            check_positive("pretrain.seed", self.seed, integer=True, allow_zero=True)
        _check_exit_fields(self)


@dataclass
class FineTuneConfig:
    """[finetune]: a classifier on the pretrained encoder learns from the few labels."""

    section: typing.ClassVar[str] = "finetune"
    strategy: str = option(
        "linear_probe",
        "what learns: linear_probe (the head only), full (everything), gradual_unfreeze, "
        "discriminative_lr, or scratch (re-initialised: the baseline)",
        STRATEGIES,
    )
    lr: float | None = option(None, "learning rate (absent: the strategy's default)")
    weight_decay: float = option(1e-2, "AdamW weight decay")
    batch_size: int = option(32, "examples per step")
    augment: bool = option(False, "images: random small shifts and rotations while training")
    max_epochs: int = option(300, EXIT_HELP["max_epochs"])
    patience: int = option(30, EXIT_HELP["patience"])
    monitor: str = option("val_loss", EXIT_HELP["monitor"], CLASSIFIER_METRICS)
    target: float | None = option(None, EXIT_HELP["target"])
    target_metric: str = option("val_accuracy", EXIT_HELP["target_metric"], CLASSIFIER_METRICS)

    def __post_init__(self):
        _check_types(self)
        check_choice("finetune.strategy", self.strategy, STRATEGIES)
        _check_classifier_training(self)


@dataclass
class AdaptConfig:
    """[adapt]: adapters on the fine-tuned classifier's frozen encoder, plus its head."""

    section: typing.ClassVar[str] = "adapt"
    method: str = option(
        "lora", "lora (low-rank updates inside every layer) or bottleneck (images)", ADAPT_METHODS
    )
    size: int = option(4, "LoRA rank, or the bottleneck adapter's width")
    lr: float | None = option(None, "learning rate (absent: the method's default)")
    weight_decay: float = option(1e-2, "AdamW weight decay")
    batch_size: int = option(32, "examples per step")
    max_epochs: int = option(150, EXIT_HELP["max_epochs"])
    patience: int = option(30, EXIT_HELP["patience"])
    monitor: str = option("val_loss", EXIT_HELP["monitor"], CLASSIFIER_METRICS)
    target: float | None = option(None, EXIT_HELP["target"])
    target_metric: str = option("val_accuracy", EXIT_HELP["target_metric"], CLASSIFIER_METRICS)

    def __post_init__(self):
        _check_types(self)
        check_choice("adapt.method", self.method, ADAPT_METHODS)
        check_positive("adapt.size", self.size, integer=True)
        _check_classifier_training(self)


@dataclass
class PipelineConfig:
    """A whole pipeline: the top-level fields, then one section per part."""

    section: typing.ClassVar[str] = ""
    name: str = option("pipeline", "names the run folder: runs/<time>-<name>/")
    seed: int = option(0, "seeds the training of every stage")
    stages: tuple[str, ...] = option(
        STAGE_NAMES, "which stages run (any of them, in this order)", STAGE_NAMES
    )
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def __post_init__(self):
        _check_types(self)
        check_file_name("name", self.name)
        check_positive("seed", self.seed, integer=True, allow_zero=True)
        if not self.stages or any(s not in STAGE_NAMES for s in self.stages):
            raise MtkitError(f"stages must be taken from {list(STAGE_NAMES)}, got {self.stages}")
        if list(self.stages) != [s for s in STAGE_NAMES if s in self.stages]:
            raise MtkitError(f"stages must keep the order {list(STAGE_NAMES)}, got {self.stages}")
        if "adapt" in self.stages and "finetune" not in self.stages:
            raise MtkitError(
                "stages: adapt adds adapters to the fine-tuned classifier; add finetune"
            )
        text = self.data.dataset == "tweets"
        if "pretrain" in self.stages and text != (self.pretrain.method == "masked_tokens"):
            allowed = ["masked_tokens"] if text else list(PRETRAIN_METHODS[:3])
            raise MtkitError(
                f"pretrain.method {self.pretrain.method!r} does not fit data.dataset "
                f"{self.data.dataset!r}; choose one of {allowed}"
            )
        if text and "pretrain" not in self.stages:
            raise MtkitError("stages: tweets need the pretrain stage (it builds the tokenizer)")
        if text and (self.pretrain.patience or self.pretrain.target is not None):
            raise MtkitError(
                "pretrain.patience and pretrain.target: masked_tokens pretraining has no "
                "validation data to watch; leave them out (it trains max_epochs epochs)"
            )
        if text and self.adapt.method == "bottleneck" and "adapt" in self.stages:
            raise MtkitError("adapt.method 'bottleneck' works on images; choose one of ['lora']")

    def to_toml(self) -> str:
        """This config as TOML that `load_config` reads back (fields that are None are left out)."""
        return to_toml(dataclasses.asdict(self))


def config_from_dict(values: dict) -> PipelineConfig:
    """A PipelineConfig from nested dicts (e.g. parsed TOML), checking every field on the way.

    Raises MtkitError naming the field, e.g. "finetune.strategy: 'ful' is not allowed; choose
    one of [...]", or "unknown field finetune.epochs; [finetune] has: strategy, lr, ...".
    """
    return read_section(PipelineConfig, values, "")


def load_config(path) -> PipelineConfig:
    """Read a pipeline config from a TOML file (see mtkit/configs/, python -m mtkit run --help)."""
    path = Path(path)
    if not path.is_file():
        raise MtkitError(f"config file {path} does not exist")
    # load_toml: UTF-8, at most 4 MiB and 100 levels deep, or an MtkitError naming the file.
    return config_from_dict(load_toml(path))


def describe_config() -> str:
    """Every config field with its default, allowed values and meaning (for `--help`)."""
    return describe_fields(PipelineConfig)
