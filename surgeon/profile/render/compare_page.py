"""A comparison as one self-contained HTML page: the table, and two scatter charts from :mod:`.charts`.

Each chart puts every measured row at (overhead, eval latency ratio at the first batch size), with the ratio's 95%
interval as an error bar: parameters added in one, FLOPs added in the other, both in percent of the reference, which
sits at (0, 1). Candidates are circles, baselines squares; a dashed line marks ratio 1 (as fast as the reference).
A row whose ratio is unstable is labelled so. The page has no script and makes no request: the same
Content-Security-Policy as the profile report forbids any.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING

from ..comparison import COMPARE_SCHEMA_VERSION, SORT_KEYS, Comparison
from .compare_table import compare_table, export_footnotes, setting_line
from .format import TableData
from .page import html_table, page

if TYPE_CHECKING:
    from ..charts import Point

__all__ = ["render_compare_html", "scatter_chart"]

_EXTRA_CSS = "td.l, th.l { white-space: normal; } td.unstable { color: #9a6700; font-weight: 600; }"
_AXES = {"parameters": "parameters added (% of the reference)", "flops": "FLOPs added (% of the reference)"}


def _points(comparison: Comparison, axis: str) -> list[Point]:
    from ..charts import Point  # matplotlib only when a page is drawn: `import surgeon` stays fast

    reference = comparison.reference
    total = reference.parameters if axis == "parameters" else reference.flops
    points = [Point(f"{comparison.model} (reference)", 0.0, 1.0, kind="reference")]
    for row in comparison.sorted_rows():
        timing = row.timing("eval")
        delta = row.parameters_delta if axis == "parameters" else row.flops_delta
        if row.status != "ok" or timing is None or delta is None or not total:
            continue
        known = math.isfinite(timing.ratio_low) and math.isfinite(timing.ratio_high)
        interval = (timing.ratio_low, timing.ratio_high) if known else None
        points.append(Point(row.name + (" (unstable)" if timing.unstable else ""), 100.0 * delta / total,
                            timing.ratio, y_err=interval, kind="baseline" if row.kind == "baseline" else "candidate"))
    return points


def scatter_chart(comparison: Comparison, axis: str) -> str:
    """Eval latency ratio (y, with its 95% interval) against ``parameters`` or ``flops`` added, in percent (x),
    in a ``<figure data-chart="parameters|flops">``; a short note when nothing was timed."""
    from ..charts import scatter_svg

    points = _points(comparison, axis)
    if len(points) == 1:
        return (f'<figure class="chart" data-chart="{axis}"><p class=note>Nothing timed (runs 0, or no row '
                "measured).</p></figure>")
    batch = comparison.batch_sizes[0]
    svg = scatter_svg(points, x_label=_AXES[axis], y_label=f"eval latency ratio at batch {batch} (×, 95% interval)",
                      reference_y=1.0)
    return f'<figure class="chart" data-chart="{axis}">{svg}</figure>'


def _cell_class(data: TableData) -> Callable[[int, str], str]:
    """Left-aligned names, exports and notes; an unstable ratio stands out."""

    def classify(index: int, value: str) -> str:
        if index < data.left or data.header[index] in ("exports", "note"):
            return "l"
        return "unstable" if value.endswith(" unstable") else ""

    return classify


def render_compare_html(comparison: Comparison) -> str:
    """The whole page as a string."""
    where = f" at {comparison.placement}" if comparison.placement else ""
    title = f"Candidates on {comparison.model}{where}"
    table = compare_table(comparison)
    rows = {row.name: row for row in comparison.rows}
    footnotes = "".join(f"<li value={number}>{escape(name)}, {escape(check)}: "
                        f"{escape(rows[name].exports.results[check])}</li>"
                        for (name, check), number in export_footnotes(comparison).items())
    notes = "".join(f"<p class=warn>{escape(note)}</p>" for note in comparison.notes)
    conventions = "".join(f"<p><b>{escape(key)}:</b> {escape(text)}</p>" for key, text in
                          comparison.conventions.items() if key != "flops")
    sections = [
        f"<h1>{escape(title)}</h1>", f"<div class=meta>{escape(setting_line(comparison))}</div>", notes,
        "<h2>Latency against overhead</h2>",
        scatter_chart(comparison, "parameters"), scatter_chart(comparison, "flops"),
        "<p class=note>Eval latency ratio at the first batch size (candidate ÷ reference, median of alternating "
        "rounds) with its 95% interval; dashed: as fast as the reference.</p>",
        "<h2>Every candidate</h2>", f"<p class=note>Sorted by {escape(SORT_KEYS[comparison.settings['sort']])}; "
        "rows that could not be compared last, with the reason.</p>", html_table(table, _cell_class(table)),
        f"<ol class=note>{footnotes}</ol>" if footnotes else "",
        "<h2>How these figures are obtained</h2>", conventions,
        f"<pre>{escape(comparison.conventions.get('flops', ''))}</pre>",
    ]
    return page(title, sections, f"attn-surgeon {comparison.environment['attn_surgeon']} · compare schema "
                f"{COMPARE_SCHEMA_VERSION}", _EXTRA_CSS)
