"""Run folders that were damaged or edited, names that would lead outside their folder, and
config dataclasses built in Python with the wrong types: clear errors, never a traceback."""

from __future__ import annotations

import copy
import json

import pytest
from torch import nn

from mtkit.__main__ import main
from mtkit.core.checkpoint import save_model
from mtkit.core.utils import MtkitError
from mtkit.pipeline import (
    AdaptConfig,
    FineTuneConfig,
    PipelineConfig,
    PretrainConfig,
    Run,
    load_config,
    rollback,
    staged_search,
)
from mtkit.pipeline.config import DataConfig
from mtkit.pipeline.records import new_run_folder, read_metrics, read_summary

BAD_NAMES = ["..", "../x", "../../outside", "a/b", "", ".", "/abs", "x" * 300, "a\x00b",
             "\udcff", "a\\b", "line\nbreak", 7, None]  # fmt: skip

RECORD = {
    "name": "pretrain",
    "method": "denoising autoencoder",
    "stopped_reason": "max_epochs",
    "epochs": 2,
    "best_epoch": 1,
    "scores": {"val_loss": 0.5, "test_accuracy": None},
    "seconds": 1.5,
    "checkpoint": "checkpoints/pretrain.pt",
    "exit": "2 epochs",
    "note": "",
}
SUMMARY = {"name": "tiny", "finished": True, "error": None, "seconds": 3.0, "stages": [RECORD]}


def run_folder(tmp_path, summary=SUMMARY):
    """A run folder with a summary.json and a config.json (and one checkpoint); its path."""
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.json").write_text(json.dumps({"pipeline": "tiny"}))
    save_model(folder / "checkpoints" / "pretrain.pt", nn.Linear(2, 2))
    return folder


def test_a_well_formed_run_folder_loads(tmp_path):
    run = Run.load(run_folder(tmp_path))
    assert run.stage_names == ["pretrain"] and run.stages[0].scores["val_loss"] == 0.5
    older = {k: v for k, v in SUMMARY.items() if k not in ("finished", "error")}
    older["stages"] = [{k: v for k, v in RECORD.items() if k not in ("exit", "note")}]
    assert Run.load(run_folder(tmp_path / "older", older)).stages[0].note == ""


@pytest.mark.parametrize("stage", BAD_NAMES, ids=repr)
def test_rollback_never_reads_outside_the_run_folder(stage, tmp_path):
    folder = run_folder(tmp_path)
    save_model(tmp_path / "outside.pt", nn.Linear(2, 2))  # what "../../outside" reaches today
    with pytest.raises(MtkitError, match="rollback's stage names files and folders"):
        rollback(folder, stage=stage, model=nn.Linear(2, 2))


def test_rollback_refuses_a_checkpoint_that_is_a_symlink_out_of_the_folder(tmp_path):
    folder = run_folder(tmp_path)
    save_model(tmp_path / "elsewhere.pt", nn.Linear(2, 2))
    (folder / "checkpoints" / "linked.pt").symlink_to(tmp_path / "elsewhere.pt")
    with pytest.raises(MtkitError, match="leads outside"):
        rollback(folder, stage="linked", model=nn.Linear(2, 2))
    model = nn.Linear(2, 2)
    assert rollback(folder, stage="pretrain", model=model) is model  # the good case


def changed(path: str, value):
    """SUMMARY with the field at `path` ("stages.0.epochs") set to `value` (or removed)."""
    summary = copy.deepcopy(SUMMARY)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = summary
    for part in parents:
        target = target[part]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return summary


BAD_SUMMARIES = {
    "stages is a number": ("stages", 5, "field stages must be list"),
    "finished is a string": ("finished", "yes", "field finished must be bool"),
    "seconds is a string": ("seconds", "3", "field seconds must be float"),
    "seconds is true": ("seconds", True, "field seconds must be float"),
    "name is a number": ("name", 5, "field name must be str"),
    "error is a list": ("error", ["x"], "field error must be str or null"),
    "name is missing": ("name", KeyError, "field name is missing"),
    "a stage is a string": ("stages.0", "pretrain", r"stages\[0\] must be a JSON object"),
    "a stage lacks a key": ("stages.0.epochs", KeyError, r"field stages\[0\]\.epochs is missing"),
    "epochs is a string": ("stages.0.epochs", "2", r"stages\[0\]\.epochs must be int"),
    "epochs is a float": ("stages.0.epochs", 2.0, r"stages\[0\]\.epochs must be int"),
    "scores is a list": ("stages.0.scores", [1], r"stages\[0\]\.scores must be dict"),
    "a score is text": ("stages.0.scores.val_loss", "low", "scores.val_loss must be a number"),
    "an unknown field": ("stages.0.colour", "red", r"unknown field stages\[0\]\.colour"),
    "a stage name with a path": ("stages.0.name", "../x", "names files and folders"),
    "a checkpoint outside": ("stages.0.checkpoint", "../../x.pt", "its checkpoint"),
    "an absolute checkpoint": ("stages.0.checkpoint", "/etc/passwd", "its checkpoint"),
    "a checkpoint that is a number": ("stages.0.checkpoint", 3, "checkpoint must be str or null"),
}


@pytest.mark.parametrize("field,value,message", BAD_SUMMARIES.values(), ids=BAD_SUMMARIES.keys())
def test_a_summary_with_wrong_fields_is_an_error_naming_the_file_and_the_field(
    field, value, message, tmp_path
):
    folder = run_folder(tmp_path, changed(field, value))
    with pytest.raises(MtkitError, match=r"summary\.json.*" + message):
        Run.load(folder)
    with pytest.raises(MtkitError, match=r"cannot resume .*summary\.json.*" + message):
        read_summary(folder / "summary.json", f"cannot resume {folder}")


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("file", ["summary.json", "config.json"])
def test_deeply_nested_json_in_a_run_folder_is_an_error_naming_the_file(file, tmp_path):
    folder = run_folder(tmp_path)
    (folder / file).write_text(DEEP)
    with pytest.raises(MtkitError, match=f"{file} is nested more than 100 levels deep"):
        Run.load(folder)
    (folder / file).write_bytes(b'{"name": "\xff"}')
    with pytest.raises(MtkitError, match=f"{file} is not valid JSON: it is not UTF-8"):
        Run.load(folder)


def test_metrics_lines_are_bounded_and_checked(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(DEEP + "\n" + '{"stage": "a", "epoch": 1}\n')
    with pytest.raises(MtkitError, match=r"line 1, is nested more than 100"):
        read_metrics(path)
    path.write_text('[1, 2]\n{"stage": "a", "epoch": 1}\n')
    with pytest.raises(MtkitError, match=r"line 1, is not an epoch's record"):
        read_metrics(path)
    path.write_text('{"stage": "a", "epoch": 1}\n{"stage": "a", "ep')  # cut short by a kill
    assert read_metrics(path) == [{"stage": "a", "epoch": 1}]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_run_name_that_is_not_a_plain_name_makes_no_folder(name, tmp_path):
    with pytest.raises(MtkitError, match="a run name"):
        new_run_folder(tmp_path / "runs", name)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("runs_dir", ["a\x00b", "runs/\udcff", "x" * 300, "", 5, b"runs"], ids=repr)
def test_a_runs_dir_that_cannot_be_a_folder_is_an_error_naming_it(runs_dir, tmp_path):
    with pytest.raises(MtkitError, match="runs_dir"):
        new_run_folder(runs_dir, "tiny")


def test_a_runs_dir_that_is_a_file_or_read_only_is_an_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MtkitError, match="cannot make a run folder in runs_dir"):
        new_run_folder(tmp_path / "file", "tiny")
    with pytest.raises(MtkitError, match="cannot make a run folder in runs_dir"):
        new_run_folder(tmp_path / "file" / "below", "tiny")
    first, second = new_run_folder(tmp_path, "tiny"), new_run_folder(tmp_path, "tiny")
    assert first != second and first.parent == second.parent == tmp_path


BAD_CONFIGS = {
    "max_epochs as text": (lambda: PretrainConfig(max_epochs="5"), "max_epochs must be an int"),
    "max_epochs true": (lambda: PretrainConfig(max_epochs=True), "max_epochs must be an int"),
    "max_epochs a float": (lambda: FineTuneConfig(max_epochs=5.0), "max_epochs must be an int"),
    "lr as text": (lambda: PretrainConfig(lr="1e-3"), "pretrain.lr must be a number"),
    "lr nan": (lambda: FineTuneConfig(lr=float("nan")), "finetune.lr must be a finite"),
    "target nan": (lambda: FineTuneConfig(target=float("nan")), "finetune.target must be a fin"),
    "target inf": (lambda: AdaptConfig(target=float("inf")), "adapt.target must be a finite"),
    "target as text": (lambda: AdaptConfig(target="0.9"), "adapt.target must be a number"),
    "size as text": (lambda: AdaptConfig(size="4"), "adapt.size must be an integer"),
    "augment as 1": (lambda: FineTuneConfig(augment=1), "finetune.augment must be true or false"),
    "hidden_sizes text": (lambda: PretrainConfig(hidden_sizes="256"), "sizes must be a list"),
    "hidden_sizes mixed": (lambda: PretrainConfig(hidden_sizes=[8, "x"]), "sizes must be a list"),
    "mask_rate as text": (lambda: PretrainConfig(mask_rate="0.1"), "pretrain.mask_rate must"),
    "labels as text": (lambda: DataConfig(labels_per_class="1"), "per_class must be an int"),
    "test_size as text": (lambda: DataConfig(test_size="0.2"), "data.test_size must"),
    "seed as float": (lambda: PipelineConfig(seed=1.0), "seed must be an integer"),
    "stages as text": (lambda: PipelineConfig(stages="pretrain"), "stages must be a list"),
    "a section as a dict": (lambda: PipelineConfig(data={}), "data must be a DataConfig"),
    "a run name with a path": (lambda: PipelineConfig(name="../x"), "must be a plain file name"),
    "a non-UTF-8 run name": (lambda: PipelineConfig(name="run\udcff"), "valid UTF-8 text"),
}


@pytest.mark.parametrize("build,message", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_a_config_built_in_python_with_a_wrong_type_names_the_field(build, message):
    with pytest.raises(MtkitError, match=message):
        build()


def test_a_config_built_in_python_with_the_right_types_still_works():
    pretrain = PretrainConfig(hidden_sizes=[16, 8], lr=1, target=None, patience=None)
    assert pretrain.hidden_sizes == (16, 8) and pretrain.patience == 0
    config = PipelineConfig(stages=["pretrain", "finetune"], pretrain=pretrain)
    assert config.stages == ("pretrain", "finetune")
    assert FineTuneConfig(lr=None, target=0.9).target == 0.9


BAD_TOML = {
    "deep arrays": ("[pretrain]\nhidden_sizes = " + DEEP, "nested more than 100"),
    "deep inline tables": ("data = " + "{a = " * 3000 + "1" + "}" * 3000, "nested more than"),
    "deep dotted keys": ("a." * 5000 + "b = 1", "key of more than 100 dotted parts"),
    "not UTF-8": (b"name = 'caf\xe9'", "not valid TOML: it is not UTF-8"),
    "a huge integer": ("seed = " + "9" * 5000, "not valid TOML: Exceeds the limit"),
}


@pytest.mark.parametrize("text,message", BAD_TOML.values(), ids=BAD_TOML.keys())
def test_a_config_file_that_cannot_be_read_is_an_error_naming_the_file(
    text, message, tmp_path, capsys
):
    path = tmp_path / "config.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(MtkitError, match=r"config\.toml .*" + message):
        load_config(path)
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "config.toml" in capsys.readouterr().err


@pytest.mark.parametrize("runs_dir", ["a\x00b", "runs-\udcff"], ids=repr)
def test_the_cli_refuses_a_runs_dir_that_cannot_be_a_folder(runs_dir, tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text('stages = ["pretrain"]\n[pretrain]\nmax_epochs = 1\n')
    assert main(["run", str(path), "--runs-dir", runs_dir]) == 2
    assert "--runs-dir" in capsys.readouterr().err  # named as the user typed it


@pytest.mark.parametrize("out", ["a\x00b", "out-\udcff"], ids=repr)
def test_the_demo_refuses_an_out_folder_that_cannot_be_a_folder_before_any_work(out, capsys):
    assert main(["demo", "--datasets", "digits", "--quick", "--out", out]) == 2
    assert "--out" in capsys.readouterr().err


def tiny_search_config() -> PipelineConfig:
    pretrain = PretrainConfig(hidden_sizes=(8,), latent_size=4, max_epochs=1)
    return PipelineConfig(name="tiny", stages=("pretrain",), pretrain=pretrain)


@pytest.mark.parametrize("runs_dir", ["a\x00b", "runs-\udcff", "x" * 300], ids=repr)
def test_a_search_checks_its_runs_dir_before_training(runs_dir):
    with pytest.raises(MtkitError, match="runs_dir"):
        staged_search(
            tiny_search_config(), {"pretrain": {"latent_size": [2, 3]}}, runs_dir=runs_dir
        )


def test_a_search_whose_folder_cannot_be_written_returns_its_result_with_a_warning(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.warns(UserWarning, match="could not write the search's folder"):
        result = staged_search(tiny_search_config(), {}, runs_dir=tmp_path / "file")
    assert result.path is None and result.models["pretrain"] is not None
    assert result.test_accuracy is not None
