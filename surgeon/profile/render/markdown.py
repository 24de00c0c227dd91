"""The profile report as GitHub-flavoured Markdown (tables, and the conventions in a text block)."""

from __future__ import annotations

from typing import Any

from .format import (
    TableData,
    deviation_line,
    latency_table,
    model_labels,
    operator_table,
    shape,
    site_summary,
    site_table,
    size_table,
    timing_setting,
    uncounted_ops,
)

__all__ = ["render_markdown"]


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(data: TableData) -> list[str]:
    align = ["---" if i < data.left else "--:" for i in range(len(data.header))]
    rows = [*data.rows, *([[f"**{cell}**" if cell else "" for cell in data.total]] if data.total else [])]
    return [f"| {' | '.join(_cell(h) for h in data.header)} |", f"| {' | '.join(align)} |",
            *(f"| {' | '.join(_cell(c) for c in row)} |" for row in rows), ""]


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report as one Markdown document."""
    env = report["environment"]
    setting = [f"image {shape(report['input']['image'])}", env["machine"], env["device"]]
    if report["input"]["batch_sizes"]:
        setting += timing_setting(env)
    setting += [f"torch {env['torch']}", f"attn-surgeon {env['attn_surgeon']}", f"Python {env['python']}"]
    notes = [f"> {note}" for note in report.get("notes", [])]
    lines = [f"# Profile of {' vs '.join(model_labels(report))}", "", " · ".join(setting), "",
             *(notes + [""] if notes else []), "## Size and work per image", "", *_table(size_table(report))]
    if report["input"]["batch_sizes"]:
        lines += ["## Latency and peak memory", "", *_table(latency_table(report))]
    if report.get("sites"):
        summary = site_summary(report)
        lines += ["## Inserted blocks", "", *_table(site_table(report)), *([summary, ""] if summary else [])]
    operators, note = operator_table(report)
    lines += ["## FLOPs by operator", "", note, "", *_table(operators)]
    deviation = deviation_line(report)
    if deviation:
        lines += ["## Output deviation", "", deviation, ""]
    ops = uncounted_ops(report)
    listed = ", ".join(f"`{name}` x{calls}" for name, calls in ops.items())
    lines += ["## Uncounted operators", "",
              f"Not treated as free; the FLOPs are a lower bound: {listed}." if ops
              else "None: every operator that ran has a formula or is free data movement.", ""]
    return "\n".join(lines + _conventions(report))


def _conventions(report: dict[str, Any]) -> list[str]:
    conventions = report["conventions"]
    lines = ["## How these figures are obtained", "", f"**Counts:** {conventions['counts']}", "", "```text",
             conventions["flops"], "```", ""]
    for key, title in (("latency", "Latency"), ("memory", "Peak memory"), ("site_latency", "Time of each block")):
        if key in conventions:
            lines += [f"**{title}:** {conventions[key]}", ""]
    return lines
