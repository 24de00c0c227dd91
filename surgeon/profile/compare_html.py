"""A comparison as one self-contained HTML page: the table, and two scatter charts drawn as inline SVG.

Each chart puts every measured row at (overhead, eval latency ratio at the first batch size): parameters added in
one, FLOPs added in the other, both in percent of the reference. Candidates are circles, baselines diamonds, each
labelled; a dashed line marks ratio 1 (as fast as the reference). Every point is a ``<g class="point">`` carrying
``data-name``, ``data-kind``, ``data-x`` and ``data-y``, so a test (or a reader's tooling) can find what was drawn.
The page has no script and makes no request: the same Content-Security-Policy as the profile report forbids any.
"""

from __future__ import annotations

from html import escape

from .compare_render import compare_table, export_footnotes, setting_line
from .comparison import COMPARE_SCHEMA_VERSION, SORT_KEYS, Comparison, CompareRow
from .html import CSP, CSS
from .svg import FONT

__all__ = ["POINT_COLORS", "render_compare_html", "scatter_chart"]

POINT_COLORS = {"block": "#4c78a8", "rules": "#54a24b", "baseline": "#e45756"}
_EXTRA_CSS = "td.l, th.l { white-space: normal; } .legend span { margin-right: 16px; }"


def _points(comparison: Comparison, axis: str) -> list[tuple[CompareRow, float, float]]:
    reference = comparison.reference
    total = reference.parameters if axis == "parameters" else reference.flops
    points = []
    for row in comparison.sorted_rows():
        timing = row.timing("eval")
        delta = row.parameters_delta if axis == "parameters" else row.flops_delta
        if row.status != "ok" or timing is None or delta is None or not total:
            continue
        points.append((row, 100.0 * delta / total, timing.ratio))
    return points


def _span(values: list[float], include: float) -> tuple[float, float]:
    low, high = min([*values, include]), max([*values, include])
    pad = (high - low) * 0.08 or max(abs(high) * 0.1, 0.05)
    return low - pad, high + pad


def _marker(kind: str, x: float, y: float) -> str:
    color = POINT_COLORS[kind]
    if kind == "baseline":
        return (f'<path class="marker" d="M{x:.1f} {y - 7:.1f}L{x + 7:.1f} {y:.1f}L{x:.1f} {y + 7:.1f}'
                f'L{x - 7:.1f} {y:.1f}Z" fill="{color}"/>')
    return f'<circle class="marker" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}"/>'


def scatter_chart(comparison: Comparison, axis: str) -> str:
    """Eval latency ratio (y) against ``parameters`` or ``flops`` added, in percent (x)."""
    points = _points(comparison, axis)
    width, height, left, right, top, bottom = 560.0, 360.0, 64.0, 24.0, 28.0, 48.0
    label = f"Latency ratio against {'parameters' if axis == 'parameters' else 'FLOPs'} added"
    body = [f'<text x="{left:.1f}" y="16" font-weight="600">{escape(label)}</text>']
    if not points:
        body.append(f'<text x="{left:.1f}" y="{top + 40:.1f}" fill="#777">nothing timed (runs 0, or no row '
                    'measured)</text>')
        return _svg(width, height, label, body, axis)
    x0, x1 = _span([p[1] for p in points], 0.0)
    y0, y1 = _span([p[2] for p in points], 1.0)
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(value: float) -> float:
        return left + plot_w * (value - x0) / (x1 - x0)

    def sy(value: float) -> float:
        return top + plot_h * (1 - (value - y0) / (y1 - y0))

    body.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{plot_w:.1f}" height="{plot_h:.1f}" fill="none" '
                'stroke="#999"/>')
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        xv, yv = x0 + (x1 - x0) * fraction, y0 + (y1 - y0) * fraction
        body.append(f'<text x="{sx(xv):.1f}" y="{top + plot_h + 16:.1f}" text-anchor="middle" fill="#555">'
                    f'{xv:+.2g}%</text>')
        body.append(f'<text x="{left - 6:.1f}" y="{sy(yv) + 4:.1f}" text-anchor="end" fill="#555">×{yv:.3g}</text>')
    body.append(f'<line class="unity" x1="{left:.1f}" y1="{sy(1.0):.1f}" x2="{left + plot_w:.1f}" y2="{sy(1.0):.1f}" '
                'stroke="#888" stroke-dasharray="4 3"/>')
    body.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8:.1f}" text-anchor="middle">'
                f'{"parameters" if axis == "parameters" else "FLOPs"} added (% of the reference)</text>')
    body.append(f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
                f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">eval latency ratio</text>')
    for row, x, y in points:
        px, py = sx(x), sy(y)
        title = f"{row.name} ({row.kind}): {x:+.3g}% {axis}, latency ×{y:.3f}"
        body.append(f'<g class="point" data-name="{escape(row.name)}" data-kind="{row.kind}" data-x="{x:.6g}" '
                    f'data-y="{y:.6g}"><title>{escape(title)}</title>{_marker(row.kind, px, py)}'
                    f'<text x="{px + 8:.1f}" y="{py - 6:.1f}">{escape(row.name)}</text></g>')
    return _svg(width, height, label, body, axis)


def _svg(width: float, height: float, label: str, body: list[str], chart: str) -> str:
    return (f'<svg class="chart" data-chart="{chart}" role="img" aria-label="{escape(label)}" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" style="{FONT}">' + "".join(body)
            + "</svg>")


def _table(comparison: Comparison) -> str:
    data = compare_table(comparison)

    def cells(values: list[str], tag: str) -> str:
        return "".join(f"<{tag}{' class=l' if i < data.left or data.header[i] in ('exports', 'note') else ''}>"
                       f"{escape(v).replace(chr(10), '<br>')}</{tag}>" for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in data.rows)
    body += f'<tr class="total">{cells(data.total, "td")}</tr>'
    return f"<table><thead><tr>{cells(data.header, 'th')}</tr></thead><tbody>{body}</tbody></table>"


def render_compare_html(comparison: Comparison) -> str:
    """The whole page as a string."""
    where = f" at {comparison.placement}" if comparison.placement else ""
    title = f"Candidates on {comparison.model}{where}"
    legend = "".join(f'<span><svg width="14" height="14" viewBox="0 0 14 14">{_marker(kind, 7, 7)}</svg> {kind}</span>'
                     for kind in POINT_COLORS)
    rows = {row.name: row for row in comparison.rows}
    footnotes = "".join(f"<li value={number}>{escape(name)}, {escape(check)}: "
                        f"{escape(rows[name].exports.results[check])}</li>"
                        for (name, check), number in export_footnotes(comparison).items())
    notes = "".join(f"<p class=warn>{escape(note)}</p>" for note in comparison.notes)
    conventions = "".join(f"<p><b>{escape(key)}:</b> {escape(text)}</p>" for key, text in
                          comparison.conventions.items() if key != "flops")
    sections = [
        f"<h1>{escape(title)}</h1>", f"<div class=meta>{escape(setting_line(comparison))}</div>", notes,
        "<h2>Latency against overhead</h2>", f"<div class=legend>{legend}</div>",
        scatter_chart(comparison, "parameters"), scatter_chart(comparison, "flops"),
        "<p class=note>Eval latency ratio at the first batch size (candidate ÷ reference, median of alternating "
        "rounds); dashed: as fast as the reference. Baselines are diamonds.</p>",
        "<h2>Every candidate</h2>", f"<p class=note>Sorted by {escape(SORT_KEYS[comparison.settings['sort']])}; "
        "rows that could not be compared last, with the reason.</p>", _table(comparison),
        f"<ol class=note>{footnotes}</ol>" if footnotes else "",
        "<h2>How these figures are obtained</h2>", conventions,
        f"<pre>{escape(comparison.conventions.get('flops', ''))}</pre>",
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}{_EXTRA_CSS}</style></head>\n<body><main>\n"
            + "\n".join(section for section in sections if section)
            + f"\n<footer>attn-surgeon {escape(comparison.environment['attn_surgeon'])} · compare schema "
              f"{COMPARE_SCHEMA_VERSION}</footer>\n</main></body></html>\n")
