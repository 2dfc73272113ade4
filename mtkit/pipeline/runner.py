"""Stages and the Pipeline that runs them, writing the run folder as it goes."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mtkit.core import distributed
from mtkit.core.checkpoint import content_hash, load_checkpoint, load_model_state, save_model
from mtkit.core.interrupts import hold_interrupts
from mtkit.core.train import Callback, History
from mtkit.core.utils import MtkitError
from mtkit.pipeline.config import check_file_name
from mtkit.pipeline.exit import ExitCriteria
from mtkit.pipeline.records import (
    Run,
    StageRecord,
    append_metrics,
    environment,
    new_run_folder,
    read_json,
    read_summary,
    replace_stage_metrics,
    split_record,
    write_atomically,
    write_json,
    write_summary,
)
from mtkit.pipeline.training_state import TrainingState


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

    def __post_init__(self):
        check_file_name("a stage's name", self.name)
        if not callable(self.train):
            raise MtkitError(f"Stage.train must be a function, got {type(self.train).__name__}")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or Jupyter's stop) stopped a pipeline run: no later stage ran, summary.json says
    not finished, and resume/ is kept, so `resume(folder)` (`python -m mtkit run --resume
    FOLDER`) goes on with the interrupted stage after its last saved epoch. A KeyboardInterrupt,
    so that it propagates out of run_config as any interrupt does. `folder`: None on ranks > 0."""

    def __init__(self, folder: Path | None, stage: str | None):
        self.folder, self.stage = folder, stage
        message = "the run was interrupted" + (f" in stage {stage!r}" if stage else "")
        if folder is not None:
            message += f"; finish it with: python -m mtkit run --resume {folder}"
        super().__init__(message)


class _StopTheRun(Callback):
    """Last in every stage's fit: an interrupted fit stops the run (fit itself returns, as a
    notebook expects), before the stage's train function does anything more with it."""

    def on_train_end(self, trainer):
        if trainer.history.stopped_reason == "interrupted":
            raise KeyboardInterrupt


class _StageProgress(TrainingState):
    """What a stage's fit leaves in the run folder as it goes: after every epoch, its record in
    metrics.jsonl and then its whole state in resume/<stage>.pt (see training_state.py). On a
    resume, the stage's rows in metrics.jsonl become those of the History it restored."""

    def __init__(self, folder: Path, stage: str):
        super().__init__(folder / "resume" / f"{stage}.pt")
        self.metrics, self.stage, self.epochs_seen = folder / "metrics.jsonl", stage, 0

    def on_epoch_end(self, trainer):
        append_metrics(self.metrics, self.stage, trainer.history.last)
        self.epochs_seen += 1
        super().on_epoch_end(trainer)  # after the row: a resume then never lacks a row

    def on_restore(self, trainer):
        replace_stage_metrics(self.metrics, self.stage, trainer.history.records)
        self.epochs_seen += len(trainer.history.records)

    def on_train_end(self, trainer):
        # An interrupt stops the run: the state of the last saved epoch stays as it is, not
        # marked as stopped, so that resuming trains the stage on. Its best weights so far go
        # to the stage's checkpoint (the resumed stage overwrites it).
        if trainer.history.stopped_reason == "interrupted":
            path = self.path.parent.parent / "checkpoints" / f"{self.stage}.pt"
            with hold_interrupts():
                save_model(path, trainer.model, stage=self.stage, stopped_reason="interrupted")


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
        if not isinstance(stages, (list, tuple)) or not all(isinstance(s, Stage) for s in stages):
            raise MtkitError(f"a pipeline needs a list of Stage objects, got {stages!r:.100}")
        names = [stage.name for stage in stages]
        if not stages or len(set(names)) != len(names):
            raise MtkitError(f"a pipeline needs stages with distinct names, got {names}")
        self.stages, self.name = list(stages), check_file_name("a pipeline's name", name)
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
        While a run is unfinished, resume/<stage>.pt holds each stage's training state after its
        last epoch, so `resume` can finish a run that was killed; the folder goes at the end.
        """
        split = _split_record(context)  # checked before any folder is made
        config = self._config(context, model)
        folder = None
        if distributed.is_main_process():
            folder = new_run_folder(Path(runs_dir), self.name)
            write_json(folder / "config.json", config)
            if self.config_toml is not None:  # `python -m mtkit run <folder>/config.toml`
                toml = self.config_toml
                write_atomically(folder / "config.toml", lambda file: file.write(toml), mode="w")
            write_json(folder / "split.json", split)
            write_json(folder / "environment.json", environment())
        return self._run_stages(Run(folder, self.name, config, []), context, model, callbacks)

    def resume(
        self, folder, context: RunContext, *, model: nn.Module | None = None, callbacks=()
    ) -> Run:
        """Finish the run in `folder`, which this pipeline started and something stopped (a
        crash, a kill, an error): the same Run as if it had never stopped.

        context: as for run, with the same split (split.json is checked). model: the model the
        run started from, if it started from one. Stages that had finished are not trained
        again: each one's train function runs, and fit, restoring the state the stage ended
        with, skips straight to the end (so its model, and anything it set in the context, is
        back). The stage that was stopped goes on after the last epoch it finished.
        A finished run is returned as Run.load(folder) (without models).
        """
        if distributed.is_distributed():
            raise MtkitError("resume a run on one process (the saved states are rank 0's)")
        folder = Path(folder)
        what = f"cannot resume {folder}"
        saved = read_json(folder / "config.json", what)
        config = self._config(context, model)
        differences = [key for key in config if _as_json(config[key]) != saved.get(key)]
        if differences:
            raise MtkitError(
                f"{what}: it was made by another pipeline or config "
                f"(they differ in {', '.join(differences)})"
            )
        if _as_json(_split_record(context)) != read_json(folder / "split.json", what):
            raise MtkitError(f"{what}: the context's split is not the one in its split.json")
        summary = {"stages": [], "seconds": 0.0, "finished": False}
        if (folder / "summary.json").exists():  # none before the first stage ends
            summary = read_summary(folder / "summary.json", what)
        if summary["finished"]:
            return Run.load(folder)
        done = {record["name"]: StageRecord(**record) for record in summary["stages"]}
        run = Run(folder, self.name, config, [], seconds=summary["seconds"])
        return self._run_stages(run, context, model, callbacks, done, resuming=True)

    def _config(self, context: RunContext, model: nn.Module | None) -> dict:
        """What config.json holds: everything that determines the run."""
        return {
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

    def _run_stages(self, run, context, model, callbacks, done=None, resuming=False) -> Run:
        """Run the stages in order, writing the folder (if any) as they end. `done`: the records
        of stages a resumed run had finished, kept as they were."""
        folder, done = run.path, done or {}
        started, seconds_before = time.perf_counter(), run.seconds
        for stage in self.stages:
            stage_callbacks = stage.exit.callbacks() + list(callbacks)
            progress = None
            if folder is not None:
                if resuming:  # the stage's rows are written again (restored, or trained)
                    replace_stage_metrics(folder / "metrics.jsonl", stage.name, [])
                progress = _StageProgress(folder, stage.name)
                stage_callbacks.append(progress)  # it records what the others decided
            stage_callbacks.append(_StopTheRun())
            stage_started = time.perf_counter()
            try:
                output = stage.train(context, model, stage.exit, stage_callbacks)
                if output.history.stopped_reason == "interrupted" and stage.name not in done:
                    raise KeyboardInterrupt  # a train function that went on after the interrupt
            except BaseException as error:  # also Ctrl-C: the record says where it stopped
                if folder is not None:
                    run.seconds = seconds_before + time.perf_counter() - started
                    write_summary(run, error=_stage_error(stage.name, error))
                if isinstance(error, KeyboardInterrupt) and not isinstance(error, RunInterrupted):
                    raise RunInterrupted(folder, stage.name) from error
                raise
            seconds = time.perf_counter() - stage_started
            if progress is not None and progress.epochs_seen == 0:  # no epoch went through fit,
                # e.g. a History read from a cache: its rows are written now
                replace_stage_metrics(folder / "metrics.jsonl", stage.name, output.history.records)
            if stage.name in done:  # finished before: its record and checkpoint stand
                record = done[stage.name]
                _agree_with_checkpoint(output.model, folder / record.checkpoint, stage.name)
            else:
                record = _finish_stage(folder, stage, output, progress, seconds)
            run.stages.append(record)
            run.models[stage.name] = model = output.model
            run.seconds = seconds_before + time.perf_counter() - started
            if folder is not None:  # after every stage: a later crash keeps what was done
                write_summary(run, finished=stage is self.stages[-1])
        if folder is not None:  # finished: the training states are no longer needed
            shutil.rmtree(folder / "resume", ignore_errors=True)
        return run


def _stage_error(stage: str, error: BaseException) -> str:
    """What summary.json's "error" says about a stage that did not end."""
    if isinstance(error, KeyboardInterrupt):
        return f"stage {stage!r}: interrupted (Ctrl-C); the run can be resumed"
    return f"stage {stage!r}: {type(error).__name__}: {error}"


def _finish_stage(folder, stage: Stage, output: StageOutput, progress, seconds) -> StageRecord:
    """Save the model a stage ended with (if there is a folder); returns the stage's record."""
    history = output.history
    checkpoint = None if folder is None else f"checkpoints/{stage.name}.pt"
    note = output.note
    if folder is not None:
        save_model(
            folder / checkpoint,
            output.model,
            stage=stage.name,
            stopped_reason=history.stopped_reason,
            scores=output.scores,
        )
        if progress.restored:
            resumed = f"resumed after epoch {progress.restored}"
            note = f"{note}; {resumed}" if note else resumed
    return StageRecord(
        name=stage.name,
        method=stage.method,
        stopped_reason=history.stopped_reason,
        epochs=len(history),
        best_epoch=history.best_epoch,
        scores=output.scores,
        seconds=seconds,
        checkpoint=checkpoint,
        exit=stage.exit.describe(),
        note=note,
    )


def _split_record(context: RunContext) -> dict:
    if not isinstance(context, RunContext):
        raise MtkitError(f"a pipeline runs in a RunContext, got {type(context).__name__}")
    try:
        return split_record(context.split)
    except AttributeError:
        raise MtkitError(
            "RunContext.split must be a FewLabelSplit (from few_labels), "
            f"got {type(context.split).__name__}"
        ) from None


def _as_json(value):
    return json.loads(json.dumps(value, default=str))


def _agree_with_checkpoint(model: nn.Module, path: Path, stage: str) -> None:
    """A finished stage run again must end where it ended the first time; if it does not (a
    train function that did not pass the callbacks to fit, say), the checkpoint wins."""
    _, metadata = load_checkpoint(path)
    if content_hash(model.state_dict()) != metadata["content_hash"]:
        warnings.warn(
            f"stage {stage!r} ended with other weights when run again; using its checkpoint",
            stacklevel=4,  # where resume was called
        )
        load_model_state(path, model)
