"""A catalogue of bad inputs to the public functions and widgets, and the error each one gets.

Every entry is a call a learner might make by mistake and the MtkitError (message pattern) it
must raise: one that says what is wrong, not a traceback from deep inside torch or NumPy.
Entries marked xfail are known gaps in files this catalogue does not own; the reason says how
to fix them (flip them to passing when fixed: they are strict).
The tests at the end check that a failed save or run leaves nothing half-written on disk.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mtkit as mt
from mtkit.core.checkpoint import CheckpointError
from mtkit.core.utils import MtkitError
from mtkit.evaluation import metrics as E
from mtkit.evaluation import stats
from mtkit.notebook.panel import HyperparameterPanel, check_ranges, hyperparameter
from mtkit.pipeline import ExitCriteria, Pipeline, RunContext, Stage
from mtkit.stages import adapters as A

# --- small shared inputs, built on first use ---------------------------------------------------


@functools.cache
def digits():
    return mt.load_images("digits")


@functools.cache
def split():
    return mt.few_labels(digits(), 5, seed=0)


def classifier(num_classes: int = 10) -> mt.Classifier:
    torch.manual_seed(0)
    encoder = mt.DenseAutoencoder(hidden_sizes=(16,), latent_size=8).encoder
    return mt.Classifier(encoder, num_classes)


@functools.cache
def tokenizer() -> mt.Tokenizer:
    return mt.Tokenizer.fit(["the cat sat", "a dog ran", "the dog sat"], min_freq=1)


def text_encoder() -> mt.TextEncoder:
    torch.manual_seed(0)
    return mt.TextEncoder(vocab_size=len(tokenizer()), max_length=8, width=8, heads=2)


def images(count: int = 8) -> torch.Tensor:
    return torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def mse(model, batch):
    return F.mse_loss(model(batch[0]), batch[0])


def fit_linear(**options):
    """fit on a tiny autoencoder-shaped problem with `options` changed."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Unflatten(1, (1, 8, 8)))
    arguments = dict(epochs=1, lr=0.01, batch_size=4, progress=False, device="cpu")
    data = options.pop("data", images())
    return mt.fit(model, options.pop("loss_fn", mse), data, **{**arguments, **options})


@dataclass
class Config:
    epochs: int = hyperparameter(10, low=1, high=100)
    lr: float = hyperparameter(1e-3, low=1e-5, high=1e-1, log=True)
    noise: str = hyperparameter("gaussian", options=["none", "gaussian"])
    augment: bool = False


@dataclass
class Bad:
    """One bad call and the error it must get."""

    call: Callable[[], object]
    message: str  # a regular expression the error's message must match
    error: type[Exception] = MtkitError
    xfail: str | None = None  # a known gap: how to fix it


def nan_images() -> torch.Tensor:
    data = images()
    data[0, 0, 0, 0] = math.nan
    return data


CATALOGUE: dict[str, Bad] = {
    # --- data ----------------------------------------------------------------------------------
    "load_images unknown name": Bad(
        lambda: mt.load_images("mnistt"), r"unknown image dataset 'mnistt'; choose one of"
    ),
    "load_images wrong type": Bad(lambda: mt.load_images(3), r"unknown image dataset 3"),
    "load_text unknown name": Bad(
        lambda: mt.load_text("twitter"), r"unknown text dataset 'twitter'; choose one of"
    ),
    "from_tensors NaN pixels": Bad(
        lambda: mt.ImageDataset.from_tensors(nan_images()), r"1 NaN and 0 infinite pixel"
    ),
    "from_tensors empty": Bad(
        lambda: mt.ImageDataset.from_tensors(torch.zeros(0, 1, 8, 8)), "images is empty"
    ),
    "from_tensors 1-D": Bad(
        lambda: mt.ImageDataset.from_tensors(torch.zeros(5)), r"shape \(N, H, W\) or"
    ),
    "from_tensors channels last": Bad(
        lambda: mt.ImageDataset.from_tensors(torch.zeros(2, 8, 8, 3)), "look channels-last"
    ),
    "from_tensors pixel range": Bad(
        lambda: mt.ImageDataset.from_tensors(images() * 255), r"values in \[0, 1\]"
    ),
    "from_tensors text images": Bad(
        lambda: mt.ImageDataset.from_tensors("images.png"),
        "images must be a tensor or array",
    ),
    "from_tensors labels out of range": Bad(
        lambda: mt.ImageDataset.from_tensors(images(2), [0, 3], class_names=["a", "b"]),
        r"labels must be in \[0, 2\)",
    ),
    "from_tensors negative label": Bad(
        lambda: mt.ImageDataset.from_tensors(images(2), [0, -1]), "labels must be >= 0"
    ),
    "from_tensors float labels": Bad(
        lambda: mt.ImageDataset.from_tensors(images(2), [0.5, 1.0]), "labels must be integers"
    ),
    "from_tensors mismatched labels": Bad(
        lambda: mt.ImageDataset.from_tensors(images(3), [0, 1]), "expected 3 labels"
    ),
    "from_lists not a list": Bad(
        lambda: mt.TextDataset.from_lists("one text"), "texts must be a list or tuple"
    ),
    "from_lists empty": Bad(lambda: mt.TextDataset.from_lists([]), "texts is empty"),
    "from_lists non-string": Bad(lambda: mt.TextDataset.from_lists(["a", 3]), r"texts\[1\] is int"),
    "from_lists unknown label name": Bad(
        lambda: mt.TextDataset.from_lists(["a", "b"], ["pos", "neg"], class_names=["pos"]),
        r"labels \['neg'\] are not among class_names",
    ),
    "from_lists labels out of range": Bad(
        lambda: mt.TextDataset.from_lists(["a", "b"], [0, 5], class_names=["x", "y"]),
        r"labels must be in \[0, 2\)",
    ),
    "few_labels unlabelled dataset": Bad(
        lambda: mt.few_labels(split().unlabelled), "needs a labelled dataset"
    ),
    "few_labels a tensor": Bad(
        lambda: mt.few_labels(images()), "few_labels splits an ImageDataset or a TextDataset"
    ),
    "few_labels zero labels": Bad(
        lambda: mt.few_labels(digits(), 0), "labels_per_class must be a positive integer"
    ),
    "few_labels fractional labels": Bad(
        lambda: mt.few_labels(digits(), 2.5), "labels_per_class must be a positive integer"
    ),
    "few_labels too many labels": Bad(
        lambda: mt.few_labels(digits(), 200), r"class '0' has \d+ examples left"
    ),
    "few_labels test_size 1.5": Bad(
        lambda: mt.few_labels(digits(), 5, test_size=1.5), r"test_size must be a fraction"
    ),
    "few_labels test_size text": Bad(
        lambda: mt.few_labels(digits(), 5, test_size="25%"), r"test_size must be a fraction"
    ),
    "few_labels negative seed": Bad(
        lambda: mt.few_labels(digits(), 5, seed=-1), "seed must be a non-negative integer"
    ),
    "Tokenizer.fit one string": Bad(
        lambda: mt.Tokenizer.fit("the cat sat"), r"wrap a single text as \[text\]"
    ),
    "Tokenizer.fit empty": Bad(lambda: mt.Tokenizer.fit([]), "non-empty list of strings"),
    "Tokenizer.fit numbers": Bad(lambda: mt.Tokenizer.fit([1, 2]), r"texts\[0\] is int"),
    "Tokenizer.fit max_vocab too small": Bad(
        lambda: mt.Tokenizer.fit(["a"], max_vocab=3), "max_vocab must be at least 7"
    ),
    "Tokenizer.fit min_freq 0": Bad(
        lambda: mt.Tokenizer.fit(["a"], min_freq=0), "min_freq must be a positive integer"
    ),
    "Tokenizer.encode max_length 0": Bad(
        lambda: tokenizer().encode(["a"], max_length=0), "max_length must be a positive"
    ),
    "Tokenizer.decode floats": Bad(
        lambda: tokenizer().decode(torch.ones(2, 3)), r"ids must be integers of shape"
    ),
    "Tokenizer.decode out of range": Bad(
        lambda: tokenizer().decode([[0, 999]]), r"ids must be in \[0, \d+\)"
    ),
    "Tokenizer.decode a string": Bad(
        lambda: tokenizer().decode("the cat"), r"ids must be integers"
    ),
    "Tokenizer without reserved tokens": Bad(
        lambda: mt.Tokenizer(["a", "b"]), "tokens must start with"
    ),
    "Tokenizer.load missing file": Bad(
        lambda: mt.Tokenizer.load("no-such-tokenizer.json"), "no-such-tokenizer.json does not"
    ),
    # --- models --------------------------------------------------------------------------------
    "build_autoencoder unknown kind": Bad(
        lambda: mt.build_autoencoder("dense2"), r"unknown .*'dense2'.*choose one of"
    ),
    "autoencoder latent 0": Bad(
        lambda: mt.DenseAutoencoder(latent_size=0), "latent_size must be a positive integer"
    ),
    "autoencoder negative hidden size": Bad(
        lambda: mt.DenseAutoencoder(hidden_sizes=(-4,)), "hidden_sizes must be positive"
    ),
    "autoencoder wrong image size": Bad(
        lambda: mt.DenseAutoencoder()(torch.rand(2, 1, 28, 28)),
        r"expects images of shape N×1×8×8, got \(2, 1, 28, 28\)",
    ),
    "TextEncoder width not divisible": Bad(
        lambda: mt.TextEncoder(width=10, heads=3), r"width \(10\) must be divisible by heads"
    ),
    "TextEncoder vocab 0": Bad(
        lambda: mt.TextEncoder(vocab_size=0), "vocab_size must be a positive integer"
    ),
    "TextEncoder float ids": Bad(
        lambda: text_encoder()(torch.ones(2, 4)), "expects an N×L int64 tensor of token ids"
    ),
    "TextEncoder ids too long": Bad(
        lambda: text_encoder()(torch.ones(2, 20, dtype=torch.long)), "longer than max_length"
    ),
    "TextEncoder ids from another tokenizer": Bad(
        lambda: text_encoder()(torch.full((1, 4), 500)), r"token ids must lie in \[0, \d+\)"
    ),
    "Classifier one class": Bad(
        lambda: mt.Classifier(text_encoder(), 1), "num_classes must be an integer >= 2"
    ),
    "Classifier encoder without size": Bad(
        lambda: mt.Classifier(nn.Linear(4, 4), 3), "cannot tell how many features"
    ),
    "mask_tokens rate 0": Bad(
        lambda: mt.models.mask_tokens(
            torch.ones(2, 3, dtype=torch.long), mask_id=2, vocab_size=9, rate=0
        ),  # noqa: E501
        r"masking rate is a fraction in \(0, 1\)",
    ),
    "mask_tokens vocabulary of specials only": Bad(
        lambda: mt.models.mask_tokens(
            torch.full((4, 50), 3, dtype=torch.long), mask_id=2, vocab_size=3, special_ids=(0, 1, 2)
        ),
        "leaves no ordinary words",
    ),
    # --- training ------------------------------------------------------------------------------
    "fit epochs 0": Bad(lambda: fit_linear(epochs=0), "epochs must be a positive integer"),
    "fit negative lr": Bad(lambda: fit_linear(lr=-0.1), "lr must be a positive number"),
    "fit NaN lr": Bad(lambda: fit_linear(lr=math.nan), "lr must be a positive number"),
    "fit batch 0": Bad(lambda: fit_linear(batch_size=0), "batch_size must be a positive"),
    "fit batch larger than data": Bad(
        lambda: fit_linear(batch_size=100), "batch_size=100 is larger than the 8 training"
    ),
    "fit unknown optimizer": Bad(
        lambda: fit_linear(optimizer="adamx"), r"unknown optimizer 'adamx'; choose one of"
    ),
    "fit unknown schedule": Bad(lambda: fit_linear(schedule="linear"), "unknown schedule"),
    "fit monitor not validation": Bad(
        lambda: fit_linear(monitor="loss"), "monitor must be a validation metric"
    ),
    "fit empty data": Bad(lambda: fit_linear(data=torch.zeros(0, 1, 8, 8)), "has no examples"),
    "fit mismatched tensors": Bad(
        lambda: fit_linear(data=(images(8), torch.zeros(5))), "differ in their first dimension"
    ),
    "fit data of the wrong kind": Bad(
        lambda: fit_linear(data=None), "train_data must be tensors, a TensorDataset"
    ),
    "fit loss not a scalar": Bad(
        lambda: fit_linear(loss_fn=lambda m, b: m(b[0])), "loss_fn must return a scalar loss"
    ),
    "fit NaN pixels": Bad(
        lambda: fit_linear(data=nan_images()),
        "the batch holds NaN or infinite values",
        error=mt.TrainingDiverged,
    ),
    "fit huge lr diverges": Bad(
        lambda: fit_linear(lr=1e30, epochs=20, optimizer="sgd"),
        r"loss became (nan|inf) at epoch \d+, step \d+ .*try lr=",
        error=mt.TrainingDiverged,
    ),
    "fit all frozen": Bad(
        lambda: mt.fit(
            nn.Linear(2, 2).requires_grad_(False), mse, torch.ones(4, 2), epochs=1, lr=1
        ),  # noqa: E501
        "no trainable parameters",
    ),
    "EarlyStopping patience 0": Bad(
        lambda: mt.EarlyStopping(patience=0), "patience must be a positive integer"
    ),
    "EarlyStopping without validation": Bad(
        lambda: fit_linear(callbacks=[mt.EarlyStopping()]), "pass val_data to fit"
    ),
    "LambdaCallback unknown hook": Bad(
        lambda: mt.LambdaCallback(on_epoch_finish=print), "unknown callback hook"
    ),
    "pretrain unknown noise": Bad(
        lambda: mt.pretrain_autoencoder(mt.DenseAutoencoder(), images(), noise="salt"),
        r"unknown noise 'salt'",
    ),
    "pretrain negative noise level": Bad(
        lambda: mt.pretrain_autoencoder(mt.DenseAutoencoder(), images(), noise_level=-1),
        "noise_level must be a non-negative",
    ),
    "pretrain a list of images": Bad(
        lambda: mt.pretrain_autoencoder(mt.DenseAutoencoder(), [[0.0]]),
        "expected an ImageDataset or an N×C×H×W tensor",
    ),
    "pretrain NaN pixels": Bad(
        lambda: mt.pretrain_autoencoder(
            mt.DenseAutoencoder(), nan_images(), epochs=1, progress=False
        ),  # noqa: E501
        r"images hold 1 NaN",
    ),
    "pretrain_masked_tokens float ids": Bad(
        lambda: mt.pretrain_masked_tokens(mt.MaskedTokenModel(text_encoder()), torch.ones(4, 5)),
        "token_ids must be an N×L int64 tensor",
    ),
    "pretrained_text_encoder no texts": Bad(
        lambda: mt.pretrained_text_encoder([], cache=False), "needs at least one text"
    ),
    "fine_tune unknown strategy": Bad(
        lambda: mt.fine_tune(classifier(), split().labelled, strategy="fulll"),
        r"unknown strategy 'fulll'; choose one of",
    ),
    "fine_tune unlabelled data": Bad(
        lambda: mt.fine_tune(classifier(), split().unlabelled), "needs labelled data"
    ),
    "fine_tune labels out of range": Bad(
        lambda: mt.fine_tune(classifier(num_classes=3), split().labelled),
        r"labels must lie in \[0, 3\)",
    ),
    "fine_tune not a classifier": Bad(
        lambda: mt.fine_tune(nn.Linear(64, 10), split().labelled), "needs a mtkit Classifier"
    ),
    "fine_tune dropout 1.5": Bad(
        lambda: mt.fine_tune(classifier(), split().labelled, dropout=1.5),
        r"dropout must be a finite number in \[0, 1\)",
    ),
    "fine_tune lr_decay 0": Bad(
        lambda: mt.fine_tune(classifier(), split().labelled, lr_decay=0),
        r"lr_decay must be a .* in \(0, 1\]",
    ),
    "fine_tune class_balance": Bad(
        lambda: mt.fine_tune(classifier(), split().labelled, class_balance="smote"),
        r"unknown class_balance 'smote'",
    ),
    "fine_tune augment not callable": Bad(
        lambda: mt.fine_tune(classifier(), split().labelled, augment="yes"),
        "augment must be True, False or a callable",
    ),
    "fine_tune mismatched images and labels": Bad(
        lambda: mt.fine_tune(classifier(), (images(4), torch.zeros(3, dtype=torch.long))),
        "labels must be a 1-D int64 tensor of length 4",
    ),
    "self_train threshold 2": Bad(
        lambda: mt.self_train(
            classifier(),
            split().labelled,
            split().unlabelled,
            validation=split().validation,
            threshold=2,
        ),  # noqa: E501
        r"threshold is a probability in \[0, 1\), got 2",
    ),
    "predict wrong image size": Bad(
        lambda: mt.predict(classifier(), torch.rand(3, 1, 28, 28)),
        r"expects images of shape",
    ),
    # --- adapters ------------------------------------------------------------------------------
    "add_lora rank 0": Bad(
        lambda: A.add_lora(classifier(), "encoder", rank=0), "rank must be a positive integer"
    ),
    "add_lora rank too large": Bad(
        lambda: A.add_lora(classifier(), "encoder", rank=100), "larger than min"
    ),
    "add_lora unknown target": Bad(
        lambda: A.add_lora(classifier(), "decoder"), "matches no layer LoRA can adapt"
    ),
    "add_lora dropout 1": Bad(
        lambda: A.add_lora(classifier(), "encoder", dropout=1.0), r"dropout must be in \[0, 1\)"
    ),
    "add_lora negative alpha": Bad(
        lambda: A.add_lora(classifier(), "encoder", alpha=-1), "alpha must be a positive"
    ),
    "add_adapters size 0": Bad(
        lambda: A.add_adapters(classifier(), "encoder.*", size=0), "size must be a positive"
    ),
    "set_active_adapter unknown": Bad(
        lambda: A.set_active_adapter(lora_classifier(), "nope"), "no adapter called 'nope'"
    ),
    "save_adapter unknown name": Bad(
        lambda: A.save_adapter(lora_classifier(), "adapter.pt", "nope"),
        "no adapter called 'nope'",
    ),
    "load_adapter missing file": Bad(
        lambda: A.load_adapter(classifier(), "no-such-adapter.pt"),
        "no-such-adapter.pt does not exist",
        error=CheckpointError,
    ),
    "train_adapter nothing to train": Bad(
        lambda: A.train_adapter(classifier().requires_grad_(False), split().labelled),
        "nothing to train",
    ),
    "add_task_head one class": Bad(
        lambda: A.add_task_head(lora_classifier(), "default", 1), "num_classes must be"
    ),
    "adapt_encoder unknown method": Bad(
        lambda: A.adapt_encoder(classifier().encoder, split(), "lorax"), r"unknown .*'lorax'"
    ),
    # --- evaluation and statistics -------------------------------------------------------------
    "evaluate unlabelled data": Bad(
        lambda: mt.evaluate_model(classifier(), split().unlabelled), "labels"
    ),
    "evaluate texts without tokenizer": Bad(
        lambda: mt.evaluate_model(classifier(), mt.TextDataset.from_lists(["a b"], [0])),
        "tokenizer",
    ),
    "classification_report mismatched lengths": Bad(
        lambda: mt.classification_report([0, 1, 1], [0, 1]), r"3 labels .* 2 predictions|length"
    ),
    "expected_calibration_error bins 0": Bad(
        lambda: mt.expected_calibration_error([[0.5, 0.5]], [0], bins=0), "bins must be"
    ),
    "expected_calibration_error rows not probabilities": Bad(
        lambda: mt.expected_calibration_error([[2.0, 3.0]], [0]), "probabilit"
    ),
    "embed texts without tokenizer": Bad(lambda: E.embed(text_encoder(), ["the cat"]), "tokenizer"),
    "knn_accuracy neighbours 0": Bad(
        lambda: E.knn_accuracy(classifier().encoder, split().labelled, split().test, 0),
        "neighbours must be a positive integer",
    ),
    "mean_and_spread empty": Bad(
        lambda: stats.mean_and_spread([]), r"needs at least 1 value\(s\), got 0"
    ),
    "bootstrap_ci confidence 1.5": Bad(
        lambda: stats.bootstrap_ci([1.0, 2.0], confidence=1.5), r"confidence must lie in \(0, 1\)"
    ),
    "paired_comparison lengths differ": Bad(
        lambda: stats.paired_comparison([1.0, 2.0], [1.0]), "same number|pair"
    ),
    "embed wrong image size": Bad(
        lambda: E.embed(classifier().encoder, torch.rand(3, 1, 28, 28)),
        r"expects images of shape",
    ),
    "predict nothing": Bad(
        lambda: mt.predict(classifier(), torch.zeros(0, 1, 8, 8)),
        "nothing to predict",
    ),
    "tensors_for without a tokenizer": Bad(
        lambda: mt.TextDataset.from_lists(["a b"]).tensors_for(None),
        "tokenizer",
    ),
    "show_images of text": Bad(
        lambda: mt.plots.show_images("digits.png"),
        "images",
    ),
    "plot_embedding_map mismatched labels": Bad(
        lambda: mt.plots.plot_embedding_map(torch.zeros(5, 2).numpy(), [0, 1, 2]),
        "5 codes but 3 labels",
    ),
    "detect_drift permutations 0": Bad(
        lambda: mt.detect_drift(
            split().test, split().validation, classifier().encoder, permutations=0
        ),  # noqa: E501
        "permutations must be a positive integer",
    ),
    "shift_images unknown kind": Bad(
        lambda: mt.evaluation.drift.shift_images(images(), kind="blur"), r"unknown shift 'blur'"
    ),
    "label_efficiency no methods": Bad(
        lambda: mt.experiments.label_efficiency(digits(), [], labels_per_class=[5], seeds=[0]),
        "give at least one method",
    ),
    "FineTuneMethod unknown strategy": Bad(
        lambda: mt.experiments.FineTuneMethod(strategy="x"), r"unknown strategy 'x'"
    ),
    "TextFineTuneMethod unknown addition": Bad(
        lambda: mt.experiments.text.TextFineTuneMethod(addition="x"), r"unknown addition 'x'"
    ),
    "get_device unknown": Bad(lambda: mt.get_device("tpu"), r"unknown device 'tpu'"),
    "seed_everything negative": Bad(
        lambda: mt.seed_everything(-1), "seed must be a non-negative integer"
    ),
    # --- pipelines -----------------------------------------------------------------------------
    "PipelineConfig name with a path": Bad(
        lambda: mt.PipelineConfig(name="../elsewhere"), "names files and folders"
    ),
    "Stage name with a path": Bad(lambda: Stage("a/b", print), "names files and folders"),
    "Stage train not a function": Bad(
        lambda: Stage("a", "pretrain"), "Stage.train must be a function"
    ),
    "staged_search empty space": Bad(
        lambda: mt.staged_search(
            mt.PipelineConfig(stages=("pretrain",)), {"pretrain": {"latent_size": []}}
        ),  # noqa: E501
        "must be a non-empty list of values",
    ),
    "ExitCriteria max_epochs 0": Bad(
        lambda: ExitCriteria(max_epochs=0), "max_epochs must be a positive integer"
    ),
    "ExitCriteria target text": Bad(
        lambda: ExitCriteria(target="high"), "target must be a number or None"
    ),
    "Pipeline no stages": Bad(lambda: Pipeline([]), "distinct names, got"),
    "Pipeline not stages": Bad(
        lambda: Pipeline(["pretrain"]), "a pipeline needs a list of Stage objects"
    ),
    "Pipeline duplicate names": Bad(
        lambda: Pipeline([Stage("a", print), Stage("a", print)]), r"distinct names, got \['a'"
    ),
    "Pipeline.run a split that is not one": Bad(
        lambda: Pipeline([Stage("a", print)]).run(RunContext(images())),
        "RunContext.split must be a FewLabelSplit",
    ),
    "run_config missing file": Bad(
        lambda: mt.run_config("no-such-config.toml"), "no-such-config.toml does not exist"
    ),
    "config unknown strategy": Bad(
        lambda: mt.pipeline.config_from_dict({"finetune": {"strategy": "fulll"}}),
        r"finetune\.strategy: 'fulll' is not allowed",
    ),
    "rollback a folder that is not a run": Bad(
        lambda: mt.rollback("no-such-run", "finetune", model=classifier()),
        "no checkpoint for stage 'finetune'",
    ),
    "Run.load a folder that is not a run": Bad(
        lambda: mt.Run.load("no-such-run"), "is not a run folder: it has no summary.json"
    ),
    "compare_runs nothing": Bad(lambda: mt.compare_runs([]), "at least one run"),
    "resume a folder that is not a run": Bad(
        lambda: mt.pipeline.resume("no-such-run"), "has no config.toml"
    ),
    # --- checkpoints ---------------------------------------------------------------------------
    "save_model not a model": Bad(
        lambda: mt.save_model("m.pt", {"w": torch.ones(1)}), "save_model saves an nn.Module"
    ),
    "save_checkpoint non-tensors": Bad(
        lambda: mt.save_checkpoint("c.pt", {"w": [1, 2]}), "dict of name -> Tensor"
    ),
    "load_model_state missing file": Bad(
        lambda: mt.load_model_state("no-such-model.pt", classifier()),
        "no-such-model.pt does not exist",
        error=CheckpointError,
    ),
    "load_model_state into not a model": Bad(
        lambda: mt.load_model_state(mt.save_model("m.pt", classifier()), {}),
        "load_model_state loads into an nn.Module",
    ),
    # --- widgets -------------------------------------------------------------------------------
    "hyperparameter default outside range": Bad(
        lambda: hyperparameter(500, low=1, high=100), "low <= default <= high"
    ),
    "hyperparameter log scale from 0": Bad(
        lambda: hyperparameter(0.1, low=0, high=1, log=True), "log-scale slider needs low > 0"
    ),
    "hyperparameter default not an option": Bad(
        lambda: hyperparameter("x", options=["a", "b"]), "not one of the options"
    ),
    "hyperparameter text without options": Bad(lambda: hyperparameter("gaussian"), "needs options"),
    "hyperparameter low above high": Bad(
        lambda: hyperparameter(5, low=10, high=1), "low <= default <= high"
    ),
    "panel of a non-dataclass": Bad(
        lambda: HyperparameterPanel({"epochs": 3}), "needs a dataclass config"
    ),
    "panel of a config out of range": Bad(
        lambda: HyperparameterPanel(Config(epochs=500)), r"epochs must lie in \[1, 100\]"
    ),
    "panel.set unknown control": Bad(
        lambda: HyperparameterPanel(Config()).set(epoch=3), "no control named 'epoch'"
    ),
    "panel.set out of range": Bad(
        lambda: HyperparameterPanel(Config()).set(epochs=500), r"epochs must lie in \[1, 100\]"
    ),
    "panel.set wrong type": Bad(
        lambda: HyperparameterPanel(Config()).set(epochs="ten"),
        "epochs must be an integer, got .ten.",
    ),
    "panel.set unknown option": Bad(
        lambda: HyperparameterPanel(Config()).set(noise="salt"), "'salt' is not one of"
    ),
    "panel.run without a function": Bad(
        lambda: HyperparameterPanel(Config()).run(), "no function to run"
    ),
    "check_ranges out of range": Bad(
        lambda: check_ranges(Config(lr=1.0)), r"lr must lie in \[1e-05, 0.1\]"
    ),
}


def lora_classifier() -> mt.Classifier:
    model = classifier()
    A.add_lora(model, "encoder", rank=2)
    return model


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [],
        )
        for name, case in CATALOGUE.items()
    ],
)
def test_bad_input_gets_an_error_that_says_what_is_wrong(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in the catalogue land here
    with pytest.raises(case.error, match=case.message), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only the error matters here
        case.call()
    plt.close("all")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--datasets", "mnist"], r"unknown dataset \['mnist'\]"),
        (["demo", "--seeds", "0"], "seeds must be a positive integer"),
        (["run", "no-such-config.toml"], "does not exist"),
        (["run", "--resume", "no-such-run"], "has no config.toml"),
    ],
)
def test_bad_command_lines_exit_2_with_a_message(argv, message, tmp_path, monkeypatch, capsys):
    from mtkit.__main__ import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert files_under(tmp_path) == []


# Inputs at the edge that are not mistakes: they must work, not fail.
EDGES = {
    "empty text": [""],
    "blank text": ["   \n\t "],
    "a huge text": ["word " * 200_000],
    "emoji and scripts only": ["😀🙏🏽 مرحبا 你好"],
    "control characters": ["\x00\x07\u200b"],
}


@pytest.mark.parametrize("texts", EDGES.values(), ids=EDGES.keys())
def test_edge_texts_are_encoded_embedded_and_classified(texts):
    ids = tokenizer().encode(texts, max_length=8)
    assert ids.shape == (1, 8) and ids[0, 0] == tokenizer().cls_id
    dataset = mt.TextDataset.from_lists(texts, [0], class_names=["a", "b"])
    codes = E.embed(text_encoder().eval(), dataset, tokenizer=tokenizer())
    assert codes.shape == (1, 8) and torch.isfinite(torch.as_tensor(codes)).all()
    model = mt.Classifier(text_encoder(), 2)
    evaluation = mt.evaluate_model(model, dataset, tokenizer=tokenizer(), max_length=8)
    assert len(evaluation) == 1


# --- nothing half-written ------------------------------------------------------------------------


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_failed_saves_leave_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = lora_classifier()
    failures = [
        lambda: mt.save_checkpoint(tmp_path / "c.pt", {"w": "not a tensor"}),
        lambda: mt.save_model(tmp_path / "m.pt", {"not": "a model"}),
        lambda: A.save_adapter(model, tmp_path / "a.pt", "nope"),
        lambda: mt.core.checkpoint.save_state(tmp_path / "s.pt", {"x": object()}),
        lambda: mt.save_checkpoint(tmp_path, {"w": torch.ones(1)}),  # a folder, not a file
    ]
    for failure in failures:
        with pytest.raises(MtkitError):
            failure()
    assert files_under(tmp_path) == []

    # A save that fails while writing (disk full, Ctrl-C) leaves the old file, whole.
    mt.save_model(tmp_path / "m.pt", model)
    before = (tmp_path / "m.pt").read_bytes()
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(OSError, match="full"):
        mt.save_model(tmp_path / "m.pt", classifier())
    monkeypatch.undo()
    assert files_under(tmp_path) == ["m.pt"] and (tmp_path / "m.pt").read_bytes() == before

    tokenizer().save(tmp_path / "t.json")
    monkeypatch.setattr(json, "dump", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        tokenizer().save(tmp_path / "t.json")
    monkeypatch.undo()
    assert files_under(tmp_path) == ["m.pt", "t.json"]
    assert mt.Tokenizer.load(tmp_path / "t.json").tokens == tokenizer().tokens


def test_runs_that_fail_leave_a_record_and_no_half_written_file(tmp_path, capsys):
    from mtkit.__main__ import main
    from mtkit.pipeline import PipelineConfig, PretrainConfig

    # Bad input found before any work: no folder at all.
    with pytest.raises(MtkitError):
        Pipeline([Stage("a", print)]).run(RunContext(images()), runs_dir=tmp_path / "runs")
    bad = tmp_path / "bad.toml"
    bad.write_text('[finetune]\nstrategy = "everything"\n')
    assert main(["run", str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()

    # A stage that fails: the folder says what happened, every file in it is whole.
    def broken(context, model, exit, callbacks):
        raise MtkitError("the data went missing")

    config = PipelineConfig(
        name="broken",
        stages=("pretrain",),
        pretrain=PretrainConfig(hidden_sizes=(16,), latent_size=4, max_epochs=2),
    )
    pipeline = mt.pipeline.build_pipeline(config)
    pipeline.stages.append(Stage("later", broken))
    with pytest.raises(MtkitError, match="the data went missing"):
        pipeline.run(RunContext(mt.pipeline.make_split(config.data)), runs_dir=tmp_path / "runs")
    (folder,) = (tmp_path / "runs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["finished"] is False and "the data went missing" in summary["error"]
    for path in folder.rglob("*"):
        assert not path.name.endswith(".tmp"), path
        if path.suffix == ".json":
            json.loads(path.read_text())
        if path.suffix == ".pt":
            mt.load_checkpoint(path)  # whole, and its hashes agree
    assert mt.Run.load(folder).stage_names == ["pretrain"]
    capsys.readouterr()


def test_the_catalogue_covers_every_kind_of_bad_input():
    names = " ".join(CATALOGUE)
    for kind in ("NaN", "empty", "unknown", "out of range", "too", "mismatched", "wrong"):
        assert kind in names, kind
    assert dataclasses.is_dataclass(Config)
