"""The one page shell of every HTML report: inline CSS, no script, no request, and the table markup.

A Content-Security-Policy of ``default-src 'none'`` (inline styles allowed) is part of the page, so a browser
refuses any request it might make, even one a model's name could smuggle in; every string is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from .format import TableData

__all__ = ["CSP", "CSS", "html_table", "page"]

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


def page(title: str, sections: Sequence[str], footer: str, extra_css: str = "") -> str:
    """The whole document: ``sections`` (markup, empty ones skipped) under ``title``, then ``footer`` (text)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}{extra_css}</style></head>\n<body><main>\n"
            + "\n".join(section for section in sections if section)
            + f"\n<footer>{escape(footer)}</footer>\n</main></body></html>\n")


def html_table(data: TableData, cell_class: Callable[[int, str], str] | None = None) -> str:
    """``data`` as a ``<table>``; ``cell_class(column, text)`` names a cell's class (default: ``l``, left-aligned,
    for the first ``data.left`` columns); line breaks in cells become ``<br>``."""

    def default(index: int, value: str) -> str:
        return "l" if index < data.left else ""

    classify = cell_class or default

    def cells(values: list[str], tag: str) -> str:
        return "".join(f"<{tag}{f' class={name}' if (name := classify(i, v)) else ''}>"
                       f"{escape(v).replace(chr(10), '<br>')}</{tag}>" for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in data.rows)
    if data.total:
        body += f'<tr class="total">{cells(data.total, "td")}</tr>'
    return f"<table><thead><tr>{cells(data.header, 'th')}</tr></thead><tbody>{body}</tbody></table>"
