"""Files that install with mtkit, so the notebooks work wherever they are opened.

A notebook opened in a hosted service, or copied out of the repository, has no `bench/` and no
`configs/` beside it. What it reads therefore ships inside the package and is found with
importlib.resources, in a checkout and in an installed wheel alike:

    saved_results(name)   the rows a benchmark script saved (bench/text.py → "text",
                          bench/minilm.py → "minilm"), from mtkit/data/results/NAME.json
    example_config(name)  the path of an example pipeline config, mtkit/configs/NAME.toml,
                          for `python -m mtkit run PATH` or `run_config(PATH)`

The benchmark scripts write their results both to bench/results/ and here (a test checks that
the two copies agree).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mtkit.core.files import load_json
from mtkit.core.utils import MtkitError, check_choice

SAVED_RESULTS = ("text", "minilm")
EXAMPLE_CONFIGS = ("digits_pipeline", "tweets_pipeline")


def results_folder():
    """The folder of the saved results inside the installed package (a Traversable)."""
    return resources.files("mtkit.data") / "results"


def saved_results(name: str) -> dict:
    """The results `bench/NAME.py` saved: a dict with "machine", "seconds" and "rows" (one dict
    per method, labels per class and seed: the fields of experiments.EfficiencyRow).

    name: one of SAVED_RESULTS. Raises MtkitError for another name, or when the file is missing
    from the installed package (a broken install).
    """
    check_choice("saved results name", name, SAVED_RESULTS)
    resource = results_folder() / f"{name}.json"
    if not resource.is_file():
        raise MtkitError(
            f"saved_results({name!r}): {name}.json is missing from the installed package "
            f"({results_folder()}); reinstall mtkit"
        )
    return load_json(resource)


def example_config(name: str) -> Path:
    """The path of the example pipeline config `name` (one of EXAMPLE_CONFIGS) inside the
    installed package: `python -m mtkit run <that path>` runs it.

    Raises MtkitError for another name, or when the file is missing (a broken install).
    """
    check_choice("example config", name, EXAMPLE_CONFIGS)
    resource = resources.files("mtkit") / "configs" / f"{name}.toml"
    if not resource.is_file():
        raise MtkitError(
            f"example_config({name!r}): {name}.toml is missing from the installed package; "
            "reinstall mtkit"
        )
    # Installed as plain files (pip never installs mtkit zipped), so this is a real path.
    return Path(str(resource))
