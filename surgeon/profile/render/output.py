"""The one format dispatch: a profile report or a comparison as text in one of :data:`REPORT_FORMATS`, or a file."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from ...io.files import atomic_write
from ..comparison import Comparison
from .compare_page import render_compare_html
from .compare_table import render_compare, render_compare_markdown
from .markdown import render_markdown
from .profile_page import render_html
from .terminal import render_profile

__all__ = ["REPORT_FORMATS", "format_for_path", "render_text", "write_report"]

REPORT_FORMATS = ("table", "json", "md", "html")
"""What ``--format`` takes for ``profile`` and ``compare`` (checkpoint layouts are another thing)."""
_SUFFIXES = {".json": "json", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".txt": "table"}
Document = dict[str, Any] | Comparison
"""A profile report (the dict of :func:`~surgeon.profile.profile_models`) or a :class:`Comparison`."""


def format_for_path(path: str | os.PathLike[str]) -> str | None:
    """The format a file name asks for by its extension (``report.html`` → ``html``), or ``None``."""
    return _SUFFIXES.get(Path(path).suffix.lower())


def render_text(document: Document, fmt: str, width: int | None = None) -> str:
    """``document`` in ``fmt``. ``table`` is the terminal rendering as plain text: a profile at ``width`` columns
    (default 120), a comparison at its natural width (up to ``width``, default 1000: nothing is folded)."""
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; valid: {', '.join(REPORT_FORMATS)}")
    comparison = isinstance(document, Comparison)
    if fmt == "json":
        data = document.to_dict() if comparison else document
        return json.dumps(data, indent=2, allow_nan=False) + "\n"
    if fmt == "md":
        return render_compare_markdown(document) if comparison else render_markdown(document)
    if fmt == "html":
        return render_compare_html(document) if comparison else render_html(document)
    console = Console(file=io.StringIO(), width=width or (1000 if comparison else 120), color_system=None,
                      record=True)
    console.print(render_compare(document) if comparison else render_profile(document))
    if not comparison:
        return console.export_text()
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def write_report(document: Document, path: str | os.PathLike[str], fmt: str, *, force: bool = False) -> Path:
    """Write ``document`` atomically in ``fmt`` (nothing is overwritten without ``force``)."""
    text = render_text(document, fmt)
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")), force=force)
