"""Stages and the Pipeline that runs them, writing the run folder as it goes."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mtkit import distributed
from mtkit.checkpoint import save_model
from mtkit.pipeline.exit import ExitCriteria
from mtkit.pipeline.records import (
    Run,
    StageRecord,
    environment,
    new_run_folder,
    split_record,
    write_json,
    write_summary,
)
from mtkit.train import Callback, History
from mtkit.utils import MtkitError


def dataset_tensors(dataset) -> tuple[torch.Tensor, ...]:
    """The tensors an image model takes: (images, labels), or (images,) for the pool."""
    if not hasattr(dataset, "tensors"):
        raise MtkitError(
            f"{type(dataset).__name__} has no tensors: texts must be encoded with a tokenizer "
            "first (the text pretraining stage sets RunContext.encode)"
        )
    return tuple(dataset.tensors)


@dataclass
class RunContext:
    """What every stage of one run shares.

    split: the FewLabelSplit the run learns from.
    seed: seeds each stage's training (the split has its own seeds).
    encode: dataset -> the tensors its models take, (inputs, labels) or (inputs,). Images:
        their tensors; text: token ids from the pretraining stage's tokenizer (it sets this).
    score_test: compute test accuracy after each stage (a search turns it off for its trials:
        test data is for the final report, never for choosing).
    """

    split: object
    seed: int = 0
    encode: Callable = dataset_tensors
    progress: bool = False
    score_test: bool = True


@dataclass
class StageOutput:
    """What a stage's train function returns.

    model: what gets checkpointed and handed to the next stage.
    history: the History of its training (its stopped_reason is the stage's exit reason).
    scores: e.g. {"val_accuracy": 0.91, "test_accuracy": 0.90}.
    note: anything a reader of the record should know, e.g. "read from the cache".
    """

    model: nn.Module
    history: History
    scores: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Stage:
    """One step of a pipeline.

    name: e.g. "pretrain"; names the checkpoint file and the rows of metrics.jsonl.
    train: train(context, model, exit, callbacks) -> StageOutput, where `model` is what the
        previous stage ended with (None for the first) and `callbacks` holds the exit criteria's
        callbacks and the pipeline's metrics writer: pass them, and `epochs=exit.max_epochs`,
        on to fit (pretrain_autoencoder, fine_tune and train_adapter take both).
    exit: the ExitCriteria.
    method: a few words for tables, e.g. "denoising autoencoder".
    settings: the stage's hyperparameters, written to the run's config.json.
    """

    name: str
    train: Callable[..., StageOutput]
    exit: ExitCriteria = field(default_factory=ExitCriteria)
    method: str = ""
    settings: dict = field(default_factory=dict)


class _MetricsWriter(Callback):
    """Appends each epoch's record to metrics.jsonl as soon as the epoch ends."""

    def __init__(self, path: Path, stage: str):
        self.path, self.stage, self.written = path, stage, 0

    def on_epoch_end(self, trainer):
        self.write(trainer.history.last)

    def write(self, record: dict) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps({"stage": self.stage, **record}) + "\n")
        self.written += 1


class Pipeline:
    """Stages run in order; each starts from the model the previous one ended with.

    name: names the run folders. config: what built the stages (e.g. asdict(PipelineConfig)),
    written to config.json beside each stage's settings and exit criteria. config_toml: the
    same as a TOML file, written to config.toml (build_pipeline gives it).
    """

    def __init__(
        self,
        stages: list[Stage],
        name: str = "pipeline",
        config: dict | None = None,
        config_toml: str | None = None,
    ):
        names = [stage.name for stage in stages]
        if not stages or len(set(names)) != len(names):
            raise MtkitError(f"a pipeline needs stages with distinct names, got {names}")
        self.stages, self.name = list(stages), name
        self.config, self.config_toml = config or {}, config_toml

    def run(
        self,
        context: RunContext,
        *,
        runs_dir="runs",
        model: nn.Module | None = None,
        callbacks=(),
    ) -> Run:
        """Run every stage; write the run folder under `runs_dir`; return the Run.

        model: what the first stage starts from (e.g. a model from `rollback`); None: nothing.
        callbacks: more callbacks for every stage's fit, e.g. a HyperparameterPanel's live plot.
        Under torchrun every process trains, and only rank 0 writes the folder.
        If a stage fails, summary.json records the stages done and the error, then it re-raises.
        """
        folder = (
            new_run_folder(Path(runs_dir), self.name) if distributed.is_main_process() else None
        )
        config = {
            "pipeline": self.name,
            "seed": context.seed,
            "stages": [
                {
                    "name": s.name,
                    "method": s.method,
                    "exit": dataclasses.asdict(s.exit),
                    "settings": s.settings,
                }
                for s in self.stages
            ],
            "config": self.config,
            "start_model": None if model is None else type(model).__name__,
        }
        if folder is not None:
            write_json(folder / "config.json", config)
            if self.config_toml is not None:  # `python -m mtkit run <folder>/config.toml`
                (folder / "config.toml").write_text(self.config_toml)
            write_json(folder / "split.json", split_record(context.split))
            write_json(folder / "environment.json", environment())
        run = Run(folder, self.name, config, [])
        started = time.perf_counter()
        for stage in self.stages:
            stage_callbacks = stage.exit.callbacks() + list(callbacks)
            writer = None
            if folder is not None:
                writer = _MetricsWriter(folder / "metrics.jsonl", stage.name)
                stage_callbacks.append(writer)
            stage_started = time.perf_counter()
            try:
                output = stage.train(context, model, stage.exit, stage_callbacks)
            except BaseException as error:  # also Ctrl-C: the record says where it stopped
                if folder is not None:
                    run.seconds = time.perf_counter() - started
                    write_summary(
                        run, error=f"stage {stage.name!r}: {type(error).__name__}: {error}"
                    )
                raise
            seconds = time.perf_counter() - stage_started
            history = output.history
            if writer is not None and writer.written == 0:  # e.g. a history read from a cache
                for record in history.records:
                    writer.write(record)
            checkpoint = None
            if folder is not None:
                checkpoint = f"checkpoints/{stage.name}.pt"
                save_model(
                    folder / checkpoint,
                    output.model,
                    stage=stage.name,
                    stopped_reason=history.stopped_reason,
                    scores=output.scores,
                )
            run.stages.append(
                StageRecord(
                    name=stage.name,
                    method=stage.method,
                    stopped_reason=history.stopped_reason,
                    epochs=len(history),
                    best_epoch=history.best_epoch,
                    scores=output.scores,
                    seconds=seconds,
                    checkpoint=checkpoint,
                    exit=stage.exit.describe(),
                    note=output.note,
                )
            )
            run.models[stage.name] = model = output.model
            run.seconds = time.perf_counter() - started
            if folder is not None:  # after every stage: a later crash keeps what was done
                write_summary(run, finished=stage is self.stages[-1])
        return run
