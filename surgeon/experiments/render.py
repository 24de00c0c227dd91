"""An ablation's ``results.json`` rendered for people: Markdown and LaTeX tables, CSV, and an HTML page.

Every format starts from one summary (:func:`.summary.summary_table`): arms as rows with the compared metric's mean ±
standard deviation over seeds, the difference to the baseline paired by seed with its 95% confidence interval, the
Holm-adjusted p-value, the verdict, parameters, FLOPs (and the framework's own GFLOPs where it reports them), the mean
wall time of a trial and how many trials finished. Its cells are plain text with typographic symbols (``±``, ``−``,
``Δ``, ``↑``) that each format translates: LaTeX gets math-mode symbols and escaped user strings (booktabs rules),
Markdown escapes what would start markup, HTML escapes everything. A partial experiment renders too: it says how many
trials finished, and the verdicts it withholds say why.

CSV is one row per trial (tidy: what pandas, R or a spreadsheet filter), its arm's figures repeated on each row: ``arm,
kind, seed, status, seconds, error``, then one column per metric any trial reported (the compared one first), then
``params, flops, gflops_framework, arm_mean, arm_std, mean_diff, ci95_low, ci95_high, p, p_holm, verdict``. Numbers are
written in full precision; an absent one is an empty cell. A text cell that a spreadsheet would run as a formula (``=``,
``+``, ``-``, ``@`` first) is prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from .summary import setting, summary_table, title, verdict_text

__all__ = ["FORMATS", "latex_escape", "render_results"]

FORMATS = ("md", "latex", "csv", "html")


def render_results(results: dict[str, Any], fmt: str) -> str:
    """``results`` (the dict of an experiment's ``results.json``) as ``md``, ``latex``, ``csv`` or ``html`` text.

    Raises:
        ValueError: ``fmt`` is none of :data:`FORMATS`.
    """
    if fmt == "md":
        return _markdown(results)
    if fmt == "latex":
        return _latex(results)
    if fmt == "csv":
        return _csv(results)
    if fmt == "html":
        from .render_html import render_html  # matplotlib is imported only for the page

        return render_html(results)
    raise ValueError(f"unknown report format {fmt!r}; valid: {', '.join(FORMATS)}")


# ------------------------------------------------------------------------------------------------------- Markdown


def _md_escape(text: str, brackets: bool = True) -> str:
    """Backslash-escape what Markdown would read as markup (CommonMark allows it before any ASCII punctuation);
    ``brackets=False`` leaves ``[`` and ``]`` for the report's own ``[low, high]``, which cannot form a link."""
    special = "\\`*_<>|#!~" + ("[]" if brackets else "")
    out = "".join("\\" + ch if ch in special else ch for ch in text)
    return " ".join(out.split())  # a newline would end the table row


def _markdown(results: dict[str, Any]) -> str:
    table = summary_table(results)
    align = ["---" if i < table.left else "--:" for i in range(len(table.header))]
    lines = [f"**{_md_escape(title(results))}** ({_md_escape(setting(results))})", ""]
    lines += ["| " + " | ".join(_md_escape(c, brackets=False) for c in table.header) + " |",
              "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_escape(c, brackets=i < table.left) for i, c in enumerate(row)) + " |"
              for row in table.rows]
    lines += [""] + [f"- {_md_escape(note)}" for note in table.notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------- LaTeX

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "|": r"\textbar{}", "±": r"$\pm$", "−": r"$-$", "Δ": r"$\Delta$",
          "↑": r"$\uparrow$", "↓": r"$\downarrow$", "–": "--", "·": r"\textperiodcentered{}"}


def latex_escape(text: str) -> str:
    """``text`` safe in LaTeX text mode: special characters escaped, the report's symbols in math mode."""
    return "".join(_LATEX.get(ch, ch) for ch in " ".join(str(text).split()))


def _latex(results: dict[str, Any]) -> str:
    table = summary_table(results)
    spec = "l" * table.left + "r" * (len(table.header) - table.left)

    def row(cells: list[str]) -> str:
        return " & ".join(latex_escape(c) for c in cells) + r" \\"

    lines = ["% attn-surgeon ablate; needs \\usepackage{booktabs}", r"\begin{table}[t]", r"\centering", r"\small",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", row(table.header), r"\midrule"]
    lines += [row(cells) for cells in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{latex_escape(title(results))} ({latex_escape(setting(results))}). "
              + " ".join(latex_escape(note) for note in table.notes) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------ CSV

_ARM_COLUMNS = ("params", "flops", "gflops_framework", "arm_mean", "arm_std", "mean_diff", "ci95_low", "ci95_high",
                "p", "p_holm", "verdict")
_TRIAL_COLUMNS = ("arm", "kind", "seed", "status", "seconds", "error")


def _csv_text(value: Any) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_number(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def _csv(results: dict[str, Any]) -> str:
    names: list[str] = [results["metric"]] if results.get("metric") is not None else []
    for arm in results["arms"]:
        for trial in arm["trials"]:
            names += [name for name in (trial.get("metrics") or {}) if name not in names]
    fixed = {*_TRIAL_COLUMNS, *_ARM_COLUMNS}
    header = [*_TRIAL_COLUMNS, *(f"metric:{n}" if n in fixed else n for n in names), *_ARM_COLUMNS]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([_csv_text(column) for column in header])
    for arm in results["arms"]:
        versus = arm.get("vs_baseline") or {}
        ci = versus.get("ci95") or [None, None]
        figures = [arm.get("params"), arm.get("flops"), arm.get("gflops_framework"), arm.get("mean"), arm.get("std"),
                   versus.get("mean_diff"), ci[0], ci[1], versus.get("p"), versus.get("p_holm")]
        for trial in arm["trials"]:
            values = trial.get("metrics") or {}
            writer.writerow([_csv_text(arm["name"]), _csv_text(arm["kind"]), _csv_number(trial["seed"]),
                             _csv_text(trial["status"]), _csv_number(trial.get("seconds")),
                             _csv_text(trial.get("error") or ""),
                             *(_csv_number(values.get(name)) for name in names),
                             *(_csv_number(value) for value in figures), _csv_text(verdict_text(arm))])
    return out.getvalue()
