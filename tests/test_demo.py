"""`python -m mtkit demo`: the whole pipeline, one table, results and figures (tiny settings)."""

import json
from pathlib import Path

from mtkit.__main__ import main
from mtkit.demo import digits_config, tweets_config
from mtkit.pipeline import load_config


def test_demo_runs_every_stage_over_seeds_and_prints_one_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--seeds", "2", "--datasets", "digits", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("data  ") :]
    for stage, method in (
        ("pretrain", "denoising autoencoder"),
        ("finetune", "linear probe"),
        ("adapt", "LoRA r=4"),
    ):
        line = next(line for line in table.splitlines() if f"  {stage}  " in line)
        assert line.startswith("digits") and method in line and " ± " in line

    rows = json.loads((out / "results.json").read_text())
    assert [row["stage"] for row in rows] == ["pretrain", "finetune", "adapt"]
    for row in rows:
        assert len(row["test_accuracies"]) == 2 and len(row["seconds"]) == 2
        assert all(0.2 < accuracy <= 1 for accuracy in row["test_accuracies"])  # chance: 0.1
        assert sum(row["ended_by"].values()) == 2
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2  # one run folder per seed
    assert all((run / "checkpoints" / "adapt.pt").exists() for run in runs)
    assert json.loads((runs[1] / "split.json").read_text())["seed"] == 1  # new labels per seed
    assert (out / "accuracy_by_stage.png").stat().st_size > 1000
    assert (out / "digits_curves.png").stat().st_size > 1000


def test_demo_rejects_nonsense(capsys, tmp_path):
    assert main(["demo", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "seeds must be a positive integer" in capsys.readouterr().err
    assert main(["demo", "--datasets", "mnist", "--out", str(tmp_path)]) == 2
    assert "unknown dataset ['mnist']" in capsys.readouterr().err


def test_the_shipped_configs_are_the_demo_pipelines():
    configs = Path(__file__).parents[1] / "mtkit" / "configs"
    assert load_config(configs / "digits_pipeline.toml") == digits_config()
    assert load_config(configs / "tweets_pipeline.toml") == tweets_config()
