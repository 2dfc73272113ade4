"""Pipelines: exit reasons, run folders, rollback, comparing runs, staged search, configs, CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mtkit.__main__ import main
from mtkit.core.checkpoint import load_model_state
from mtkit.core.train import fit
from mtkit.core.utils import MtkitError
from mtkit.data import few_labels, load_images
from mtkit.evaluation.metrics import linear_probe_accuracy
from mtkit.models import Classifier
from mtkit.pipeline import (
    AdaptConfig,
    ExitCriteria,
    FineTuneConfig,
    Pipeline,
    PipelineConfig,
    PretrainConfig,
    Run,
    RunContext,
    Stage,
    StageOutput,
    compare_runs,
    config_from_dict,
    describe_config,
    load_config,
    rollback,
    run_config,
    staged_search,
)
from mtkit.pipeline.config import DataConfig
from mtkit.pipeline.stages import new_autoencoder


def tiny_config(**overrides) -> PipelineConfig:
    """Digits, a small autoencoder and a few epochs per stage: a whole pipeline in ~a second."""
    values = dict(
        name="tiny",
        pretrain=PretrainConfig(hidden_sizes=(32,), latent_size=8, max_epochs=4),
        finetune=FineTuneConfig(strategy="full", max_epochs=5, patience=None),
        adapt=AdaptConfig(max_epochs=3, patience=None),
    )
    return PipelineConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Run, dict]:
    """One tiny run, shared; and a copy of each stage's weights as the stage ended."""
    run = run_config(tiny_config(), runs_dir=tmp_path_factory.mktemp("runs"))
    weights = {
        stage: {k: v.clone() for k, v in model.state_dict().items()}
        for stage, model in run.models.items()
    }
    return run, weights


# --- exit criteria --------------------------------------------------------------------------


def regression_stage(shift: float):
    """A stage that fits a line to y and validates on shift·y: with shift < 1 the validation
    loss falls and then rises, so patience ends it; with shift = 1 it keeps falling."""

    def train(context, model, exit, callbacks):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(128, 4, generator=generator)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        history = fit(
            model,
            lambda m, batch: F.mse_loss(m(batch[0]), batch[1]),
            (x, y),
            val_data=(x, shift * y),
            epochs=exit.max_epochs,
            lr=0.05,
            batch_size=32,
            monitor=exit.monitor,
            callbacks=callbacks,
            progress=False,
            device="cpu",
        )
        return StageOutput(model, history, {"val_loss": history.last["val_loss"]})

    return train


def test_each_stage_records_why_it_ended(tmp_path):
    split = few_labels(load_images("digits"), 5, seed=0)
    pipeline = Pipeline(
        [
            Stage("budget", regression_stage(1.0), ExitCriteria(max_epochs=3)),
            Stage("patience", regression_stage(0.5), ExitCriteria(max_epochs=100, patience=2)),
            Stage(
                "target",
                regression_stage(1.0),
                ExitCriteria(max_epochs=100, target=0.5, target_metric="val_loss"),
            ),
        ],
        name="exits",
    )
    run = pipeline.run(RunContext(split), runs_dir=tmp_path)

    reasons = {r.name: (r.stopped_reason, r.epochs) for r in run.stages}
    assert reasons["budget"] == ("completed", 3)
    assert reasons["patience"][0] == "early_stopping" and reasons["patience"][1] < 100
    assert run.stage("patience").best_epoch == reasons["patience"][1] - 2
    assert reasons["target"][0] == "target_reached"
    target_losses = [row["val_loss"] for row in run.metrics() if row["stage"] == "target"]
    assert target_losses[-1] <= 0.5 < min(target_losses[:-1])  # stopped at the first epoch <= 0.5
    assert "target val_loss ≤ 0.5" in run.stage("target").exit
    summary = json.loads((run.path / "summary.json").read_text())
    assert [s["stopped_reason"] for s in summary["stages"]] == [
        "completed",
        "early_stopping",
        "target_reached",
    ]


def test_a_failing_stage_is_recorded_and_raised(tmp_path):
    def broken(context, model, exit, callbacks):
        raise MtkitError("no data today")

    split = few_labels(load_images("digits"), 5, seed=0)
    pipeline = Pipeline(
        [Stage("fine", regression_stage(1.0), ExitCriteria(2)), Stage("bad", broken)]
    )
    with pytest.raises(MtkitError, match="no data today"):
        pipeline.run(RunContext(split), runs_dir=tmp_path)
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["finished"] is False
    assert "stage 'bad'" in summary["error"] and "no data today" in summary["error"]
    assert [s["name"] for s in summary["stages"]] == ["fine"]


# --- the run folder, rollback, comparison ------------------------------------------------------


def test_a_run_folder_holds_config_split_versions_metrics_checkpoints_summary(tiny_run):
    run, _ = tiny_run
    folder = run.path
    assert folder.name.endswith("-tiny")
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoints",
        "config.json",
        "config.toml",
        "environment.json",
        "metrics.jsonl",
        "split.json",
        "summary.json",
    ]
    assert load_config(folder / "config.toml") == tiny_config()  # the run can be repeated
    config = json.loads((folder / "config.json").read_text())
    assert config["config"]["finetune"]["strategy"] == "full"
    assert [s["exit"]["max_epochs"] for s in config["stages"]] == [4, 5, 3]

    split = json.loads((folder / "split.json").read_text())
    assert (split["dataset"], split["seed"], split["test_seed"]) == ("digits", 0, 0)
    assert split["sizes"]["labelled"] == 100
    environment = json.loads((folder / "environment.json").read_text())
    assert environment["packages"]["torch"] == torch.__version__.split("+")[0] or (
        environment["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    )

    metrics = run.metrics()
    assert [row["stage"] for row in metrics] == ["pretrain"] * 4 + ["finetune"] * 5 + ["adapt"] * 3
    assert all("val_loss" in row and "epoch" in row for row in metrics)

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["finished"] is True
    for record in summary["stages"]:
        assert 0 <= record["scores"]["val_accuracy"] <= 1
        assert 0 <= record["scores"]["test_accuracy"] <= 1
    for stage, model in run.models.items():  # each checkpoint loads (weights only) and fits
        metadata = load_model_state(folder / "checkpoints" / f"{stage}.pt", model)
        assert metadata["stage"] == stage


def test_rollback_restores_a_stage_exactly(tiny_run):
    run, weights = tiny_run
    model = run.models["finetune"]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # e.g. trained on by mistake after the run

    restored = rollback(run, "finetune")
    assert restored is model
    for name, tensor in restored.state_dict().items():
        assert torch.equal(tensor, weights["finetune"][name]), name

    # From the folder alone (a new session): load into a network of that architecture.
    fresh = Classifier(new_autoencoder(tiny_config().pretrain, (1, 8, 8)).encoder, 10)
    rollback(run.path, "finetune", model=fresh)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, weights["finetune"][name]), name


def test_rollback_explains_what_is_missing(tiny_run):
    run, _ = tiny_run
    with pytest.raises(MtkitError, match=r"no checkpoint for stage 'deploy'.*adapt"):
        rollback(run, "deploy")
    with pytest.raises(MtkitError, match="pass model="):
        rollback(Run.load(run.path), "finetune")


def test_compare_runs_gives_one_table_and_a_plot(tiny_run, tmp_path):
    run, _ = tiny_run
    other = run_config(tiny_config(name="other", seed=1), runs_dir=tmp_path)
    comparison = compare_runs([run.path, other.path])
    assert len(comparison.rows) == 6
    text = comparison.table()
    assert run.path.name in text and other.path.name in text and "test accuracy" in text
    values = [row["test_accuracy"] for row in comparison.rows if row["stage"] == "adapt"]
    assert values == [run.stage("adapt").scores["test_accuracy"], other.stage("adapt").scores[
        "test_accuracy"]]  # fmt: skip
    assert len(comparison.plot().patches) == 6
    assert len(Run.load(run.path).plot().axes) == 3


# --- staged search -------------------------------------------------------------------------------


def test_staged_search_chooses_each_stage_on_validation_and_saves_the_best(tmp_path):
    config = tiny_config(stages=("pretrain", "finetune"))
    spaces = {
        "pretrain": {"latent_size": [2, 16]},
        "finetune": {"strategy": ["linear_probe", "full"], "lr": [1e-4, 1e-2]},
    }
    result = staged_search(config, spaces, runs_dir=tmp_path)

    pretrain_rows = [r for r in result.rows if r["stage"] == "pretrain"]
    finetune_rows = [r for r in result.rows if r["stage"] == "finetune"]
    assert [r["settings"] for r in pretrain_rows] == [{"latent_size": 2}, {"latent_size": 16}]
    assert len(finetune_rows) == 4  # the grid: every combination
    for rows in (pretrain_rows, finetune_rows):
        best = max(rows, key=lambda r: r["val_accuracy"])
        assert [r["chosen"] for r in rows] == [r is best for r in rows]
    # The pretraining proxy is the linear-probe accuracy on validation data ...
    chosen_latent = next(r for r in pretrain_rows if r["chosen"])["settings"]["latent_size"]
    encoder = result.models["pretrain"].encoder
    assert encoder.output_size == chosen_latent
    split = few_labels(load_images("digits"), 10, seed=0)
    proxy = linear_probe_accuracy(encoder, split.labelled, split.validation)
    assert proxy == next(r for r in pretrain_rows if r["chosen"])["val_accuracy"]
    # ... and the best config holds every stage's choice, saved where it can be run again.
    chosen_finetune = next(r for r in finetune_rows if r["chosen"])["settings"]
    assert result.best_config.pretrain.latent_size == chosen_latent
    assert result.best_config.finetune.strategy == chosen_finetune["strategy"]
    assert result.best_config.finetune.lr == chosen_finetune["lr"]
    assert load_config(result.path / "best_config.toml") == result.best_config
    assert (result.path / "results.csv").read_text().count("\n") == 1 + 6
    assert 0 < result.test_accuracy <= 1
    assert "←" in result.table()


def test_random_search_draws_distinct_combinations_reproducibly(tmp_path):
    config = tiny_config(stages=("pretrain",))
    space = {"pretrain": {"latent_size": [2, 4, 8, 16], "noise_level": [0.0, 0.3]}}
    first = staged_search(config, space, trials=3, seed=5, runs_dir=tmp_path)
    again = staged_search(config, space, trials=3, seed=5, runs_dir=tmp_path)
    settings = [r["settings"] for r in first.rows]
    assert len(settings) == 3 and len({tuple(s.items()) for s in settings}) == 3
    assert settings == [r["settings"] for r in again.rows]


def test_a_search_space_must_name_real_fields(tmp_path):
    with pytest.raises(MtkitError, match=r"unknown field finetune\.epochs"):
        staged_search(tiny_config(), {"finetune": {"epochs": [1, 2]}}, runs_dir=tmp_path)
    with pytest.raises(MtkitError, match="no stage 'adapt'"):
        staged_search(
            tiny_config(stages=("pretrain",)), {"adapt": {"size": [1]}}, runs_dir=tmp_path
        )


# --- configs and the command line ---------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"finetune": {"strategy": "fulll"}},
            r"finetune\.strategy: 'fulll' is not allowed.*'full'",
        ),
        (
            {"finetune": {"epochs": 3}},
            r"unknown field finetune\.epochs; \[finetune\] has: .*max_epochs",
        ),
        ({"pretrain": {"lr": "fast"}}, r"pretrain\.lr must be a number, got 'fast'"),
        ({"finetune": {"patience": 1.5}}, r"finetune\.patience must be an integer"),
        (
            {"data": {"dataset": "mnist"}},
            r"data\.dataset: 'mnist' is not allowed.*'digits', 'tweets'",
        ),
        ({"adapt": {"monitor": "loss"}}, r"adapt\.monitor: 'loss' is not allowed.*'val_accuracy'"),
        ({"pretrain": {"hidden_sizes": [128, "x"]}}, r"pretrain\.hidden_sizes must be a list"),
        ({"stages": ["finetune", "pretrain"]}, r"stages must keep the order"),
        ({"stages": ["pretrain", "deploy"]}, r"stages: 'deploy' is not allowed"),
        ({"data": {"dataset": "tweets"}}, r"pretrain\.method .* choose one of \['masked_tokens'\]"),
        ({"adapt": 3}, r"adapt must be a \[section\]"),
        ({"batch_size": 3}, r"unknown field batch_size; the top level has: name, seed"),
    ],
)
def test_an_invalid_config_names_the_field_and_what_is_allowed(values, message):
    with pytest.raises(MtkitError, match=message):
        config_from_dict(values)


def test_a_config_survives_toml_and_absent_fields_keep_their_defaults(tmp_path):
    config = config_from_dict({"name": "x", "finetune": {"strategy": "full", "target": 0.9}})
    assert config.finetune.patience == 30 and config.finetune.lr is None  # defaults
    path = tmp_path / "x.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config
    assert DataConfig() == load_config(path).data


def test_run_help_explains_every_field(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    sections = [DataConfig, PretrainConfig, FineTuneConfig, AdaptConfig, PipelineConfig]
    for cls in sections:
        if cls.section:
            assert f"\n[{cls.section}]  " in text
        for field in dataclasses.fields(cls):
            if field.name not in ("data", "pretrain", "finetune", "adapt"):
                assert f"\n  {field.name} = " in text, field.name
    assert "one of: scratch, linear_probe, full" in " ".join(text.split())
    assert "torchrun" in text
    assert describe_config() in text.replace("\n\n\n", "\n\n")


def test_cli_run_reports_an_invalid_config_by_field(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[finetune]\nstrategy = "everything"\n')
    assert main(["run", str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    error = capsys.readouterr().err
    assert "finetune.strategy" in error and "linear_probe" in error
    assert not (tmp_path / "runs").exists()  # checked before any work

    broken = tmp_path / "broken.toml"
    broken.write_text("[finetune\n")
    assert main(["run", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_runs_a_config_file(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_config(stages=("pretrain", "finetune")).to_toml())
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert "pretrain" in printed and "finetune" in printed and "run folder:" in printed
    (folder,) = (tmp_path / "runs").iterdir()
    assert (folder / "checkpoints" / "finetune.pt").exists()
