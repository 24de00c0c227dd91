"""Inline SVG charts of a profile report, drawn here as markup: no script, no font or stylesheet to fetch.

Every bar is a ``<rect class="bar">`` carrying ``data-series`` and ``data-value``, so a test (or a reader's own
tooling) can find what was drawn. Bars of a non-zero value are at least :data:`MIN_BAR` pixels long, so that a
block costing 0.01 % of the model stays visible; its label gives the exact value.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from .format import latency_rows, model_labels, ms, percent, si

__all__ = ["COLORS", "MIN_BAR", "latency_chart", "sites_chart"]

# model/compare: the two models; the site panels each have their own colour
COLORS = {"model": "#4c78a8", "compare": "#f58518", "parameters": "#72b7b2", "flops": "#54a24b", "time": "#e45756"}
MIN_BAR = 2.0
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:12px"


def _nice_max(value: float) -> float:
    """The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 x 10^k) at or above ``value``: an axis end."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    steps = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
    return next(step * power for step in steps if step * power >= value * (1 - 1e-12))


def _length(value: float, maximum: float, span: float) -> float:
    if value <= 0:
        return 0.0
    return max(MIN_BAR, span * value / maximum)


def _bar(x: float, y: float, width: float, height: float, series: str, value: float, title: str) -> str:
    return (f'<rect class="bar" data-series="{series}" data-value="{value:.6g}" x="{x:.1f}" y="{y:.1f}" '
            f'width="{width:.1f}" height="{height:.1f}" fill="{COLORS[series]}"><title>{escape(title)}</title></rect>')


def _text(x: float, y: float, content: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(content)}</text>'


def _legend(entries: list[tuple[str, str]], x: float, y: float) -> list[str]:
    parts = []
    for label, series in entries:
        parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{COLORS[series]}"/>')
        parts.append(_text(x + 14, y, label))
        x += 28 + 7 * len(label)
    return parts


def _svg(width: float, height: float, label: str, body: list[str], chart: str) -> str:
    return (f'<svg class="chart" data-chart="{chart}" role="img" aria-label="{escape(label)}" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" style="{FONT}">'
            + "".join(body) + "</svg>")


def latency_chart(report: dict[str, Any]) -> str:
    """One small panel per batch size: the median pass of each model (bar) with its p10–p90 range (whisker).

    Each panel has its own scale from zero, since batch sizes differ by orders of magnitude while the panel's
    point is the before/after comparison; the ratio is written above the panel.
    """
    rows = latency_rows(report)
    labels = model_labels(report)
    series = ["model", "compare"][: len(labels)]
    panel_w, panel_h, gap, top, bottom = 150.0, 170.0, 22.0, 54.0, 36.0
    bar_w = 40.0 if len(series) == 2 else 56.0
    width = max(len(rows) * (panel_w + gap) + 10, 420)
    height = top + panel_h + bottom
    body = _legend([(label, name) for label, name in zip(labels, series, strict=True)], 10, 16)
    for index, row in enumerate(rows):
        x0 = 10 + index * (panel_w + gap)
        highest = max((e["p90_ms"] for e in row["entries"] if e), default=0.0)
        maximum = _nice_max(highest)
        base = top + panel_h
        body.append(f'<line x1="{x0:.1f}" y1="{base:.1f}" x2="{x0 + panel_w:.1f}" y2="{base:.1f}" stroke="#999"/>')
        body.append(_text(x0 + panel_w / 2, base + 16, f"batch {row['batch_size']}", "middle",
                          ' font-weight="600"'))
        body.append(_text(x0 + panel_w / 2, base + 30, f"axis 0–{maximum:g} ms", "middle", ' fill="#777"'))
        if row["ratio"] is not None:
            body.append(_text(x0 + panel_w / 2, top - 10, f"×{row['ratio']:.3f}", "middle", ' font-weight="600"'))
        slots = len(series)
        for slot, (entry, name, label) in enumerate(zip(row["entries"], series, labels, strict=True)):
            if entry is None:
                continue
            center = x0 + panel_w * (slot + 1) / (slots + 1)
            bar_h = _length(entry["median_ms"], maximum, panel_h)
            body.append(_bar(center - bar_w / 2, base - bar_h, bar_w, bar_h, name, entry["median_ms"],
                             f"{label}, batch {row['batch_size']}: median {ms(entry['median_ms'])} ms, "
                             f"p10–p90 {ms(entry['p10_ms'])}–{ms(entry['p90_ms'])} ms"))
            low = base - panel_h * entry["p10_ms"] / maximum
            high = base - panel_h * entry["p90_ms"] / maximum
            body.append(f'<path class="whisker" d="M{center:.1f} {low:.1f}V{high:.1f}M{center - 6:.1f} {low:.1f}'
                        f'h12M{center - 6:.1f} {high:.1f}h12" stroke="#333" fill="none"/>')
            body.append(_text(center, min(high, base - bar_h) - 4, ms(entry["median_ms"]), "middle"))
    return _svg(width, height, "Latency per batch size, before and after", body, "latency")


def sites_chart(report: dict[str, Any]) -> str:
    """One row per inserted block; side by side panels of its parameters, FLOPs and (if timed) time alone."""
    sites = report["sites"]
    panels = [("parameters", "parameters", lambda r: r["parameters"], lambda v: si(v)),
              ("flops", "FLOPs per image", lambda r: r["flops"], lambda v: si(v)),
              ("time", "time alone (ms)", lambda r: r["latency_ms"], lambda v: ms(v))]
    if all(row["latency_ms"] is None for row in sites):
        panels = panels[:2]
    label_w, panel_w, gap, row_h, top = 190.0, 250.0, 24.0, 22.0, 34.0
    width = label_w + len(panels) * (panel_w + gap)
    height = top + row_h * len(sites) + 12
    body: list[str] = []
    for row_index, row in enumerate(sites):
        y = top + row_index * row_h
        body.append(_text(label_w - 8, y + 15, f"{row['site']} ({row['block']})", "end"))
    for panel_index, (name, title, value_of, show) in enumerate(panels):
        x0 = label_w + panel_index * (panel_w + gap)
        values = [value_of(row) or 0 for row in sites]
        maximum = _nice_max(max(values, default=0))
        body.append(_text(x0, 16, title, extra=' font-weight="600"'))
        body.append(f'<line x1="{x0:.1f}" y1="{top - 4:.1f}" x2="{x0:.1f}" y2="{height - 8:.1f}" stroke="#999"/>')
        span = panel_w - 70  # room for the value label
        for row_index, (row, value) in enumerate(zip(sites, values, strict=True)):
            y = top + row_index * row_h
            length = _length(value, maximum, span)
            share = row["flops_share"] if name == "flops" else row["latency_share"] if name == "time" else None
            label = show(value) + (f" ({percent(share)})" if share is not None else "")
            if length > 0:
                body.append(_bar(x0, y + 4, length, row_h - 8, name, value, f"{row['site']}: {label}"))
            body.append(_text(x0 + length + 4, y + 15, label, extra=' fill="#333"'))
    return _svg(width, height, "Cost of each inserted block", body, "sites")
