"""Browser tests: the notebooks in JupyterLab, driven by Playwright in Debian's Chromium.

They are collected only when MTKIT_UI_TESTS=1 (`make test-ui` sets it), so that `pytest tests`
and `make test` stay the unit and nbval suite. What they need:

    sudo apt-get update && sudo apt-get install -y chromium    # /usr/bin/chromium
    .venv/bin/pip install -e '.[test]'                          # playwright (no browser download)

Each test gets a JupyterLab server of this session (127.0.0.1, a free port, a token) whose
configuration, data, runtime and matplotlib folders, and a copy of mtkit's cache, are all in a
temporary folder; the notebook is opened from a copy, so nothing is written into the repository
or $HOME except the screenshots under test-artifacts/screenshots/ (or $MTKIT_UI_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MTKIT_CHROMIUM", "/usr/bin/chromium")
INSTALL_HINT = (
    "the browser tests need Debian's Chromium at {path}; install it with\n"
    "    sudo apt-get update && sudo apt-get install -y chromium\n"
    "(or point MTKIT_CHROMIUM at a Chromium binary). Playwright never downloads a browser here."
)

if os.environ.get("MTKIT_UI_TESTS") != "1":
    collect_ignore_glob = ["*"]  # run them with `make test-ui` (MTKIT_UI_TESTS=1)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """The folder the screenshots go to (named in the test output)."""
    folder = Path(os.environ.get("MTKIT_UI_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# screenshots of the browser tests (make test-ui)\n*\n")
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Lab:
    """A running JupyterLab server: its URL, token, root folder and a tiny REST client."""

    def __init__(self, root: Path, port: int, token: str, process: subprocess.Popen, log: Path):
        self.root, self.port, self.token, self.process, self.log = root, port, token, process, log
        self.url = f"http://127.0.0.1:{port}"

    def api(self, method: str, path: str):
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        """Kernels outlive the page: end every session (and its kernel) between tests."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Lab:
    root = tmp_path_factory.mktemp("lab")
    home = root / ".state"  # Jupyter's and matplotlib's folders: nothing lands in $HOME
    settings = home / "settings"
    for sub in ("config", "data", "runtime", "mpl", "workspaces"):
        (home / sub).mkdir(parents=True)
    quiet = {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
        # every cell in the page (no virtual scrolling), so that the tests see every prompt
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        # no "Select Kernel" dialog when the kernel list arrives after the notebook
        "@jupyterlab/docmanager-extension/plugin": {"autoStartDefaultKernel": True},
    }
    for name, values in quiet.items():
        path = settings / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    # The notebooks read only packaged files; the other folders of the repository are linked
    # in, the notebooks themselves are copied per test.
    (root / "notebooks").mkdir()
    for entry in REPO.iterdir():
        if (
            entry.is_dir()
            and not entry.name.startswith(".")
            and entry.name
            not in {
                "notebooks",
                "test-artifacts",
            }
        ):
            (root / entry.name).symlink_to(entry, target_is_directory=True)
    # mtkit's cache (pretrained encoders, embeddings) is copied, warm, into the temporary
    # folder: what a test's runs cache (a run cut short by Stop, say) stays out of the user's.
    user_cache = Path(os.environ.get("MTKIT_CACHE", Path.home() / ".cache" / "mtkit"))
    cache = home / "mtkit-cache"
    cache.mkdir()
    if user_cache.is_dir():
        for entry in user_cache.iterdir():
            if entry.is_dir():  # e.g. data/: datasets, only read
                (cache / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
            else:
                shutil.copy2(entry, cache / entry.name)
    env = dict(
        os.environ,
        MTKIT_CACHE=str(cache),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        MPLCONFIGDIR=str(home / "mpl"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        PYTHONUNBUFFERED="1",
    )
    port, token = _free_port(), secrets.token_hex(16)
    log = root / "jupyter.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
    ]
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    server = Lab(root, port, token, process, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.api("GET", "/api/status")
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"JupyterLab did not start; its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    print(f"\nJupyterLab at {server.url} (pid {process.pid}), root {root}")
    yield server
    try:
        server.shut_down_kernels()
    except (urllib.error.URLError, OSError):
        pass
    process.send_signal(signal.SIGTERM)  # the server started here, by its PID
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(INSTALL_HINT.format(path=CHROMIUM), pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the browser tests need the playwright package: .venv/bin/pip install -e '.[test]'",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()
    lab.shut_down_kernels()


@pytest.fixture
def notebook_copy(lab):
    """Copy a notebook into the server's folder without its stored outputs and widget state,
    so that every prompt and widget on the page comes from this run."""

    def copy(source: Path) -> str:
        notebook = json.loads(source.read_text())
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        notebook["metadata"].pop("widgets", None)
        target = lab.root / "notebooks" / source.name
        target.write_text(json.dumps(notebook, indent=1))
        shutil.rmtree(lab.root / "notebooks" / ".ipynb_checkpoints", ignore_errors=True)
        return f"notebooks/{source.name}"

    return copy
