"""Staged hyperparameter search: one stage at a time, each scored on validation data only."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from mtkit.core import distributed
from mtkit.core.files import check_folder, check_name
from mtkit.core.utils import MtkitError, check_positive
from mtkit.pipeline.config import PipelineConfig, read_section
from mtkit.pipeline.records import (
    format_table,
    new_run_folder,
    score_text,
    write_atomically,
    write_json,
)
from mtkit.pipeline.runner import RunContext
from mtkit.pipeline.stages import build_pipeline, classifier_scores, make_split, probe_scores


@dataclass
class SearchResult:
    """What staged_search found.

    rows: one per trial: stage, trial, settings, val_accuracy (the stage's selection score),
        seconds, chosen. best_config: the base config with every stage's chosen settings.
    test_accuracy: of the final chosen model, measured once, after all choices were made.
    path: the folder with results.csv, results.json, best_config.toml and search.png.
    """

    rows: list[dict]
    best_config: PipelineConfig
    test_accuracy: float | None
    path: Path | None
    models: dict[str, nn.Module] = field(default_factory=dict, repr=False)

    def table(self) -> str:
        return format_table(
            [
                {
                    "stage": r["stage"],
                    "trial": r["trial"],
                    "settings": ", ".join(f"{k}={v}" for k, v in r["settings"].items()),
                    "val accuracy": score_text(r["val_accuracy"]),
                    "seconds": f"{r['seconds']:.1f}",
                    "chosen": "←" if r["chosen"] else "",
                }
                for r in self.rows
            ]
        )

    def plot(self):
        """One panel per searched stage: each trial's selection score, the chosen one marked."""
        import matplotlib.pyplot as plt

        stages = list(dict.fromkeys(r["stage"] for r in self.rows))
        figure, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3), squeeze=False)
        for ax, stage in zip(axes[0], stages, strict=True):
            rows = [r for r in self.rows if r["stage"] == stage]
            colours = ["tab:orange" if r["chosen"] else "tab:blue" for r in rows]
            ax.barh(range(len(rows)), [r["val_accuracy"] for r in rows], color=colours)
            labels = [", ".join(f"{k}={v}" for k, v in r["settings"].items()) for r in rows]
            ax.set_yticks(range(len(rows)), labels, fontsize=8)
            scores = [r["val_accuracy"] for r in rows]
            ax.set_xlim(max(0.0, min(scores) - 0.05), min(1.0, max(scores) + 0.02))
            proxy = "linear-probe " if stage == "pretrain" else ""
            ax.set_xlabel(f"{proxy}validation accuracy")
            ax.set_title(stage)
        figure.tight_layout()
        return figure


def search_space_trials(space: dict[str, list], trials: int | None, rng) -> list[dict]:
    """Grid search (trials=None): every combination, in order. Random search: `trials` distinct
    combinations drawn at random (all of them if the grid has no more)."""
    for name, values in space.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise MtkitError(f"search space {name!r} must be a non-empty list of values")
    grid = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    if trials is None or trials >= len(grid):
        return grid
    check_positive("trials", trials, integer=True)
    return [grid[i] for i in sorted(rng.choice(len(grid), size=trials, replace=False))]


def staged_search(
    config: PipelineConfig,
    spaces: dict[str, dict[str, list]],
    *,
    trials: int | None = None,
    seed: int = 0,
    runs_dir="runs",
    progress: bool = False,
) -> SearchResult:
    """Search hyperparameters one stage at a time, in pipeline order, never across stages.

    spaces: {stage: {field: [values, ...]}}, e.g. {"pretrain": {"latent_size": [16, 64]},
        "finetune": {"strategy": ["linear_probe", "full"], "lr": [1e-3, 1e-2]}}. Fields are
        those of the stage's config section; a stage without a space runs once as configured.
    trials: None for grid search (every combination), or a number of random combinations
        per stage (seeded by `seed`).
    Each stage's candidates all start from the model the previous stage chose, and are scored
    on validation data only: pretraining by a cheap proxy, the linear-probe accuracy of its
    frozen features (no fine-tuning needed); later stages by their validation accuracy. Test
    data is used once, for the final chosen model. Writes results.csv, results.json,
    best_config.toml and search.png into runs_dir/<time>-search-<name>/ (rank 0 only).
    """
    # Checked now, not when the folder is written at the end, after all the training.
    runs_dir = check_folder("runs_dir", runs_dir)
    check_name("a search's name", f"search-{config.name}")
    unknown = [stage for stage in spaces if stage not in config.stages]
    if unknown:
        raise MtkitError(f"no stage {unknown[0]!r} in this config's stages {list(config.stages)}")
    for stage, space in spaces.items():
        section_fields = [f.name for f in dataclasses.fields(getattr(config, stage))]
        for name in space:
            if name not in section_fields:
                raise MtkitError(f"unknown field {stage}.{name}; [{stage}] has: {section_fields}")
    rng = np.random.default_rng(seed)
    context = RunContext(make_split(config.data), seed=config.seed, progress=progress)
    context.score_test = False
    rows, models, model, best = [], {}, None, config
    for stage_name in config.stages:
        candidates = search_space_trials(spaces.get(stage_name, {}), trials, rng)
        outcomes = []
        for trial, settings in enumerate(candidates):
            section = read_section(
                type(getattr(best, stage_name)),
                {**_fields_set(getattr(best, stage_name)), **settings},
                f"{stage_name}.",
            )
            trial_config = dataclasses.replace(best, **{stage_name: section})
            stage = build_pipeline(trial_config).stages[trial_config.stages.index(stage_name)]
            started = time.perf_counter()
            encode = context.encode
            output = stage.train(context, model, stage.exit, stage.exit.callbacks())
            outcomes.append((output, trial_config, context.encode))
            context.encode = encode  # each text trial sets its own; the chosen one is put back
            rows.append(
                {
                    "stage": stage_name,
                    "trial": trial,
                    "settings": settings,
                    "val_accuracy": output.scores["val_accuracy"],
                    "seconds": time.perf_counter() - started,
                    "chosen": False,
                }
            )
        scores = [output.scores["val_accuracy"] for output, _, _ in outcomes]
        chosen = int(np.argmax(scores))  # ties: the first, i.e. the earlier candidate
        rows[len(rows) - len(outcomes) + chosen]["chosen"] = True
        output, best, context.encode = outcomes[chosen]
        models[stage_name] = model = output.model

    context.score_test = True  # all choices are made: now, and only now, the test data
    if config.stages[-1] == "pretrain":
        test_accuracy = probe_scores(model.encoder, context)["test_accuracy"]
    else:
        test_accuracy = classifier_scores(model, context)["test_accuracy"]
    result = SearchResult(rows, best, test_accuracy, None, models)
    if distributed.is_main_process():
        _write_search_folder(result, runs_dir, f"search-{config.name}")
    return result


def _write_search_folder(result: SearchResult, runs_dir: Path, name: str) -> None:
    """Write the search's folder (result.path); if that fails (a read-only or full disk),
    warn and leave result.path None: the search's result is returned all the same."""
    try:
        result.path = new_run_folder(runs_dir, name)
        _write_search(result)
    except (MtkitError, OSError) as error:
        reason = str(error) if isinstance(error, MtkitError) else f"{type(error).__name__}: {error}"
        warnings.warn(
            f"could not write the search's folder ({reason}); the result is returned "
            f"{'with its folder incomplete' if result.path else 'without a folder'}",
            stacklevel=3,
        )


def _fields_set(section) -> dict:
    """A config section's fields that are set (None means absent in TOML terms)."""
    return {k: v for k, v in dataclasses.asdict(section).items() if v is not None}


def _write_search(result: SearchResult) -> None:
    """Every file atomically (write_atomically): a crash never leaves half of one."""
    import csv

    import matplotlib.pyplot as plt

    def write_csv(file):
        writer = csv.writer(file)
        writer.writerow(["stage", "trial", "settings", "val_accuracy", "seconds", "chosen"])
        for r in result.rows:
            settings = json.dumps(r["settings"])
            writer.writerow(
                [r["stage"], r["trial"], settings, r["val_accuracy"], r["seconds"], r["chosen"]]
            )

    write_atomically(result.path / "results.csv", write_csv, mode="w")
    write_json(
        result.path / "results.json",
        {"rows": result.rows, "test_accuracy_of_best": result.test_accuracy},
    )
    toml = result.best_config.to_toml()
    write_atomically(result.path / "best_config.toml", lambda file: file.write(toml), mode="w")
    figure = result.plot()
    write_atomically(
        result.path / "search.png", lambda file: figure.savefig(file, format="png", dpi=100)
    )
    plt.close(figure)
