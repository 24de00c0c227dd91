"""Scatter charts drawn by matplotlib, returned as inline SVG: one look for ``profile``, ``compare`` and ``ablate``.

The drawing is offline and byte-for-byte deterministic: matplotlib's bundled DejaVu Sans is rendered as glyph paths
(so the page needs no font and looks the same in every browser), the SVG carries no date, and its ids come from a
fixed hash salt, prefixed per chart so that several charts can share one HTML page. Ticks fall on round numbers and
are printed in full (no offset, no scientific notation). Point labels are placed by :func:`.labels.place_labels`,
a small deterministic placer that keeps every label inside the axes and clear of the other labels, the markers,
the error bars and the reference line; a label moved away from its point is tied to it by a thin leader line.

Every label is an SVG group ``<g class="chart-label" data-label="..." data-bbox="x0 y0 x1 y1">`` in the SVG's own
coordinates, read back by :func:`label_boxes`, so a test can check that no two labels intersect; every marker is a
``<g class="chart-point">`` with its ``data-label``, ``data-kind``, ``data-x`` and ``data-y``.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape, unescape

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from .labels import MARKER_PX, Box, inside, place_labels

__all__ = ["KINDS", "Point", "label_boxes", "scatter_svg"]

# marker, colour and legend text of each kind of point; the order is the legend's
KINDS: dict[str, tuple[str, str, str]] = {
    "candidate": ("o", "#4c78a8", "candidate"),
    "baseline": ("s", "#e45756", "baseline"),
    "control": ("D", "#8c8c8c", "control"),
    "reference": ("*", "#222222", "reference"),
}
DPI = 72  # one display pixel per SVG unit, so the boxes measured while placing are the boxes in the file
RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "attn-surgeon",
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 11.0,
    "axes.labelsize": 10.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "axes.formatter.useoffset": False,
    "legend.fontsize": 9.0,
}


@dataclass(frozen=True)
class Point:
    """One labelled point of a chart.

    Attributes:
        label: the text written beside the point.
        x: horizontal position, in data units.
        y: vertical position, in data units.
        x_err: the interval ``(low, high)`` around ``x``, in data units (absolute, not distances), or None.
        y_err: the interval ``(low, high)`` around ``y``, or None.
        kind: ``candidate``, ``baseline``, ``control`` or ``reference``; sets the marker and the legend entry.
    """

    label: str
    x: float
    y: float
    x_err: tuple[float, float] | None = None
    y_err: tuple[float, float] | None = None
    kind: str = "candidate"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown point kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")


def scatter_svg(points: Sequence[Point], *, x_label: str, y_label: str, title: str | None = None,
                reference_y: float | None = None, log_x: bool = False) -> str:
    """An inline ``<svg>`` scatter chart of ``points``, with error bars, a legend of kinds and a reference line.

    Args:
        points: the points, each with its label; at least one.
        x_label: the horizontal axis' title (with its unit).
        y_label: the vertical axis' title.
        title: a title above the chart, if any.
        reference_y: draws a dashed horizontal line there (1.0 for ratios to a reference), if given.
        log_x: a logarithmic horizontal axis (all x and x_err values must then be positive).

    Returns:
        ``<svg ...>...</svg>`` without XML declaration, ready to embed in an HTML page.
    """
    if not points:
        raise ValueError("a chart needs at least one point")
    if log_x and any(v <= 0 for p in points for v in (p.x, *(p.x_err or ()))):
        raise ValueError("a logarithmic x axis needs positive x values")
    width, height = 6.4, 3.6 + 0.12 * max(0, len(points) - 8)
    for _ in range(6):  # a crowded chart grows until every label has a place of its own
        figure = _draw(points, x_label, y_label, title, reference_y, log_x, (width, height))
        if figure is not None:
            chart_id = _chart_id(points, x_label, y_label, title, reference_y, log_x)
            return _to_svg(figure, chart_id, title or y_label, points)
        width, height = width * 1.25, height * 1.35
    raise ValueError(f"cannot place {len(points)} labels without overlap; draw fewer points per chart")


def label_boxes(svg: str) -> list[tuple[str, Box]]:
    """Each point label of a chart (or of a page holding charts) and its box ``(x0, y0, x1, y1)``, in the SVG's
    coordinates (y down), read from the ``data-bbox`` that :func:`scatter_svg` writes."""
    pattern = re.compile(r'<g id="[^"]*" class="chart-label" data-label="([^"]*)" data-bbox="([^"]*)"')
    return [(unescape(label), tuple(float(v) for v in box.split())) for label, box in pattern.findall(svg)]


def _chart_id(*parts: object) -> str:
    return "c" + hashlib.sha256(repr(parts).encode()).hexdigest()[:10]


def _draw(points: Sequence[Point], x_label: str, y_label: str, title: str | None, reference_y: float | None,
          log_x: bool, size: tuple[float, float]) -> Figure | None:
    """The finished figure at ``size`` inches, or None when its labels do not all fit."""
    with matplotlib.rc_context(RC):
        figure = Figure(figsize=size, dpi=DPI)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        soft: list[Box] = []  # error bars and the reference line: avoided, but crossed rather than fail
        drawn: set[str] = set()
        for index, point in enumerate(points):  # one artist per point, so that the SVG can say which is which
            marker, color, legend = KINDS[point.kind]
            bars = axes.errorbar([point.x], [point.y], xerr=_error_array([point], "x"), yerr=_error_array([point], "y"),
                                 fmt=marker, color=color, ecolor=color, elinewidth=1.0, capsize=3,
                                 markersize=11 if point.kind == "reference" else 7, markeredgecolor="white",
                                 markeredgewidth=0.8, label=legend if point.kind not in drawn else None, zorder=3)
            bars.lines[0].set_gid(f"point-{index}")
            drawn.add(point.kind)
        if reference_y is not None:
            axes.axhline(reference_y, color="#555555", linestyle="--", linewidth=1.0, zorder=2)
        _set_limits(axes, points, reference_y, log_x)
        _set_ticks(axes, log_x)
        axes.set_xlabel(x_label, parse_math=False)
        axes.set_ylabel(y_label, parse_math=False)
        if title:
            axes.set_title(title, loc="left", parse_math=False)
        handles, names = axes.get_legend_handles_labels()
        order = [legend for _, _, legend in KINDS.values()]  # the legend lists kinds in one order on every chart
        handles, names = map(list, zip(*sorted(zip(handles, names, strict=True), key=lambda hn: order.index(hn[1])),
                                       strict=True))
        if reference_y is not None:
            handles.append(Line2D([], [], color="#555555", linestyle="--", linewidth=1.0))
            names.append(f"reference (y = {reference_y:g})")
        axes.legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0.0)
        figure.tight_layout(pad=0.6)
        renderer = figure.canvas.get_renderer()
        to_display = axes.transData.transform
        anchors = [tuple(to_display((p.x, p.y))) for p in points]
        for p in points:
            soft.extend(_error_boxes(p, to_display))
        if reference_y is not None:
            level = to_display((axes.get_xlim()[0], reference_y))[1]
            soft.append((-math.inf, level - 1.0, math.inf, level + 1.0))
        frame = axes.get_window_extent(renderer)
        texts = [axes.text(0, 0, p.label, ha="left", va="bottom", zorder=4, parse_math=False) for p in points]
        sizes = [(t.get_window_extent(renderer).width, t.get_window_extent(renderer).height) for t in texts]
        placed = place_labels(anchors, sizes, (frame.x0, frame.y0, frame.x1, frame.y1), soft)
        if placed is None:
            return None
        to_data = axes.transData.inverted().transform
        for index, (text, (box, leader)) in enumerate(zip(texts, placed, strict=True)):
            text.set_position(tuple(to_data((box[0], box[1]))))
            text.set_gid(f"label-{index}")
            if leader is not None:
                start, end = to_data(leader[0]), to_data(leader[1])
                axes.add_line(Line2D([start[0], end[0]], [start[1], end[1]], color="#9a9a9a", linewidth=0.7,
                                     zorder=2.5))
        return figure


def _error_array(points: Sequence[Point], axis: str) -> list[list[float]] | None:
    """matplotlib's (2, n) distances below and above each value, from the points' absolute intervals."""
    intervals = [(getattr(p, f"{axis}_err"), getattr(p, axis)) for p in points]
    if all(err is None for err, _ in intervals):
        return None
    below = [max(0.0, value - err[0]) if err else 0.0 for err, value in intervals]
    above = [max(0.0, err[1] - value) if err else 0.0 for err, value in intervals]
    return [below, above]


def _error_boxes(point: Point, to_display) -> list[Box]:
    """The error bars of ``point`` that reach out of its marker, as thin boxes in display coordinates."""
    boxes = []
    if point.x_err:
        (x0, y), (x1, _) = to_display((point.x_err[0], point.y)), to_display((point.x_err[1], point.y))
        boxes.append((x0, y - 3.0, x1, y + 3.0))
    if point.y_err:
        (x, y0), (_, y1) = to_display((point.x, point.y_err[0])), to_display((point.x, point.y_err[1]))
        boxes.append((x - 3.0, y0, x + 3.0, y1))
    x, y = to_display((point.x, point.y))
    marker = (x - MARKER_PX, y - MARKER_PX, x + MARKER_PX, y + MARKER_PX)
    return [box for box in boxes if not inside(box, marker)]


def _set_limits(axes, points: Sequence[Point], reference_y: float | None, log_x: bool) -> None:
    xs = [v for p in points for v in (p.x, *(p.x_err or ()))]
    ys = [v for p in points for v in (p.y, *(p.y_err or ()))] + ([reference_y] if reference_y is not None else [])
    if log_x:
        low, high = math.log10(min(xs)), math.log10(max(xs))
        low, high = _padded(low, high, 0.1, least=0.3)
        axes.set_xscale("log")
        axes.set_xlim(10 ** low, 10 ** high)
    else:
        axes.set_xlim(*_padded(min(xs), max(xs), 0.12))
    axes.set_ylim(*_padded(min(ys), max(ys), 0.15))


def _padded(low: float, high: float, share: float, least: float = 0.0) -> tuple[float, float]:
    """``[low, high]`` widened by ``share`` of its span, and at least ``least``, on each side.

    A flat range gets a span of its own, so a single point sits in the middle of the axes.
    """
    span = high - low
    if span <= 0:
        span = abs(high) * 0.2 or 1.0
    pad = max(share * span, least)
    return low - pad, high + pad


def _set_ticks(axes, log_x: bool) -> None:
    if log_x:
        low, high = axes.get_xlim()
        decades = math.log10(high) - math.log10(low)
        subs = (1.0,) if decades > 4 else (1.0, 2.0, 5.0) if decades > 1 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _si(value)))
        axes.xaxis.set_minor_locator(NullLocator())
    else:
        _round_ticks(axes.xaxis, axes.get_xlim())
    _round_ticks(axes.yaxis, axes.get_ylim())


def _round_ticks(axis, limits: tuple[float, float]) -> None:
    """Ticks at 1, 2, 2.5 or 5 x 10^k, printed with as many decimals as their step needs and no more."""
    locator = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10])
    axis.set_major_locator(locator)
    ticks = locator.tick_values(*limits)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    # the fewest decimals that write the step exactly: 25 → 0, 2.5 → 1, 0.25 → 2, 0.0001 → 4
    decimals = next((d for d in range(12) if abs(step * 10 ** d - round(step * 10 ** d)) < 1e-6 * step * 10 ** d), 12)
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.{decimals}f}".replace("-", "−")))


def _si(value: float) -> str:
    """1, 20, 500, 1k, 2.5M: a log axis' tick without scientific notation."""
    for divisor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:g}{suffix}"
    return f"{value:g}"


def _to_svg(figure: Figure, chart_id: str, description: str, points: Sequence[Point]) -> str:
    """The figure as inline SVG: no declaration or metadata, ids unique to the chart, each label's box recorded."""
    renderer = figure.canvas.get_renderer()
    height = figure.bbox.height
    boxes = {}
    for axes in figure.axes:
        for text in axes.texts:
            if text.get_gid():
                extent = text.get_window_extent(renderer)
                box = (extent.x0, height - extent.y1, extent.x1, height - extent.y0)  # SVG's y runs down
                boxes[text.get_gid()] = (text.get_text(), box)
    buffer = io.StringIO()
    with matplotlib.rc_context(RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    # inline in HTML the parser gives <svg> and xlink:href their namespaces: the declarations are dead weight (and
    # URLs in a page that promises to reference nothing)
    svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg)
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{chart_id}-{m.group(1)}"', svg)
    svg = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: m.group(1) + (f"{chart_id}-{m.group(2)}"
                                                                      if m.group(2) in ids else m.group(2)), svg)
    for gid, (label, box) in boxes.items():
        svg = svg.replace(f'<g id="{chart_id}-{gid}">', f'<g id="{chart_id}-{gid}" class="chart-label" '
                          f'data-label="{escape(label)}" data-bbox="{" ".join(f"{v:.2f}" for v in box)}">')
    for index, point in enumerate(points):
        svg = svg.replace(f'<g id="{chart_id}-point-{index}">', f'<g id="{chart_id}-point-{index}" class="chart-point" '
                          f'data-label="{escape(point.label)}" data-kind="{point.kind}" data-x="{point.x:.6g}" '
                          f'data-y="{point.y:.6g}">')
    return re.sub(r"<svg ", f'<svg class="chart" role="img" aria-label="{escape(description)}" '
                  'style="max-width:100%;height:auto" ', svg, count=1)
