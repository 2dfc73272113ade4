"""Shared by the bench scripts: each one owns one `## ...` section of BENCHMARKS.md."""

from __future__ import annotations

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
