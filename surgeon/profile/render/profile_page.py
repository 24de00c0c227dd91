"""The profile report as one self-contained HTML page (the shell of :mod:`.page`), with charts from
:mod:`..charts`."""

from __future__ import annotations

from html import escape
from typing import Any

from .format import (
    deviation_line,
    latency_rows,
    latency_table,
    model_labels,
    ms,
    operator_table,
    percent,
    ratio_text,
    shape,
    signed_count,
    signed_si,
    site_summary,
    site_table,
    size_table,
    timing_setting,
    uncounted_ops,
)
from .page import html_table, page

__all__ = ["latency_chart", "render_html", "sites_chart"]


def render_html(report: dict[str, Any]) -> str:
    """The whole page as a string."""
    notes = "".join(f"<p class=warn>{escape(note)}</p>" for note in report.get("notes", []))
    sections = [_header(report), _cards(report), notes, "<h2>Size and work per image</h2>",
                html_table(size_table(report))]
    if report["input"]["batch_sizes"]:
        sections += ["<h2>Latency and peak memory</h2>", latency_chart(report),
                     "<p class=note>Median forward pass per batch size, with its 95% interval.</p>",
                     html_table(latency_table(report))]
    if report.get("sites"):
        summary = site_summary(report)
        sections += ["<h2>Inserted blocks</h2>", sites_chart(report),
                     f"<p class=note>{escape(summary)}</p>" if summary else "", html_table(site_table(report))]
    operators, note = operator_table(report)
    sections += ["<h2>FLOPs by operator</h2>", f"<p class=note>{escape(note)}</p>", html_table(operators),
                 _deviation(report), _uncounted(report), _conventions(report)]
    title = "Profile of " + " vs ".join(model_labels(report))
    return page(title, sections, f"attn-surgeon {report['environment']['attn_surgeon']} · report schema "
                f"{report['schema_version']}")


def latency_chart(report: dict[str, Any]) -> str:
    """Median pass (y, with its 95% interval) against batch size (x), one point per model and batch size."""
    from ..charts import Point, scatter_svg  # matplotlib only when a page is drawn: `import surgeon` stays fast

    labels = model_labels(report)
    points = []
    for row in latency_rows(report):
        for index, (label, entry) in enumerate(zip(labels, row["entries"], strict=True)):
            if entry is None:
                continue
            low, high = entry.get("interval_ms") or (None, None)
            interval = (low, high) if low is not None and high is not None else None
            points.append(Point(f"{label}, batch {row['batch_size']}", row["batch_size"], entry["median_ms"],
                                y_err=interval, kind="reference" if index == 0 and len(labels) == 2 else "candidate"))
    sizes = report["input"]["batch_sizes"]
    svg = scatter_svg(points, x_label="batch size", y_label="median forward pass (ms)",
                      log_x=len(set(sizes)) > 1 and max(sizes) / min(sizes) >= 8)
    return f'<figure class="chart" data-chart="latency">{svg}</figure>'


def sites_chart(report: dict[str, Any]) -> str:
    """Each inserted block's FLOPs per image (x) against its time alone (y), or its parameters when not timed."""
    from ..charts import Point, scatter_svg  # matplotlib only when a page is drawn: `import surgeon` stays fast

    rows = [row for row in report["sites"] if row["flops"] is not None]
    if not rows:
        return ""
    timed = all(row["latency_ms"] is not None for row in rows)
    points = [Point(f"{row['site']} ({row['block']})", row["flops"] / 1e6,
                    row["latency_ms"] if timed else (row["parameters"] or 0)) for row in rows]
    svg = scatter_svg(points, x_label="FLOPs per image (M)",
                      y_label="time alone (ms)" if timed else "parameters")
    return f'<figure class="chart" data-chart="sites">{svg}</figure>'


def _header(report: dict[str, Any]) -> str:
    env = report["environment"]
    setting = [f"image {shape(report['input']['image'])}", env["machine"], env["device"]]
    if report["input"]["batch_sizes"]:
        setting += timing_setting(env)
    setting += [f"torch {env['torch']}", f"Python {env['python']}", env["platform"]]
    labels = " vs ".join(model_labels(report))
    names = " vs ".join(str(row["name"]) for row in report["models"])
    return (f"<h1>Profile of {escape(labels)}</h1>"
            + (f"<div class=meta>{escape(names)}</div>" if names != labels else "")
            + f"<div class=meta>{escape(' · '.join(setting))}</div>")


def _cards(report: dict[str, Any]) -> str:
    delta = report.get("delta")
    if not delta:
        return ""
    before = report["models"][0]

    def relative(key: str) -> str:
        return percent(delta[key] / before[key]) if before[key] else "-"

    cards = [(signed_count(delta["parameters"]), f"parameters ({relative('parameters')})"),
             (signed_si(delta["macs"]), f"MACs per image ({relative('macs')})"),
             (signed_si(delta["flops"]), f"FLOPs per image ({relative('flops')})")]
    cards += [(ratio_text(entry["ratio"], entry.get("ratio_low"), entry.get("ratio_high")),
               f"latency at batch {entry['batch_size']} ({ms(entry['ms'])} ms)"
               + (" — unstable" if entry.get("unstable") else "")) for entry in delta["latency"]]
    deviation = report.get("deviation")
    if deviation and deviation["max_abs"] is not None:
        relative = f"{deviation['relative']:.3g}"
        cards.append((f"{deviation['max_abs']:.3g}", f"output deviation, max abs (relative {relative})"))
    items = "".join(f"<div class=card><b>{escape(value)}</b><span>{escape(label)}</span></div>"
                    for value, label in cards)
    return f"<div class=cards>{items}</div>"


def _deviation(report: dict[str, Any]) -> str:
    line = deviation_line(report)
    return f"<h2>Output deviation</h2><p>{escape(line)}</p>" if line else ""


def _uncounted(report: dict[str, Any]) -> str:
    ops = uncounted_ops(report)
    if not ops:
        return ("<h2>Uncounted operators</h2><p>None: every operator that ran has a formula or is free data "
                "movement.</p>")
    items = "".join(f"<li><code>{escape(name)}</code> × {calls}</li>" for name, calls in ops.items())
    return ("<h2>Uncounted operators</h2><p class=warn>These ran without a formula and are not treated as free: "
            f"the FLOPs above are a lower bound.</p><ul>{items}</ul>")


def _conventions(report: dict[str, Any]) -> str:
    conventions = report["conventions"]
    parts = [f"<p><b>Counts:</b> {escape(conventions['counts'])}</p>", f"<pre>{escape(conventions['flops'])}</pre>"]
    for key, title in (("latency", "Latency"), ("memory", "Peak memory"), ("site_latency", "Time of each block")):
        if key in conventions:
            parts.append(f"<p><b>{title}:</b> {escape(conventions[key])}</p>")
    return "<h2>How these figures are obtained</h2>" + "".join(parts)
