"""A profile report as text in one of the formats, and written to a file."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from ..io.files import atomic_write
from .html import render_html
from .markdown import render_markdown
from .render import render_profile

__all__ = ["FORMATS", "format_for_path", "render_text", "write_report"]

FORMATS = ("table", "json", "md", "html")
_SUFFIXES = {".json": "json", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".txt": "table"}


def format_for_path(path: str | os.PathLike[str]) -> str | None:
    """The format a file name asks for by its extension (``report.html`` → ``html``), or ``None``."""
    return _SUFFIXES.get(Path(path).suffix.lower())


def render_text(report: dict[str, Any], fmt: str, width: int = 120) -> str:
    """The report in ``fmt`` (one of :data:`FORMATS`); ``table`` is the terminal rendering as plain text."""
    if fmt == "json":
        return json.dumps(report, indent=2, allow_nan=False) + "\n"
    if fmt == "md":
        return render_markdown(report)
    if fmt == "html":
        return render_html(report)
    if fmt == "table":
        console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
        console.print(render_profile(report))
        return console.export_text()
    raise ValueError(f"unknown report format {fmt!r}; valid: {', '.join(FORMATS)}")


def write_report(report: dict[str, Any], path: str | os.PathLike[str], fmt: str, *, force: bool = False) -> Path:
    """Write the report atomically (nothing is overwritten without ``force``)."""
    text = render_text(report, fmt)
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")), force=force)
