import json

from mtkit.__main__ import main


def test_demo_prints_a_results_table_and_saves_results(tmp_path, capsys):
    assert main(["demo", "--seeds", "2", "--epochs", "3", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "test reconstruction MSE" in printed and "±" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["seed"] for r in results] == [0, 1]
    assert all(r["error_after"] < r["error_before"] for r in results)
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000


def test_demo_rejects_nonsense(capsys, tmp_path):
    assert main(["demo", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "seeds must be a positive integer" in capsys.readouterr().err
