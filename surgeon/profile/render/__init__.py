"""Rendering: a profile report or a comparison as a terminal table, JSON, Markdown or one HTML page shell."""

from __future__ import annotations

from .output import REPORT_FORMATS, format_for_path, render_text, write_report

__all__ = ["REPORT_FORMATS", "format_for_path", "render_text", "write_report"]
