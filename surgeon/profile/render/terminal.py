"""The profile report as rich tables for the terminal (the CLI prints what :func:`render_profile` returns)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
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
    timing_setting,
    uncounted_ops,
)

__all__ = ["render_profile"]


def render_profile(report: dict[str, Any]) -> Group:
    """Header, sizes and counts, latency and memory per batch size, inserted blocks, deviation, conventions."""
    parts: list[RenderableType] = [_header(report), _FittedTable("Size and work per image", size_table(report))]
    if report["input"]["batch_sizes"]:
        parts.append(_FittedTable("Latency and peak memory per forward pass", latency_table(report)))
    if report.get("sites"):
        parts.append(_FittedTable("Inserted blocks", site_table(report)))
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
        setting += timing_setting(env)
    setting += [f"torch {env['torch']}", f"attn-surgeon {env['attn_surgeon']}"]
    title.append("\n" + " · ".join(setting), style="dim")
    return title


class _FittedTable:
    """A table that hides its least important columns (``TableData.drop_order``) until it fits the console."""

    def __init__(self, title: str, data: TableData) -> None:
        self.title, self.data = title, data

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        hidden: list[int] = []
        table = _table(self.title, self.data, hidden)
        for column in self.data.drop_order:
            if table.__rich_measure__(console, options).maximum <= options.max_width:
                break
            hidden.append(column)
            table = _table(self.title, self.data, hidden)
        yield table
        if hidden:
            names = ", ".join(dict.fromkeys(self.data.header[i].replace("\n", " ") for i in sorted(hidden)))
            yield Text(f"(hidden to fit {options.max_width} columns: {names}; --format md or html shows all)",
                       style="dim")


def _table(title: str, data: TableData, hidden: list[int]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    shown = [i for i in range(len(data.header)) if i not in hidden]
    for index in shown:  # names, and numbers in a very narrow terminal, fold onto a second line rather than being cut
        table.add_column(data.header[index], justify="left" if index < data.left else "right", overflow="fold")
    for row in data.rows:
        table.add_row(*(row[i] for i in shown))
    if data.total:
        table.add_section()
        table.add_row(*(data.total[i] for i in shown), style="bold")
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
        lines.append("Time alone: " + report["conventions"]["site_latency"])
    if any(row["uncounted_calls"] for row in report.get("sites", [])):
        lines.append("* the block ran an uncounted op: its FLOPs are a lower bound.")
    return "\n".join(lines)
