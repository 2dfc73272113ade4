"""thread_output: a thread's printing and displays land in its Output widget, nowhere else."""

from __future__ import annotations

import sys
import threading

import ipywidgets as widgets
import pytest

from mtkit.core.utils import MtkitError
from mtkit.notebook.thread_output import OutputCapture, ThreadRouter, into_output


def run_in_thread(function) -> None:
    worker = threading.Thread(target=function)
    worker.start()
    worker.join()


def test_a_threads_print_goes_into_its_output_and_other_threads_print_does_not(capsys):
    output = widgets.Output()
    inside = threading.Event()
    main_may_print = threading.Event()

    def work():
        with into_output(output):
            print("from the worker")
            print("to stderr", file=sys.stderr)
            inside.set()
            main_may_print.wait(5)
            print("second line")

    worker = threading.Thread(target=work)
    worker.start()
    inside.wait(5)
    print("from the main thread")  # while the worker's capture is active
    main_may_print.set()
    worker.join()

    streams = [(o["name"], o["text"]) for o in output.outputs if o["output_type"] == "stream"]
    assert streams == [
        ("stdout", "from the worker\n"),
        ("stderr", "to stderr\n"),
        ("stdout", "second line\n"),
    ]
    captured = capsys.readouterr()
    assert "from the main thread" in captured.out and "worker" not in captured.out


def test_the_streams_are_put_back_when_the_last_capture_ends():
    stdout, stderr = sys.stdout, sys.stderr
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with into_output(widgets.Output()):
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with into_output(widgets.Output()):
            second_in.set()
            first_out.wait(5)
            seen["after the first ended"] = sys.stdout

    workers = [threading.Thread(target=first), threading.Thread(target=second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert isinstance(seen["after the first ended"], ThreadRouter)  # the second still routes
    assert sys.stdout is stdout and sys.stderr is stderr


def display_message(kind: str, text: str, display_id: str | None = None, wait=False) -> dict:
    content = {"data": {"text/plain": text}, "metadata": {}}
    if display_id:
        content["transient"] = {"display_id": display_id}
    if kind == "clear_output":
        content = {"wait": wait}
    return {"header": {"msg_type": kind}, "content": content}


def texts(output: widgets.Output) -> list[str]:
    return [o["data"]["text/plain"] for o in output.outputs if o["output_type"] == "display_data"]


def test_displays_are_appended_updated_by_id_and_cleared():
    output = widgets.Output()
    capture = OutputCapture(output)
    assert capture.display_hook(display_message("display_data", "bar 0%", "bar")) is None
    capture.display_hook(display_message("display_data", "figure"))
    capture.display_hook(display_message("update_display_data", "bar 50%", "bar"))
    assert texts(output) == ["bar 50%", "figure"]  # the progress bar updated in place

    capture.display_hook(display_message("clear_output", "", wait=True))
    assert texts(output) == ["bar 50%", "figure"]  # wait=True: cleared when the next one comes
    capture.display_hook(display_message("display_data", "new figure"))
    assert texts(output) == ["new figure"]

    capture.display_hook(display_message("clear_output", ""))
    assert output.outputs == ()


def test_other_messages_pass_through_and_errors_are_shown():
    output = widgets.Output()
    capture = OutputCapture(output)
    message = {"header": {"msg_type": "execute_result"}, "content": {}}
    assert capture.display_hook(message) is message
    capture.write("stdout", "no newline yet")
    assert output.outputs == ()  # text waits for a whole line
    try:
        raise ValueError("batch larger than the data")
    except ValueError as error:
        capture.show_error(error)
    kinds = [o["output_type"] for o in output.outputs]
    assert kinds == ["stream", "error"]
    assert output.outputs[1]["evalue"] == "batch larger than the data"


def test_only_an_output_widget_can_receive_a_threads_output():
    stdout = sys.stdout
    with pytest.raises(MtkitError, match="Output"):
        with into_output("the panel"):
            pass
    assert sys.stdout is stdout  # nothing was rerouted
