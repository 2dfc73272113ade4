"""The three stages a config describes: pretrain, finetune, adapt; and running a config."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mtkit.core.utils import MtkitError, seed_everything
from mtkit.experiments.images import IMAGE_LR
from mtkit.pipeline.config import (
    AdaptConfig,
    DataConfig,
    FineTuneConfig,
    PipelineConfig,
    PretrainConfig,
    exit_criteria,
    load_config,
)
from mtkit.pipeline.exit import ExitCriteria
from mtkit.pipeline.records import Run
from mtkit.pipeline.runner import Pipeline, RunContext, Stage, StageOutput
from mtkit.stages.adapters import trainable_parameters
from mtkit.stages.method import Bottleneck, LoRA, attach, train_method

STANDARDIZE_AT_MOST = 5000  # pool examples used to standardise features (means need no more)


def pretrain_stage(config: PretrainConfig) -> Stage:
    """Pretrain on the split's unlabelled pool: an autoencoder (images) or masked tokens (text).

    Scores: val_accuracy and test_accuracy of a linear probe (logistic regression on the frozen
    features, trained on the labelled examples): the cheap proxy for how good the features are.
    Text: pretrained_text_encoder caches the result; the stage then sets the context's encode
    to the tokenizer it learned. Its exit criterion is max_epochs only (no validation data).
    Pretraining starts from scratch: a model handed to it by Pipeline.run is not used.
    """
    method = {
        "autoencoder": "autoencoder",
        "denoising_autoencoder": f"denoising autoencoder (noise {config.noise_level:g})",
        "vae": "variational autoencoder",
        "masked_tokens": "masked-token transformer",
    }[config.method]

    def train(context: RunContext, model, exit: ExitCriteria, callbacks) -> StageOutput:
        from mtkit.stages.pretrain import pretrain_autoencoder, reconstruction_error

        seed = context.seed if config.seed is None else config.seed
        split, note = context.split, ""
        if config.method == "masked_tokens":
            model, history, note = _pretrain_text(config, context, seed, exit, callbacks)
            encoder, scores = model.encoder, {}
        else:
            seed_everything(seed)
            model = new_autoencoder(config, tuple(split.labelled.images.shape[1:]))
            noisy = config.method == "denoising_autoencoder"
            history = pretrain_autoencoder(
                model,
                split.unlabelled,
                noise="gaussian" if noisy else "none",
                noise_level=config.noise_level,
                epochs=exit.max_epochs,
                lr=config.lr,
                batch_size=min(config.batch_size, len(split.unlabelled)),
                schedule=None if config.schedule == "none" else config.schedule,
                val_images=split.validation,
                monitor=exit.monitor,
                callbacks=callbacks,
                seed=seed,
                progress=context.progress,
            )
            encoder = model.encoder
            scores = {"val_reconstruction_error": reconstruction_error(model, split.validation)}
        scores.update(probe_scores(encoder, context))
        return StageOutput(model, history, scores, note)

    settings = dataclasses.asdict(config)
    return Stage("pretrain", train, exit_criteria(config), method, settings)


def new_autoencoder(config: PretrainConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """An untrained autoencoder of the config's shape for C×H×W images."""
    from mtkit.models import build_autoencoder

    kind = "vae" if config.method == "vae" else "dense"
    return build_autoencoder(
        kind,
        input_shape=image_shape,
        hidden_sizes=config.hidden_sizes,
        latent_size=config.latent_size,
    )


def _pretrain_text(config: PretrainConfig, context: RunContext, seed: int, exit, callbacks):
    from mtkit.stages.pretrain import TextPretrainConfig, pretrained_text_encoder

    text_config = TextPretrainConfig(
        vocab_size=config.vocab_size,
        max_length=config.max_length,
        width=config.width,
        depth=config.depth,
        heads=config.heads,
        mask_rate=config.mask_rate,
        epochs=exit.max_epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=seed,
    )
    pretrained = pretrained_text_encoder(
        context.split.unlabelled, text_config, progress=context.progress, callbacks=callbacks
    )
    tokenizer, max_length = pretrained.tokenizer, config.max_length
    context.encode = lambda dataset: dataset.tensors_for(tokenizer, max_length=max_length)
    note = "read from the cache" if pretrained.from_cache else ""
    return pretrained.model, pretrained.history, note


def probe_scores(encoder: nn.Module, context: RunContext) -> dict[str, float]:
    """Linear-probe accuracy of frozen `encoder` features on validation (and test) data."""
    from mtkit.evaluation.metrics import linear_probe_accuracy

    split = context.split
    labelled = context.encode(split.labelled)
    scores = {
        "val_accuracy": linear_probe_accuracy(encoder, labelled, context.encode(split.validation))
    }
    if context.score_test:
        scores["test_accuracy"] = linear_probe_accuracy(
            encoder, labelled, context.encode(split.test)
        )
    return scores


def classifier_scores(classifier: nn.Module, context: RunContext) -> dict[str, float]:
    """Validation (and test) accuracy of a classifier."""
    from mtkit.stages.method import accuracy

    scores = {"val_accuracy": accuracy(classifier, context.encode(context.split.validation))}
    if context.score_test:
        scores["test_accuracy"] = accuracy(classifier, context.encode(context.split.test))
    return scores


def finetune_stage(config: FineTuneConfig, fresh_encoder: Callable | None = None) -> Stage:
    """A Classifier on (a copy of) the previous stage's encoder, fine-tuned with `strategy`.

    The features are standardised on the unlabelled pool. fresh_encoder(context) -> encoder is
    used when there is no previous stage: the same classifier without pretraining.
    Scores: val_accuracy and test_accuracy.
    """

    def train(context: RunContext, model, exit: ExitCriteria, callbacks) -> StageOutput:
        from mtkit.models import Classifier
        from mtkit.stages.finetune import fine_tune

        split = context.split
        if model is None and fresh_encoder is None:
            raise MtkitError("the finetune stage starts from the model of a stage before it")
        seed_everything(context.seed)
        encoder = fresh_encoder(context) if model is None else copy.deepcopy(model.encoder)
        classifier = Classifier(encoder, split.labelled.num_classes)
        if model is not None:
            classifier.standardize_features(_pool_sample(context))
        images = hasattr(split.labelled, "images")
        result = fine_tune(
            classifier,
            context.encode(split.labelled),
            strategy=config.strategy,
            validation=context.encode(split.validation),
            epochs=exit.max_epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            weight_decay=config.weight_decay,
            augment=config.augment and images,
            patience=None,  # the exit criteria's callbacks do the stopping
            monitor=exit.monitor,
            callbacks=callbacks,
            seed=context.seed,
            progress=context.progress,
        )
        return StageOutput(classifier, result.history, classifier_scores(classifier, context))

    method = config.strategy.replace("_", " ")
    return Stage("finetune", train, exit_criteria(config), method, dataclasses.asdict(config))


def _pool_sample(context: RunContext) -> torch.Tensor:
    """Up to STANDARDIZE_AT_MOST pool inputs, drawn with a fixed seed (the pool is unordered)."""
    pool = context.encode(context.split.unlabelled)[0]
    if len(pool) <= STANDARDIZE_AT_MOST:
        return pool
    return pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))][
        :STANDARDIZE_AT_MOST
    ]


def adapt_stage(config: AdaptConfig) -> Stage:
    """Adapters (LoRA or bottleneck) on a copy of the fine-tuned classifier; its encoder frozen.

    The adapter's head starts as the fine-tuned head and the adapters start as "do nothing",
    so training starts exactly from the fine-tuned model. Scores: val_accuracy, test_accuracy
    and trainable_parameters.
    """

    # Every layer of the encoder, as this stage always did, on images and texts alike.
    addition = (
        LoRA(rank=config.size, targets=("encoder",))
        if config.method == "lora"
        else Bottleneck(size=config.size, places=("encoder.*",))
    )

    def train(context: RunContext, model, exit: ExitCriteria, callbacks) -> StageOutput:
        if model is None or not hasattr(model, "head"):
            raise MtkitError("the adapt stage adapts the classifier of the finetune stage")
        split = context.split
        seed_everything(context.seed)
        classifier = copy.deepcopy(model)
        attach(classifier, addition, head="task_from_head", adapter_name="adapt")
        result = train_method(
            classifier,
            context.encode(split.labelled),
            "linear_probe",
            addition,
            lr=config.lr or IMAGE_LR[config.method],
            validation=context.encode(split.validation),
            epochs=exit.max_epochs,
            batch_size=config.batch_size,
            weight_decay=config.weight_decay,
            patience=None,
            monitor=exit.monitor,
            callbacks=callbacks,
            seed=context.seed,
            progress=context.progress,
        )
        scores = classifier_scores(classifier, context)
        scores["trainable_parameters"] = trainable_parameters(classifier).trainable
        return StageOutput(classifier, result.history, scores)

    return Stage("adapt", train, exit_criteria(config), addition.label, dataclasses.asdict(config))


def build_pipeline(config: PipelineConfig) -> Pipeline:
    """The Pipeline a config describes (its stages, in order)."""
    fresh = None
    if "pretrain" not in config.stages:  # fine-tune an untrained encoder of the same shape

        def fresh(context):
            shape = tuple(context.split.labelled.images.shape[1:])
            return new_autoencoder(config.pretrain, shape).encoder

    builders = {
        "pretrain": lambda: pretrain_stage(config.pretrain),
        "finetune": lambda: finetune_stage(config.finetune, fresh),
        "adapt": lambda: adapt_stage(config.adapt),
    }
    stages = [builders[name]() for name in config.stages]
    return Pipeline(
        stages, name=config.name, config=dataclasses.asdict(config), config_toml=config.to_toml()
    )


def make_split(config: DataConfig):
    """Load the dataset and split it as the [data] section says."""
    from mtkit.data import few_labels, load_images, load_text

    dataset = load_images("digits") if config.dataset == "digits" else load_text("tweets")
    return few_labels(
        dataset,
        config.labels_per_class,
        validation_per_class=config.validation_per_class,
        test_size=config.test_size,
        seed=config.seed,
        test_seed=config.test_seed,
    )


def run_config(
    config: PipelineConfig | str | Path, *, runs_dir="runs", progress=False, callbacks=()
) -> Run:
    """Run the pipeline a config (or TOML file) describes; returns the Run.

    callbacks: more callbacks for every stage's fit (see Pipeline.run).
    """
    if not isinstance(config, PipelineConfig):
        config = load_config(config)
    context = RunContext(make_split(config.data), seed=config.seed, progress=progress)
    return build_pipeline(config).run(context, runs_dir=runs_dir, callbacks=callbacks)


def resume(run_dir, *, progress=False, callbacks=()) -> Run:
    """Finish a run of `run_config` (or `python -m mtkit run`) that was stopped: killed, crashed,
    or its machine switched off. Returns the Run, the same as if it had never stopped.

    Reads the run's config.toml and split, skips the stages that had finished, and goes on
    with the stopped stage after its last finished epoch (see Pipeline.resume).
    """
    folder = Path(run_dir)
    if not (folder / "config.toml").is_file():
        raise MtkitError(
            f"cannot resume {folder}: it has no config.toml, so it is not a run folder of "
            "run_config; a Pipeline you built resumes with pipeline.resume(folder, context)"
        )
    config = load_config(folder / "config.toml")
    context = RunContext(make_split(config.data), seed=config.seed, progress=progress)
    return build_pipeline(config).resume(folder, context, callbacks=callbacks)
