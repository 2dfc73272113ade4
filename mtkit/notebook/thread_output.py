"""Where a background thread's printing and displays go: into an ipywidgets Output widget.

The panel's Run button trains in a background thread, so the kernel stays free to receive a
click on Stop. Output from that thread would otherwise land in whichever cell runs next (or
nowhere): ipywidgets' `with output:` capture works through the kernel's current message, which
is long done by then. So, per thread:

- `ThreadRouter` replaces sys.stdout / sys.stderr and sends each thread's text to its own
  capture (other threads' text goes to the stream it replaced);
- ipykernel's thread-local display hook sends display(), clear_output() and figures there too;
- `OutputCapture` appends both to `output.outputs`, the route from a thread that ipywidgets
  documents: setting widget state, which the page receives as an update.

`into_output(output)` sets this up for the calling thread and takes it down again.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import traceback

import ipywidgets as widgets

from mtkit.core.utils import MtkitError


class OutputCapture:
    """What one thread prints and displays, appended to an Output widget's outputs."""

    def __init__(self, output: widgets.Output):
        self.output = output
        self.text: list[tuple[str, str]] = []  # (stream name, text) not yet shown
        self.display_ids: dict[str, int] = {}
        self.clear_on_next = False

    def write(self, name: str, text: str) -> None:
        self.text.append((name, text))
        if "\n" in text:
            self.flush()

    def flush(self) -> None:
        if not self.text:
            return
        outputs = list(self._outputs())
        for name, text in self.text:
            last = outputs[-1] if outputs else None
            if last and last.get("output_type") == "stream" and last.get("name") == name:
                outputs[-1] = {**last, "text": last["text"] + text}
            else:
                outputs.append({"output_type": "stream", "name": name, "text": text})
        self.text = []
        self.output.outputs = tuple(outputs)

    def _outputs(self):
        if self.clear_on_next:
            self.clear_on_next = False
            self.output.outputs = ()
            self.display_ids = {}
        return self.output.outputs

    def display_hook(self, message):
        """ipykernel's thread-local display hook: the message goes into the widget instead."""
        kind, content = message["header"]["msg_type"], message["content"]
        if kind == "clear_output":
            self.flush()
            if content.get("wait"):
                self.clear_on_next = True
            else:
                self.output.outputs = ()
                self.display_ids = {}
            return None
        if kind not in ("display_data", "update_display_data"):
            return message
        self.flush()
        item = {
            "output_type": "display_data",
            "data": content["data"],
            "metadata": content.get("metadata", {}),
        }
        outputs = list(self._outputs())
        display_id = content.get("transient", {}).get("display_id")
        if kind == "update_display_data":
            if display_id in self.display_ids:
                outputs[self.display_ids[display_id]] = item
                self.output.outputs = tuple(outputs)
            return None
        if display_id:
            self.display_ids[display_id] = len(outputs)
        self.output.outputs = (*outputs, item)
        return None

    def show_error(self, error: BaseException) -> None:
        self.flush()
        lines = traceback.format_exception(type(error), error, error.__traceback__)
        self.output.outputs = (
            *self.output.outputs,
            {
                "output_type": "error",
                "ename": type(error).__name__,
                "evalue": str(error),
                "traceback": "".join(lines).splitlines(),
            },
        )


class ThreadRouter:
    """Stands in for sys.stdout or sys.stderr: text written by a thread that has a capture goes
    there, all other text to the stream it replaced."""

    def __init__(self, stream, name: str):
        self.stream = stream
        self.name = name
        self.captures: dict[int, OutputCapture] = {}

    def write(self, text):
        capture = self.captures.get(threading.get_ident())
        if capture is None:
            return self.stream.write(text)
        capture.write(self.name, text)
        return len(text)

    def flush(self):
        capture = self.captures.get(threading.get_ident())
        if capture is None:
            return self.stream.flush()
        capture.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


_routing_lock = threading.Lock()


@contextlib.contextmanager
def into_output(output: widgets.Output):
    """Within this thread, send print, warnings, display() and progress bars into `output`.

    Yields the OutputCapture (its show_error puts a traceback there too). Other threads' output
    is untouched; sys.stdout and sys.stderr are themselves again once no thread captures.
    """
    if not isinstance(output, widgets.Output):
        raise MtkitError(f"into_output needs an ipywidgets Output, got {type(output).__name__}")
    capture = OutputCapture(output)
    ident = threading.get_ident()
    with _routing_lock:
        routers = []
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, ThreadRouter):
                stream = ThreadRouter(stream, name)
                setattr(sys, name, stream)
            stream.captures[ident] = capture
            routers.append(stream)
    publisher = display_publisher()
    if publisher is not None:
        publisher.register_hook(capture.display_hook)
    try:
        yield capture
    finally:
        if publisher is not None:
            publisher.unregister_hook(capture.display_hook)
        capture.flush()
        with _routing_lock:
            for router in routers:
                router.captures.pop(ident, None)
                # The last capture gone: put the stream back, unless someone replaced it since.
                if not router.captures and getattr(sys, router.name) is router:
                    setattr(sys, router.name, router.stream)


def display_publisher():
    """The kernel's display publisher when it takes thread-local hooks (ipykernel), else None."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return None
    shell = get_ipython()
    publisher = getattr(shell, "display_pub", None)
    return publisher if hasattr(publisher, "register_hook") else None
