"""A comparison in one of the formats of ``attn-surgeon compare``, as text or written to a file."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from rich.console import Console

from ..io.files import atomic_write
from .compare_html import render_compare_html
from .compare_render import render_compare, render_compare_markdown
from .comparison import Comparison

__all__ = ["COMPARE_FORMATS", "render_compare_text", "write_comparison"]

COMPARE_FORMATS = ("table", "json", "md", "html")


def render_compare_text(comparison: Comparison, fmt: str, width: int = 1000) -> str:
    """The comparison in ``fmt`` (one of :data:`COMPARE_FORMATS`): ``table`` is the terminal rendering as plain
    text at its natural width (up to ``width``: nothing is folded), ``json`` the document of
    :meth:`Comparison.to_dict`."""
    if fmt == "json":
        return json.dumps(comparison.to_dict(), indent=2, allow_nan=False) + "\n"
    if fmt == "md":
        return render_compare_markdown(comparison)
    if fmt == "html":
        return render_compare_html(comparison)
    if fmt == "table":
        console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
        console.print(render_compare(comparison))
        return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
    raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(COMPARE_FORMATS)}")


def write_comparison(comparison: Comparison, path: str | os.PathLike[str], fmt: str, *, force: bool = False) -> Path:
    """Write the comparison atomically in ``fmt`` (nothing is overwritten without ``force``)."""
    text = render_compare_text(comparison, fmt)
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")), force=force)
