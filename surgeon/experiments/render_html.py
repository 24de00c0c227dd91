"""An ablation as one self-contained HTML page: the summary table, the metric against FLOPs, the training curves.

The charts are drawn by matplotlib (Agg canvas, SVG output, its bundled DejaVu Sans as glyph paths), with the look
``profile`` and ``compare`` share (:mod:`surgeon.profile.charts`), and embedded inline. The page has no script and
makes no request: the profile report's Content-Security-Policy forbids any. Every string from the experiment (arm
and model names, metric names, reasons) is escaped, in the HTML and in the charts, where matplotlib's math mode is
off so that a ``$`` in a name is only a character.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import textwrap
from html import escape
from typing import Any

from ..profile.charts import KINDS, RC, Point, scatter_svg
from ..profile.render.page import CSP, CSS
from .summary import decimals, duration, metric_name, number, partial_note, setting, summary_table, title

__all__ = ["TEXT_RC", "curve_charts", "curve_figure", "flops_chart", "render_html"]

# math mode off: matplotlib would read "$...$" in an arm's name as TeX, and fail on what it cannot parse
TEXT_RC = {"text.parse_math": False, "text.usetex": False}
LEGEND_WRAP = 32
"""Characters of an arm's name per legend line."""
# candidates take these in turn (none near the baseline's red); the baseline and controls keep their kind's colour
PALETTE = ("#4c78a8", "#54a24b", "#b279a2", "#72b7b2", "#9d755d", "#eeca3b", "#f58518", "#1f3b73")
_EXTRA_CSS = (".verdict-better { color: #1a7f37; font-weight: 600; } .verdict-worse { color: #cf222e; "
              "font-weight: 600; } .curves { display: flex; flex-wrap: wrap; gap: 8px 20px; } td.l { white-space: "
              "normal; }")


def render_html(results: dict[str, Any]) -> str:
    """The whole page as a string."""
    partial = partial_note(results)
    sections = [f"<h1>{escape(title(results))}</h1>", f"<div class=meta>{escape(setting(results))}</div>",
                f"<p class=warn><b>{escape(partial)}</b></p>" if partial else "", "<h2>Arms</h2>", _summary(results),
                f"<h2>{escape(metric_name(results))} against FLOPs</h2>", flops_chart(results),
                "<h2>Training curves</h2>", curve_charts(results), "<h2>Trials</h2>", _trials(results)]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title(results))}</title><style>{CSS}{_EXTRA_CSS}</style></head>\n<body><main>\n"
            + "\n".join(section for section in sections if section)
            + f"\n<footer>attn-surgeon ablate · results schema {escape(str(results.get('schema', '')))} version "
              f"{escape(str(results.get('version', '')))}</footer>\n</main></body></html>\n")


def _summary(results: dict[str, Any]) -> str:
    table = summary_table(results)

    def cells(values: list[str], tag: str, verdict: bool = False) -> str:
        out = []
        for i, value in enumerate(values):
            classes = ["l"] if i < table.left else []
            if verdict and i == table.verdict_column:
                classes.append("verdict-" + re.sub(r"[^a-z]+", "-", value.lower()))
            attribute = f' class="{" ".join(classes)}"' if classes else ""
            out.append(f"<{tag}{attribute}>{escape(value)}</{tag}>")
        return "".join(out)

    body = "".join(f"<tr>{cells(row, 'td', verdict=True)}</tr>" for row in table.rows)
    notes = "".join(f"<p class=note>{escape(note)}</p>" for note in table.notes)
    return f"<table><thead><tr>{cells(table.header, 'th')}</tr></thead><tbody>{body}</tbody></table>{notes}"


def _trials(results: dict[str, Any]) -> str:
    """Every trial: its seed, status, compared metric, time, and why it failed or diverged."""
    places = decimals(results)
    rows = []
    for arm in results["arms"]:
        for trial in arm["trials"]:
            value = (trial.get("metrics") or {}).get(results.get("metric"))
            cells = [(str(arm["name"]), True), (str(trial["seed"]), False), (str(trial["status"]), True),
                     (number(value, places), False), (duration(trial.get("seconds")), False),
                     (str(trial.get("error") or ""), True)]
            rows.append("<tr>" + "".join(f"<td{' class=l' if left else ''}>{escape(text)}</td>"
                                         for text, left in cells) + "</tr>")
    header = "".join(f"<th{' class=l' if i in (0, 2, 5) else ''}>{escape(h)}</th>"
                     for i, h in enumerate(["Arm", "Seed", "Status", metric_name(results), "Time", "Error"]))
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# ----------------------------------------------------------------------------------------------------------- charts


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flops_unit(values: list[float]) -> tuple[float, str]:
    largest = max(values)
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if largest >= factor:
            return factor, prefix
    return 1.0, ""


def flops_chart(results: dict[str, Any]) -> str:
    """The compared metric's mean (error bars: ± one standard deviation over seeds) against each arm's FLOPs, the
    baseline's mean as a dashed line; a sentence instead where no arm has both."""
    arms = [arm for arm in results["arms"] if _finite(arm.get("mean")) and _finite(arm.get("flops"))]
    left_out = [str(arm["name"]) for arm in results["arms"] if arm not in arms]
    if not arms:
        return "<p class=note>No arm has both a finished trial and a FLOP count yet: nothing to draw.</p>"
    factor, prefix = _flops_unit([arm["flops"] for arm in arms])
    points = []
    for arm in arms:
        spread = arm["std"] if _finite(arm.get("std")) else None
        kind = arm["kind"] if arm["kind"] in KINDS else "candidate"
        points.append(Point(str(arm["name"]), arm["flops"] / factor, arm["mean"],
                            y_err=(arm["mean"] - spread, arm["mean"] + spread) if spread else None, kind=kind))
    baseline = next((arm for arm in arms if arm["kind"] == "baseline"), None)
    xs = [p.x for p in points]
    import matplotlib

    try:
        with matplotlib.rc_context(TEXT_RC):
            svg = scatter_svg(points, x_label=f"FLOPs ({prefix}FLOPs)" if prefix else "FLOPs",
                              y_label=metric_name(results), reference_y=baseline["mean"] if baseline else None,
                              log_x=min(xs) > 0 and max(xs) / min(xs) > 20)
    except ValueError as exc:  # more labels than a chart can hold apart: the table still has every figure
        return f"<p class=note>{escape(f'No chart: {exc}.')}</p>"
    note = ("Markers: mean over finished seeds; error bars: ± one standard deviation; dashed line: the baseline's "
            "mean.")
    if left_out:
        note += f" Not drawn (no finished trial or no FLOP count): {', '.join(left_out)}."
    return f"{svg}<p class=note>{escape(note)}</p>"


def _colours(results: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each arm's line colour and style: the baseline and controls in their kind's colour, candidates in turn."""
    styles, candidates = {}, 0
    for arm in results["arms"]:
        if arm["kind"] in ("baseline", "control"):
            styles[arm["name"]] = (KINDS[arm["kind"]][1], "-" if arm["kind"] == "baseline" else "--")
        else:
            styles[arm["name"]] = (PALETTE[candidates % len(PALETTE)], "-" if candidates < len(PALETTE) else ":")
            candidates += 1
    return styles


def curve_charts(results: dict[str, Any]) -> str:
    """One chart per recorded column (``epoch`` is the horizontal axis, not a chart), every trial a line in its
    arm's colour; a sentence instead where no trial recorded curves."""
    columns: list[str] = []
    for arm in results["arms"]:
        for trial in arm["trials"]:
            columns += [c for c in (trial.get("curves") or {}) if c not in columns and c.strip().lower() != "epoch"]
    if not columns:
        return "<p class=note>No trial recorded training curves (the trainer wrote none).</p>"
    styles = _colours(results)
    charts = [_curve_svg(results, column, styles) for column in columns]
    return (f"<div class=curves>{''.join(charts)}</div><p class=note>One line per trial (seed), coloured by arm; "
            "the horizontal axis counts the values the trainer recorded (epochs).</p>")


def _curve_svg(results: dict[str, Any], column: str, styles: dict[str, tuple[str, str]]) -> str:
    import matplotlib

    with matplotlib.rc_context({**RC, **TEXT_RC}):
        figure = curve_figure(results, column, styles)
        return _inline_svg(figure, "k" + hashlib.sha256(column.encode()).hexdigest()[:10], column)


def curve_figure(results: dict[str, Any], column: str, styles: dict[str, tuple[str, str]] | None = None) -> Any:
    """The matplotlib figure of one recorded column: every trial a line, the arms in the legend (call it inside
    ``matplotlib.rc_context`` of :data:`surgeon.profile.charts.RC` and :data:`TEXT_RC` for the page's look)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    styles = styles or _colours(results)
    names = [textwrap.fill(str(arm["name"]), LEGEND_WRAP) for arm in results["arms"]]
    # the legend goes under the axes, in as many columns as the width holds, and the figure grows to fit it
    widest = max(len(line) for name in names for line in name.splitlines())
    columns = max(1, min(len(names), int(380 // (widest * 5.6 + 34))))
    rows = math.ceil(len(names) / columns)
    lines = max(name.count("\n") + 1 for name in names)
    figure = Figure(figsize=(5.6, 2.7 + 0.17 * rows * lines), dpi=72, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    handles = []
    for arm, name in zip(results["arms"], names, strict=True):
        colour, style = styles[arm["name"]]
        handles.append(Line2D([], [], color=colour, linestyle=style, linewidth=1.2, label=name))
        for trial in arm["trials"]:
            values = [float(v) if _finite(v) else math.nan for v in (trial.get("curves") or {}).get(column, [])]
            if values:
                axes.plot(range(1, len(values) + 1), values, color=colour, linestyle=style, linewidth=1.2,
                          alpha=0.85)
    axes.set_title(textwrap.shorten(column, 80), loc="left")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True, steps=[1, 2, 2.5, 5, 10]))
    axes.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, frameon=False)
    return figure


def _inline_svg(figure: Any, chart_id: str, description: str) -> str:
    """The figure as ``<svg>`` for an HTML page: no declaration or metadata, every id prefixed with ``chart_id`` (so
    several charts share a page), labelled for screen readers."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg[svg.index("<svg"):], flags=re.DOTALL)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg, count=2)  # implied inside HTML
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{chart_id}-{m.group(1)}"', svg)
    svg = re.sub(r'(href="#|url\(#)([^")]+)',
                 lambda m: m.group(1) + (f"{chart_id}-{m.group(2)}" if m.group(2) in ids else m.group(2)), svg)
    return svg.replace("<svg ", f'<svg class="chart" role="img" aria-label="{escape(description)}" '
                       'style="max-width:100%;height:auto" ', 1)

