"""Every notebook in JupyterLab, as a learner uses it: Run All, then the hyperparameter panel.

For each notebooks/*.ipynb (a new notebook is covered without changing this file):
  1. open a copy, Run All, wait until every code cell has run, and check that no cell and no
     widget shows an error (a traceback);
  2. the panel renders: at least one slider or dropdown, a Run and a Stop button; every label is
     in words (no variable_name) and every slider says its range; it fits the page without
     scrolling sideways; tqdm progress bars render where the executed notebook has them;
  3. a short run: the sliders for epochs and seeds go to their lowest values, Run is clicked;
     Run is disabled while the job runs, and when it is done a new plot is in the panel;
  4. a long run: the same sliders at their highest, Run, then Stop: the status says "stopped"
     and Run is enabled again.
Screenshots: test-artifacts/screenshots/<notebook>.png (the panel after the short run, in the
page) and <notebook>-stopped.png (the panel after Stop).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# MTKIT_UI_NOTEBOOKS: another folder of notebooks (e.g. edited copies) to test instead
NOTEBOOKS = sorted(Path(os.environ.get("MTKIT_UI_NOTEBOOKS", REPO / "notebooks")).glob("*.ipynb"))
RUN_ALL_TIMEOUT = 25 * 60  # notebook 09 with a cold embedding cache is the slowest
SHORT_RUN_TIMEOUT = 6 * 60
STOP_TIMEOUT = 90
ETA_TIMEOUT = 180  # the first epoch of the longest setting (a text encoder, MiniLM)
# Sliders whose label (its first line, not the range) says they scale the run's length: lowest
# for the short run, highest for the one that is stopped.
LENGTH = re.compile(r"epoch|seeds", re.IGNORECASE)

RUNNING = "Stop ends the run"  # the status line while a run started with Run goes
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _expects_progress_bars(path: Path) -> bool:
    """The executed notebook in the repository holds tqdm bars (FloatProgress models)."""
    notebook = json.loads(path.read_text())
    state = notebook["metadata"].get("widgets", {})
    models = state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return any(model.get("model_name") == "FloatProgressModel" for model in models.values())


def _code_cells(path: Path) -> int:
    return sum(cell["cell_type"] == "code" for cell in json.loads(path.read_text())["cells"])


TRACEBACK_JS = """(root) => {
    const found = [];
    for (const node of root.querySelectorAll(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
        const text = node.innerText;
        if (/Traceback|Error:|Exception:/.test(text)) found.push(text.slice(0, 2000));
    }
    return found;
}"""

PROMPTS_JS = """(root) => Array.from(root.querySelectorAll('.jp-CodeCell .jp-InputPrompt'),
                                   node => node.innerText.trim())"""


def _errors(notebook) -> list[str]:
    return notebook.evaluate(TRACEBACK_JS)


def _start_kernel(page, lab, relative: str) -> None:
    """Wait until the server has an idle kernel for the notebook; a "Select Kernel" dialog
    (the kernel list arrived late) is answered with its preselection, as a learner would."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and "Select Kernel" in dialog.first.inner_text():
            dialog.locator("button.jp-mod-accept").click()
        sessions = lab.api("GET", "/api/sessions")
        if any(
            session["path"] == relative and session["kernel"]["execution_state"] == "idle"
            for session in sessions
        ):
            return
        time.sleep(0.5)
    pytest.fail(f"no kernel started for {relative} in 120 s")


def _run_all(page, notebook, cells: int, name: str) -> float:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
    started, next_report = time.monotonic(), 60
    while True:
        prompts = notebook.evaluate(PROMPTS_JS)
        done = [p for p in prompts if re.fullmatch(r"\[\d+\]:", p)]
        errors = _errors(notebook)
        assert not errors, f"{name}: a cell shows an error:\n" + "\n---\n".join(errors)
        if len(prompts) == cells and len(done) == cells:
            return time.monotonic() - started
        waited = time.monotonic() - started
        if waited > next_report:  # a line now and then, for a log that shows where it is
            print(f"{name}: {waited:.0f} s, {len(done)}/{cells} cells ran: {prompts}")
            next_report += 60
        if time.monotonic() - started > RUN_ALL_TIMEOUT:
            pytest.fail(f"{name}: not every cell ran in {RUN_ALL_TIMEOUT} s; prompts {prompts}")
        time.sleep(2)


def _readout_value(slider) -> str:
    return slider.locator(".widget-readout").inner_text().strip()


def _set_slider(page, slider, value) -> None:
    """Type a value into the slider's readout, as a learner can, and press Enter."""
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")


def _slider_bounds(slider) -> tuple[str, str]:
    handle = slider.locator(".noUi-handle")
    return handle.get_attribute("aria-valuemin"), handle.get_attribute("aria-valuemax")


def _length_sliders(panel):
    sliders = panel.locator(".widget-slider")
    chosen = []
    for index in range(sliders.count()):
        slider = sliders.nth(index)
        if LENGTH.search(slider.locator(".widget-label").inner_text().split("\n")[0]):
            chosen.append(slider)
    return chosen


def _move_sliders(page, sliders, end: str) -> list[str]:
    """Every slider to its lowest (end="low") or highest value; returns what was done."""
    moved = []
    for slider in sliders:
        low, high = _slider_bounds(slider)
        target = low if end == "low" else high
        value = float(target)
        text = str(int(value)) if value == int(value) else f"{value:g}"
        before = _readout_value(slider)
        _set_slider(page, slider, text)
        label = slider.locator(".widget-label").inner_text().split("\n")[0]
        moved.append(f"{label}: {before} -> {_readout_value(slider)}")
    return moved


def _image_sources(panel) -> list[str]:
    return panel.evaluate("(p) => Array.from(p.querySelectorAll('img'), i => i.src)")


WATCH_JS = """(panel) => {
    // Every change of the status line and of the buttons' disabled state, in order, one entry
    // per change even when the page applies several at once: a run of 0.2 s is seen as well as
    // a long one, and an old "done" is never taken for a new one.
    const status = panel.querySelector('.mtkit-status');
    const events = [];
    panel.mtkitEvents = events;
    new MutationObserver((records) => {
        for (const record of records) {
            const text = Array.from(record.addedNodes, (node) => node.textContent).join('');
            if (text.trim()) events.push(['status', text.trim()]);
        }
    }).observe(status, {subtree: true, childList: true});
    for (const kind of ['run', 'stop']) {
        const button = panel.querySelector(`button.mtkit-${kind}`);
        new MutationObserver((records) => {
            // the value after each change: the old value of the next one, then the current
            const after = records.slice(1).map((record) => record.oldValue !== null);
            after.push(button.disabled);
            for (const disabled of after) events.push([kind, disabled ? 'disabled' : 'enabled']);
        }).observe(button, {attributes: true, attributeFilter: ['disabled'],
                            attributeOldValue: true});
    }
}"""
ENDED = re.compile(r"^(done|stopped|failed)")


class Watch:
    """What a panel's status line and buttons did since the last click."""

    def __init__(self, panel, name: str):
        self.panel, self.name = panel, name
        panel.evaluate(WATCH_JS)
        self.events: list[tuple[str, str]] = []

    def click(self, button) -> None:
        self.panel.evaluate("(p) => p.mtkitEvents.splice(0)")
        self.events = []
        button.click()

    def statuses(self) -> list[str]:
        return [value for kind, value in self.events if kind == "status"]

    def wait(self, pattern: str, timeout: float) -> str:
        """Until a status since the click matches `pattern` (a run's end never goes unseen)."""
        started = time.monotonic()
        while True:
            new = self.panel.evaluate("(p) => p.mtkitEvents.splice(0)")
            self.events += [tuple(event) for event in new]
            for text in self.statuses():
                if re.search(pattern, text):
                    return text
            errors = _errors(self.panel)
            assert not errors, f"{self.name}: the panel shows an error:\n" + "\n".join(errors)
            if time.monotonic() - started > timeout:
                pytest.fail(
                    f"{self.name}: no status /{pattern}/ in {timeout} s: {self.statuses()[-8:]}"
                )
            time.sleep(0.2)

    def ended(self) -> str | None:
        return next((text for text in self.statuses() if ENDED.search(text)), None)

    def check_buttons_while_running(self) -> None:
        """Run went disabled and Stop enabled when the run began, and back when it ended."""
        kinds = [f"{kind} {value}" for kind, value in self.events if kind in ("run", "stop")]
        assert "run disabled" in kinds, f"{self.name}: Run was not disabled: {self.events}"
        assert "stop enabled" in kinds, f"{self.name}: Stop was not enabled: {self.events}"
        assert kinds.index("run disabled") < len(kinds) - 1 - kinds[::-1].index("run enabled")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_panel_works(page, lab, notebook_copy, screenshots, path):
    try:
        _check_notebook(page, lab, notebook_copy, screenshots, path)
    except BaseException:
        page.screenshot(path=str(screenshots / f"{path.stem}-failed.png"))
        print(f"what the page showed: {screenshots / path.stem}-failed.png")
        raise


def _check_notebook(page, lab, notebook_copy, shots, path):
    name = path.stem
    started = time.monotonic()
    relative = notebook_copy(path)
    page.goto(f"{lab.url}/lab/tree/{relative}?reset&token={lab.token}")
    notebook = page.locator(".jp-NotebookPanel:visible")
    notebook.locator(".jp-Notebook").wait_for(timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('.jp-NotebookPanel .jp-Notebook-cell') !== null"
    )
    _start_kernel(page, lab, relative)

    # 1. Run All; every cell runs, none shows an error.
    run_all = _run_all(page, notebook, _code_cells(path), name)
    print(f"\n{name}: Run All took {run_all:.0f} s")

    # 2. The panel and its controls.
    panel = notebook.locator(".mtkit-panel").first
    panel.wait_for(timeout=30_000)
    panel.scroll_into_view_if_needed()
    controls = panel.locator(".mtkit-controls > .jupyter-widgets")
    sliders = panel.locator(".widget-slider")
    dropdowns = panel.locator(".widget-dropdown")
    assert sliders.count() + dropdowns.count() >= 1, f"{name}: no slider or dropdown"
    run_button = panel.locator("button.mtkit-run")
    stop_button = panel.locator("button.mtkit-stop")
    assert run_button.is_visible() and "Run" in run_button.inner_text()
    assert stop_button.is_visible() and stop_button.is_disabled()
    labels = [
        controls.nth(i).locator(".widget-label").first.inner_text().strip()
        for i in range(controls.count())
    ]
    options = panel.locator(".widget-dropdown option").all_inner_texts()
    raw = [text for text in labels + options if "_" in text or not text.strip()]
    assert not raw, f"{name}: labels that are variable names or empty: {raw}"
    for index in range(sliders.count()):
        label = sliders.nth(index).locator(".widget-label").inner_text()
        assert " to " in label, f"{name}: the slider {label!r} does not say its range"
    sideways = page.evaluate(
        """(panel) => {
            const out = [];
            const right = panel.getBoundingClientRect().right;
            if (right > window.innerWidth) out.push(`panel ends at ${right} px`);
            for (let n = panel; n && n !== document.body; n = n.parentElement) {
                if (n.scrollWidth > n.clientWidth + 1
                        && getComputedStyle(n).overflowX !== 'hidden')
                    out.push(`${n.className}: ${n.scrollWidth} > ${n.clientWidth}`);
            }
            return out;
        }""",
        panel.element_handle(),
    )
    assert not sideways, f"{name}: the panel needs sideways scrolling: {sideways}"
    if _expects_progress_bars(path):
        bars = notebook.locator(".widget-hprogress")
        assert bars.count() >= 1, f"{name}: the executed notebook has progress bars, this not"
        text = bars.first.locator("xpath=..").inner_text()  # tqdm: "fit: 100% ... 40/40 [...]"
        assert re.search(r"\d+/\d+", text), f"{name}: a progress bar without its count: {text!r}"
    panel_bars = panel.locator(".mtkit-output .widget-hprogress").count()

    # 3. A short run from the Run button.
    length = _length_sliders(panel)
    if length:
        moved = _move_sliders(page, length, "low")
    else:  # no slider says how long: the first slider one step up
        first = sliders.first
        first.locator(".noUi-handle").focus()
        before = _readout_value(first)
        page.keyboard.press("ArrowRight")
        moved = [f"first slider: {before} -> {_readout_value(first)}"]
    print(f"{name}: short run with {moved}")
    before = set(_image_sources(panel))
    watch = Watch(panel, name)
    short_started = time.monotonic()
    watch.click(run_button)
    status = watch.wait(ENDED.pattern, SHORT_RUN_TIMEOUT)
    assert RUNNING in watch.statuses()[0], f"{name}: the run did not say so: {watch.statuses()}"
    assert status.startswith("done"), f"{name}: the short run ended with {status!r}"
    watch.check_buttons_while_running()
    assert run_button.is_enabled() and stop_button.is_disabled()
    deadline = time.monotonic() + 10  # the last picture may arrive just after the status
    while not set(_image_sources(panel)) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    after = _image_sources(panel)
    assert set(after) - before, f"{name}: no new plot in the panel after Run ({len(after)} img)"
    if panel_bars:  # the panel's run showed a progress bar: so does the Run button's
        assert panel.locator(".mtkit-output .widget-hprogress").count() >= 1
    seconds = time.monotonic() - short_started
    print(f"{name}: short run {seconds:.0f} s; the status said {watch.statuses()}")
    uses_fit = any(re.search(r"epoch \d+/\d+", text) for text in watch.statuses())
    panel.evaluate("(p) => p.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(shots / f"{name}.png"))

    # 4. A long run, stopped.
    if length:
        _move_sliders(page, length, "high")
    watch.click(run_button)
    watch.wait(RUNNING, 30)
    if uses_fit:  # the status line says the epoch and the time left
        watch.wait(r"epoch \d+/\d+ · about .* left|" + ENDED.pattern, ETA_TIMEOUT)
    else:  # no fit reports to the panel: Stop has to end the run all the same
        time.sleep(3)
    if watch.ended():  # it ended before Stop (early stopping): once more, Stop at once
        print(f"{name}: the long run ended by itself: {watch.statuses()}")
        watch.click(run_button)
        watch.wait(RUNNING, 30)
    stop_button.click(timeout=10_000)
    status = watch.wait(ENDED.pattern, STOP_TIMEOUT)
    assert status.startswith("stopped"), f"{name}: after Stop the status says {status!r}"
    watch.check_buttons_while_running()
    assert run_button.is_enabled() and stop_button.is_disabled()
    panel.screenshot(path=str(shots / f"{name}-stopped.png"))
    print(f"{name}: the long run's status said {watch.statuses()}")
    print(f"{name}: {time.monotonic() - started:.0f} s in all; screenshots {shots}/{name}*.png")
