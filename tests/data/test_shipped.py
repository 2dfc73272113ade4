"""The files that install with mtkit: saved benchmark results and example configs."""

import pytest

from mtkit.core.utils import MtkitError
from mtkit.data import shipped
from mtkit.pipeline import load_config


def test_saved_results_and_example_configs_load_from_the_package():
    for name in shipped.SAVED_RESULTS:
        assert shipped.saved_results(name)["rows"]
    for name in shipped.EXAMPLE_CONFIGS:
        assert load_config(shipped.example_config(name)).name


@pytest.mark.parametrize("name", ["mnist", "", "../text", "TEXT", None, 3])
def test_unknown_names_are_refused_with_the_choices(name):
    with pytest.raises(MtkitError, match="text"):
        shipped.saved_results(name)
    with pytest.raises(MtkitError, match="digits_pipeline"):
        shipped.example_config(name)


def test_a_results_file_missing_from_the_install_says_to_reinstall(monkeypatch, tmp_path):
    monkeypatch.setattr(shipped, "results_folder", lambda: tmp_path)
    with pytest.raises(MtkitError, match="text.json is missing.*reinstall mtkit"):
        shipped.saved_results("text")
