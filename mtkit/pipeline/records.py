"""The run folder: what a run writes, reading it back, rollback, and comparing runs."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtkit.core import distributed, files
from mtkit.core.checkpoint import load_model_state, write_atomically
from mtkit.core.utils import MtkitError


@dataclass
class StageRecord:
    """How one stage of a run went (one entry of summary.json)."""

    name: str
    method: str
    stopped_reason: str
    epochs: int
    best_epoch: int | None
    scores: dict[str, float]
    seconds: float
    checkpoint: str | None  # relative to the run folder
    exit: str = ""  # ExitCriteria.describe()
    note: str = ""


@dataclass
class Run:
    """A finished (or failed) pipeline run: its folder, config, stage records and models.

    models holds each stage's model in memory after Pipeline.run; a Run read back with
    Run.load has none (rollback then needs a model to load into).
    """

    path: Path | None
    name: str
    config: dict
    stages: list[StageRecord]
    models: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    seconds: float = 0.0

    def stage(self, name: str) -> StageRecord:
        for record in self.stages:
            if record.name == name:
                return record
        raise MtkitError(f"run {self.name!r} has no stage {name!r}: {self.stage_names}")

    @property
    def stage_names(self) -> list[str]:
        return [record.name for record in self.stages]

    def table(self) -> str:
        """A text table: one row per stage with its method, exit reason, epochs, scores, time."""
        rows = [
            {
                "stage": r.name,
                "method": r.method,
                "ended by": r.stopped_reason,
                "epochs": r.epochs,
                "best epoch": "-" if r.best_epoch is None else r.best_epoch,
                "val accuracy": score_text(r.scores.get("val_accuracy")),
                "test accuracy": score_text(r.scores.get("test_accuracy")),
                "seconds": f"{r.seconds:.1f}",
            }
            for r in self.stages
        ]
        return format_table(rows)

    def metrics(self) -> list[dict]:
        """Every epoch's record from metrics.jsonl, each with its "stage"."""
        if self.path is None:
            raise MtkitError("this run wrote no folder (not rank 0 of a distributed run)")
        return read_metrics(self.path / "metrics.jsonl")

    def plot(self, metrics=("train_loss", "val_loss")):
        """One panel per stage: `metrics` against epoch, titled with how the stage ended."""
        import matplotlib.pyplot as plt

        rows = self.metrics()
        figure, axes = plt.subplots(
            1, len(self.stages), figsize=(3.6 * len(self.stages), 3), squeeze=False
        )
        for ax, record in zip(axes[0], self.stages, strict=True):
            stage_rows = [row for row in rows if row["stage"] == record.name]
            for name in metrics:
                if any(name in row for row in stage_rows):
                    values = [row.get(name, float("nan")) for row in stage_rows]
                    ax.plot([row["epoch"] for row in stage_rows], values, label=name)
            if record.best_epoch is not None:
                ax.axvline(record.best_epoch, color="grey", linestyle="--", linewidth=1)
            ax.set_title(f"{record.name}: {record.stopped_reason}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
        figure.tight_layout()
        return figure

    @classmethod
    def load(cls, path) -> Run:
        """Read a run folder back (without models)."""
        path = files.check_folder("Run.load's path", path)
        if (path / "config.json").is_file() and not (path / "summary.json").exists():
            raise MtkitError(
                f"{path} holds a run that stopped before its first stage ended; finish it with "
                "mtkit.pipeline.resume (or pipeline.resume) first"
            )
        summary = read_summary(path / "summary.json", f"{path} is not a run folder")
        config = read_json(path / "config.json", f"{path} is not a run folder")
        if not isinstance(config, dict):
            raise MtkitError(f"{path / 'config.json'} is not a run's config: it is not an object")
        stages = [StageRecord(**record) for record in summary["stages"]]
        return cls(path, summary["name"], config, stages, seconds=summary["seconds"])


def rollback(run: Run | str | Path, stage: str, model: nn.Module | None = None) -> nn.Module:
    """Load the weights `stage` ended with in `run` back into a model; returns the model.

    run: a Run (from Pipeline.run or Run.load) or its folder.
    model: the network to load into, of that stage's architecture; default: the stage's model
        held by the Run (so whatever happened to it since, it is back to its checkpoint).
    The checkpoint is read with weights_only and checked against its hash and the model's
    class and shapes (mtkit.core.checkpoint.load_model_state).
    """
    folder = run.path if isinstance(run, Run) else files.check_folder("rollback's run", run)
    if folder is None:
        raise MtkitError("this run wrote no folder (not rank 0 of a distributed run)")
    # The stage names a file in checkpoints/: "../x" or a symlink must not lead elsewhere.
    checkpoint = files.child(folder / "checkpoints", stage, "rollback's stage", ".pt")
    if not checkpoint.exists():
        saved = sorted(p.stem for p in (folder / "checkpoints").glob("*.pt"))
        raise MtkitError(f"run {folder} has no checkpoint for stage {stage!r}; it has {saved}")
    if model is None:
        if not isinstance(run, Run) or stage not in run.models:
            raise MtkitError(
                f"pass model=... (a network of stage {stage!r}'s architecture) to load into: "
                "a run read from its folder holds no models"
            )
        model = run.models[stage]
    load_model_state(checkpoint, model)
    return model


@dataclass
class RunComparison:
    """compare_runs' result: `rows` (one per run and stage), a text table, a plot."""

    rows: list[dict]
    metric: str

    def table(self) -> str:
        return format_table(
            [
                {
                    "run": row["run"],
                    "stage": row["stage"],
                    "method": row["method"],
                    "ended by": row["ended by"],
                    "epochs": row["epochs"],
                    self.metric.replace("_", " "): score_text(row[self.metric]),
                    "seconds": f"{row['seconds']:.1f}",
                }
                for row in self.rows
            ]
        )

    def __str__(self) -> str:
        return self.table()

    def plot(self, ax=None):
        """Grouped bars: `metric` per stage, one colour per run. Returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        runs = list(dict.fromkeys(row["run"] for row in self.rows))
        stages = list(dict.fromkeys(row["stage"] for row in self.rows))
        width = 0.8 / len(runs)
        for index, run in enumerate(runs):
            values = {r["stage"]: r[self.metric] for r in self.rows if r["run"] == run}
            heights = [values.get(s) if values.get(s) is not None else np.nan for s in stages]
            positions = np.arange(len(stages)) + (index - (len(runs) - 1) / 2) * width
            ax.bar(positions, heights, width, label=run)
        ax.set_xticks(np.arange(len(stages)), stages)
        ax.set_ylabel(self.metric.replace("_", " "))
        known = [r[self.metric] for r in self.rows if r[self.metric] is not None]
        if known:  # zoom in: accuracies of similar runs differ by points, not tens of points
            low, high = min(known), max(known)
            margin = max(0.02, (high - low) / 2)
            ax.set_ylim(max(0.0, low - margin), min(1.0, high + margin) if high <= 1 else None)
        ax.legend(fontsize=8)
        return ax


def compare_runs(paths, metric: str = "test_accuracy") -> RunComparison:
    """One table (and `.plot()`) of several runs: per run and stage, how it ended and `metric`.

    paths: run folders (or Runs). The run column shows each folder's name.
    """
    rows = []
    for path in paths:
        run = path if isinstance(path, Run) else Run.load(path)
        label = run.path.name if run.path is not None else run.name
        for record in run.stages:
            rows.append(
                {
                    "run": label,
                    "stage": record.name,
                    "method": record.method,
                    "ended by": record.stopped_reason,
                    "epochs": record.epochs,
                    metric: record.scores.get(metric),
                    "seconds": record.seconds,
                }
            )
    if not rows:
        raise MtkitError("compare_runs needs at least one run with a finished stage")
    return RunComparison(rows, metric)


def format_table(rows: list[dict]) -> str:
    """Rows of equal keys as an aligned text table with a header line."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [columns] + [[str(row[column]) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def score_text(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def new_run_folder(runs_dir: Path, name: str) -> Path:
    """A new folder runs_dir/<YYYYmmdd-HHMMSS>-<name> (-2, -3, ... added when it exists);
    returns its path. MtkitError if `runs_dir` or `name` cannot name folders, or the folder
    cannot be made (runs_dir is a file, read-only, ...)."""
    runs_dir = files.check_folder("runs_dir", runs_dir)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{files.check_name('a run name', name)}"
    return files.new_folder(runs_dir, stem, "a run folder in runs_dir")


def write_json(path: Path, value) -> None:
    """Write `value` as JSON, atomically: a crash leaves the old file or the new, never half."""
    text = json.dumps(value, indent=2, default=str) + "\n"
    write_atomically(path, lambda file: file.write(text), mode="w")


def read_json(path: Path, what: str):
    """The JSON in `path`; MtkitError starting with `what` if it is missing or cannot be read
    (not UTF-8, not JSON, too large or too deeply nested: see mtkit.core.files.load_json)."""
    if not path.is_file():
        raise MtkitError(f"{what}: it has no {path.name}")
    try:
        return files.load_json(path)
    except MtkitError as error:
        raise MtkitError(f"{what}: {error}") from None


# What summary.json and each of its stage records hold: field -> (allowed kinds, default).
# _REQUIRED fields must be there; an int counts as a float, a bool as neither.
_REQUIRED = files.REQUIRED
_SUMMARY_FIELDS = {"name": ((str,), _REQUIRED), "finished": ((bool,), False),
                   "error": ((str, type(None)), None), "seconds": ((float,), _REQUIRED),
                   "stages": ((list,), _REQUIRED)}  # fmt: skip
_RECORD_FIELDS = {"name": ((str,), _REQUIRED), "method": ((str,), _REQUIRED),
                  "stopped_reason": ((str,), _REQUIRED), "epochs": ((int,), _REQUIRED),
                  "best_epoch": ((int, type(None)), _REQUIRED), "scores": ((dict,), _REQUIRED),
                  "seconds": ((float,), _REQUIRED), "checkpoint": ((str, type(None)), _REQUIRED),
                  "exit": ((str,), ""), "note": ((str,), "")}  # fmt: skip


def read_summary(path: Path, what: str) -> dict:
    """summary.json of a run folder, every field checked: {"name", "finished", "error",
    "seconds", "stages"}, where "stages" is a list of dicts that StageRecord(**record) takes.

    MtkitError starting with `what` and naming the file and the field when it is missing,
    unreadable or a field has the wrong type (e.g. "stages": 5, "finished": "yes"), a stage
    name cannot name a file, or a stage's checkpoint lies outside the run folder.
    """
    summary = files.check_json_object(read_json(path, what), _SUMMARY_FIELDS, f"{what}: {path}", "")
    for index, record in enumerate(summary["stages"]):
        where = f"{what}: {path}"
        record = files.check_json_object(record, _RECORD_FIELDS, where, f"stages[{index}].")
        try:
            files.check_name("its name", record["name"])
            for metric, score in record["scores"].items():
                if not (score is None or files.is_kind(score, float)):
                    raise MtkitError(f"scores.{metric} must be a number, got {score!r:.60}")
            if record["checkpoint"] is not None:
                files.path_inside(path.parent, record["checkpoint"], "its checkpoint")
        except MtkitError as error:
            raise MtkitError(f"{where}: stages[{index}]: {error}") from None
        summary["stages"][index] = record
    return summary


# metrics.jsonl is appended to after every epoch, so a process killed while writing can leave
# a last line cut short: readers skip it, and a resumed run rewrites the file without it.


def read_metrics(path: Path) -> list[dict]:
    """Every complete row of a metrics.jsonl file (none when it does not exist)."""
    if not path.exists():
        return []
    rows = files.load_json_lines(path, last_may_be_cut=True)
    for number, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("stage"), str):
            raise MtkitError(f"{path}, line {number}, is not an epoch's record with its stage")
    return [row for _, row in rows]


def append_metrics(path: Path, stage: str, record: dict) -> None:
    """Add one epoch's record of `stage` to metrics.jsonl."""
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps({"stage": stage, **record}) + "\n")


def replace_stage_metrics(path: Path, stage: str, records: list[dict]) -> None:
    """Rewrite metrics.jsonl (atomically) with `records` as the rows of `stage`, after the
    rows of the other stages (a resumed stage: the epochs its restored History holds)."""
    rows = [row for row in read_metrics(path) if row.get("stage") != stage]
    rows += [{"stage": stage, **record} for record in records]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    write_atomically(path, lambda file: file.write(text), mode="w")


def write_summary(run: Run, finished: bool = False, error: str | None = None) -> None:
    summary = {
        "name": run.name,
        "finished": finished,
        "error": error,
        "seconds": run.seconds,
        "stages": [dataclasses.asdict(record) for record in run.stages],
    }
    write_json(run.path / "summary.json", summary)


def split_record(split) -> dict:
    """What split.json holds: the dataset, the split's seeds, sizes and index fingerprints."""

    def fingerprint(indices) -> str:  # 12 hex digits: enough to tell two splits apart
        return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]

    parts = ("labelled", "validation", "unlabelled", "test")
    return {
        "dataset": getattr(split.labelled, "name", "custom"),
        "seed": split.seed,
        "test_seed": split.test_seed,
        "labels_per_class": split.labels_per_class,
        "validation_per_class": split.validation_per_class,
        "sizes": {part: len(getattr(split, part)) for part in parts},
        "index_fingerprints": {
            part: fingerprint(getattr(split, f"{part}_indices")) for part in parts
        },
    }


def environment() -> dict:
    """What environment.json holds: the versions and machine a run used."""

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: version(p) for p in ("mtkit", "torch", "numpy", "scikit-learn")},
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "processes": distributed.world_size(),
    }
