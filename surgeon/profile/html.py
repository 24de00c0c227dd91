"""The profile report as one self-contained HTML page: inline CSS, inline SVG charts (:mod:`.charts`), no script, no
request.

A Content-Security-Policy of ``default-src 'none'`` (inline styles allowed) is part of the page, so a browser
refuses any request it might make, even one a model's name could smuggle in; every report string is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from .format import (
    TableData,
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
from .charts import Point, scatter_svg

__all__ = ["latency_chart", "render_html", "sites_chart"]

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 40px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
.meta, .note { color: #57606a; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0 6px; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 20px; }
.card span { color: #57606a; font-size: 12px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eaeef2; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; font-weight: 600; }
th:first-child, td:first-child, td.l, th.l { text-align: left; }
tr.total td { font-weight: 600; border-top: 2px solid #d0d7de; }
pre { background: #f6f8fa; padding: 10px 12px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
.chart { display: block; margin: 10px 0 4px; max-width: 100%; height: auto; }
.warn { color: #9a6700; }
footer { margin-top: 32px; color: #57606a; font-size: 12px; }
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(report: dict[str, Any]) -> str:
    """The whole page as a string."""
    notes = "".join(f"<p class=warn>{escape(note)}</p>" for note in report.get("notes", []))
    sections = [_header(report), _cards(report), notes, "<h2>Size and work per image</h2>",
                _table(size_table(report))]
    if report["input"]["batch_sizes"]:
        sections += ["<h2>Latency and peak memory</h2>", latency_chart(report),
                     "<p class=note>Median forward pass per batch size, with its 95% interval.</p>",
                     _table(latency_table(report))]
    if report.get("sites"):
        summary = site_summary(report)
        sections += ["<h2>Inserted blocks</h2>", sites_chart(report),
                     f"<p class=note>{escape(summary)}</p>" if summary else "", _table(site_table(report))]
    operators, note = operator_table(report)
    sections += ["<h2>FLOPs by operator</h2>", f"<p class=note>{escape(note)}</p>", _table(operators),
                 _deviation(report), _uncounted(report), _conventions(report)]
    title = escape("Profile of " + " vs ".join(model_labels(report)))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(section for section in sections if section)
            + f"\n<footer>attn-surgeon {escape(report['environment']['attn_surgeon'])} · report schema "
              f"{report['schema_version']}</footer>\n</main></body></html>\n")


def latency_chart(report: dict[str, Any]) -> str:
    """Median pass (y, with its 95% interval) against batch size (x), one point per model and batch size."""
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
    rows = [row for row in report["sites"] if row["flops"] is not None]
    if not rows:
        return ""
    timed = all(row["latency_ms"] is not None for row in rows)
    points = [Point(f"{row['site']} ({row['block']})", row["flops"] / 1e6,
                    row["latency_ms"] if timed else (row["parameters"] or 0)) for row in rows]
    svg = scatter_svg(points, x_label="FLOPs per image (M)",
                      y_label="time alone (ms)" if timed else "parameters")
    return f'<figure class="chart" data-chart="sites">{svg}</figure>'


def _table(data: TableData) -> str:
    def cells(values: list[str], tag: str) -> str:
        return "".join(f"<{tag}{' class=l' if i < data.left else ''}>{escape(v).replace(chr(10), '<br>')}</{tag}>"
                       for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in data.rows)
    if data.total:
        body += f'<tr class="total">{cells(data.total, "td")}</tr>'
    return f"<table><thead><tr>{cells(data.header, 'th')}</tr></thead><tbody>{body}</tbody></table>"


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
