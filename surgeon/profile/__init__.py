"""Profiling: exact counts (:mod:`.counting`), honest timings (:mod:`.latency`, :mod:`.attribution`), and the
before/after report (:mod:`.report`) rendered as a terminal table, Markdown or a self-contained HTML page."""

from __future__ import annotations

from .counting import CONVENTIONS, CountResult, count_ops
from .latency import LatencyResult, compare_latency, measure_latency, peak_memory
from .output import FORMATS, render_text, write_report
from .precision import LatencyOptions
from .report import SCHEMA_VERSION, adopt_original_weights, count_report, model_facts, profile_models

__all__ = [
    "CONVENTIONS",
    "FORMATS",
    "SCHEMA_VERSION",
    "CountResult",
    "LatencyOptions",
    "LatencyResult",
    "adopt_original_weights",
    "compare_latency",
    "count_ops",
    "count_report",
    "measure_latency",
    "model_facts",
    "peak_memory",
    "profile_models",
    "render_text",
    "write_report",
]
