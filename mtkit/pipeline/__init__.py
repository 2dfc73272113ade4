"""Multi-stage pipelines: stages with exit criteria, a folder recording every run, rollback, search.

    pipeline = Pipeline([pretrain_stage(...), finetune_stage(...), adapt_stage(...)])
    run = pipeline.run(RunContext(split))     # trains, and writes runs/<time>-<name>/
    print(run.table())                        # each stage: how it ended and why, its scores
    model = rollback(run, "finetune")         # that stage's weights back, exactly

    run = run_config("mtkit/configs/digits_pipeline.toml")      # the same from a config file
    run = resume("runs/20261122-083248-digits")           # finish a run that was killed

A *stage* is one training call (pretrain_autoencoder, fine_tune, train_adapter, ...) with
explicit exit criteria: at most `max_epochs`, early stopping after `patience` epochs without
progress, or a `target` value reached, whichever comes first. The model a stage ends with goes
to the next stage. Every run leaves a folder behind that says exactly what happened:

    runs/20261122-083248-digits/
        config.json          everything that determines the run (config.toml too, for configs)
        split.json           the data split: dataset, seeds, sizes, a fingerprint of each part
        environment.json     Python, torch, NumPy, scikit-learn and mtkit versions, processes
        metrics.jsonl        one line per epoch: {"stage": "finetune", "epoch": 3, ...}
        checkpoints/<stage>.pt   the weights each stage ended with (atomic, weights only)
        summary.json         per stage: why it stopped, epochs, best epoch, scores, seconds
        resume/<stage>.pt    while the run is unfinished: each stage's whole training state
                             after its last epoch, so a killed run can be finished exactly

The files, one idea each:
    exit.py      ExitCriteria, TargetReached: when a stage stops
    runner.py    Stage, StageOutput, RunContext, Pipeline: running stages, writing the folder
    records.py   Run, StageRecord, rollback, compare_runs: reading a run folder back
    config.py    PipelineConfig and its sections, read from TOML with a check per field
    stages.py    pretrain_stage, finetune_stage, adapt_stage, build_pipeline, run_config,
                 resume
    training_state.py  TrainingState: a fit's whole state after every epoch, to go on from
    search.py    staged_search, SearchResult: hyperparameters chosen one stage at a time
"""

from mtkit.pipeline.config import (
    AdaptConfig,
    DataConfig,
    FineTuneConfig,
    PipelineConfig,
    PretrainConfig,
    config_from_dict,
    describe_config,
    load_config,
)
from mtkit.pipeline.exit import STOP_REASONS, ExitCriteria, TargetReached
from mtkit.pipeline.records import Run, RunComparison, StageRecord, compare_runs, rollback
from mtkit.pipeline.runner import Pipeline, RunContext, Stage, StageOutput
from mtkit.pipeline.search import SearchResult, staged_search
from mtkit.pipeline.stages import (
    adapt_stage,
    build_pipeline,
    finetune_stage,
    make_split,
    pretrain_stage,
    resume,
    run_config,
)
from mtkit.pipeline.training_state import TrainingState

__all__ = [
    "AdaptConfig",
    "DataConfig",
    "ExitCriteria",
    "FineTuneConfig",
    "Pipeline",
    "PipelineConfig",
    "PretrainConfig",
    "Run",
    "RunComparison",
    "RunContext",
    "STOP_REASONS",
    "SearchResult",
    "Stage",
    "StageOutput",
    "StageRecord",
    "TargetReached",
    "TrainingState",
    "adapt_stage",
    "build_pipeline",
    "compare_runs",
    "config_from_dict",
    "describe_config",
    "finetune_stage",
    "load_config",
    "make_split",
    "pretrain_stage",
    "resume",
    "rollback",
    "run_config",
    "staged_search",
]
