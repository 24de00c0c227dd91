"""Profiling, split by job: :mod:`.measure` counts and times any ``nn.Module`` (exact counts, latency with its
precision, peak memory, the cost of each inserted block); :mod:`.render` turns a profile report or a
:class:`~.comparison.Comparison` into a terminal table, JSON, Markdown or a self-contained HTML page, with charts
from :mod:`.charts`."""

from __future__ import annotations

from .measure import (
    CONVENTIONS,
    SCHEMA_VERSION,
    CountResult,
    LatencyOptions,
    LatencyResult,
    ModelFacts,
    Step,
    adopt_original_weights,
    compare_latency,
    count_ops,
    count_report,
    machine_name,
    measure_latency,
    model_facts,
    peak_memory,
    profile_models,
    quiet_profiler_logs,
)
from .render import REPORT_FORMATS, format_for_path, render_text, write_report

__all__ = [
    "CONVENTIONS",
    "REPORT_FORMATS",
    "SCHEMA_VERSION",
    "CountResult",
    "LatencyOptions",
    "LatencyResult",
    "ModelFacts",
    "Step",
    "adopt_original_weights",
    "compare_latency",
    "count_ops",
    "count_report",
    "format_for_path",
    "machine_name",
    "measure_latency",
    "model_facts",
    "peak_memory",
    "profile_models",
    "quiet_profiler_logs",
    "render_text",
    "write_report",
]
