"""The profile report as rich tables for the terminal (the CLI prints what :func:`render_profile` returns)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .format import (
    TableData,
    deviation_line,
    latency_table,
    model_labels,
    shape,
    site_summary,
    site_table,
    size_table,
    threads,
    uncounted_ops,
)

__all__ = ["render_profile"]


def render_profile(report: dict[str, Any]) -> Group:
    """Header, sizes and counts, latency and memory per batch size, inserted blocks, deviation, conventions."""
    parts: list[RenderableType] = [_header(report), _table("Size and work per image", size_table(report))]
    if report["input"]["batch_sizes"]:
        parts.append(_table("Latency (median of the timed passes) and peak memory of one forward pass",
                            latency_table(report)))
    if report.get("sites"):
        parts.append(_table("Inserted blocks", site_table(report)))
        summary = site_summary(report)
        if summary:
            parts.append(Text(summary))
    deviation = deviation_line(report)
    if deviation:
        parts.append(Text(deviation))
    parts += [_uncounted(report), *(Text(note, style="yellow") for note in report.get("notes", [])),
              Text(_footnote(report), style="dim")]
    return Group(*parts)


def _header(report: dict[str, Any]) -> Text:
    env = report["environment"]
    title = Text("Profile of ", style="bold")
    title.append(" vs ".join(model_labels(report)), style="bold cyan")
    title.append(f", image {shape(report['input']['image'])}", style="bold")
    setting = [env["machine"], env["device"]]
    if report["input"]["batch_sizes"]:
        setting.append(threads(env["threads"]))
    setting += [f"torch {env['torch']}", f"attn-surgeon {env['attn_surgeon']}"]
    title.append("\n" + " · ".join(setting), style="dim")
    return title


def _table(title: str, data: TableData) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for index, column in enumerate(data.header):
        if index < data.left:  # names fold onto a second line in a narrow terminal rather than vanish
            widest = max((len(row[index]) for row in [*data.rows, data.total or [""] * len(data.header)]), default=0)
            table.add_column(column, overflow="fold", min_width=min(widest, 20))
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for row in data.rows:
        table.add_row(*row)
    if data.total:
        table.add_section()
        table.add_row(*data.total, style="bold")
    return table


def _uncounted(report: dict[str, Any]) -> Text:
    ops = uncounted_ops(report)
    if not ops:
        return Text("Uncounted ops: none (every operator that ran has a formula or is free data movement).")
    text = Text("Uncounted ops (no formula, not treated as free; FLOPs are a lower bound): ", style="yellow")
    text.append(", ".join(f"{name} x{calls}" for name, calls in ops.items()))
    return text


def _footnote(report: dict[str, Any]) -> str:
    lines = ["MACs: multiply-accumulates of conv, linear and matmul. FLOPs: 2 x MACs + element-wise, pooling, "
             "softmax and normalisation work, each op priced per element (--format json, md or html lists the rules)."]
    if report["input"]["batch_sizes"]:
        lines.append("Latency: " + report["conventions"]["latency"])
    if report.get("site_timing"):
        method = report["conventions"]["site_latency"]
        lines.append("Time alone: " + method[:1].lower() + method[1:])
    if any(row["uncounted_calls"] for row in report.get("sites", [])):
        lines.append("* the block ran an uncounted op: its FLOPs are a lower bound.")
    return "\n".join(lines)
