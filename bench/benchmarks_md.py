"""Shared by the bench scripts: each one owns one `## ...` section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def write_section(path: Path, title: str, section: str) -> None:
    """Replace the section that starts with `title` in `path`, or append it (creating the file).

    section: the whole section text, starting with `title`; the next `## ` heading ends it.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if title in text:
        before, _, rest = text.partition(title)
        _, next_heading, after = rest.partition("\n## ")
        text = before + section + ("\n## " + after if next_heading else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def machine() -> str:
    """One line naming the machine, core and thread counts and versions a benchmark ran on."""
    import torch  # here, so writing a section does not need torch

    processor = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {platform.release()} ({processor}), {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
