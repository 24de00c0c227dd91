"""An ablation's ``results.json`` rendered for people: Markdown and LaTeX tables, CSV, and an HTML page.

Every format starts from one summary (:func:`summary_table`): arms as rows with the compared metric's mean ± standard
deviation over seeds, the difference to the baseline paired by seed with its 95% confidence interval, the
Holm-adjusted p-value, the verdict, parameters, FLOPs (and the framework's own GFLOPs where it reports them), the
mean wall time of a trial and how many trials finished. Its cells are plain text with typographic symbols (``±``,
``−``, ``Δ``, ``↑``) that each format translates: LaTeX gets math-mode symbols and escaped user strings (booktabs
rules), Markdown escapes what would start markup, HTML escapes everything. A partial experiment renders too: it says
how many trials finished, and the verdicts it withholds say why.

CSV is one row per trial (tidy: what pandas, R or a spreadsheet filter), its arm's figures repeated on each row:
``arm, kind, seed, status, seconds``, then one column per metric any trial reported (the compared one first), then
``params, flops, gflops_framework, arm_mean, arm_std, mean_diff, ci95_low, ci95_high, p, p_holm, verdict``. Numbers
are written in full precision; an absent one is an empty cell. A text cell that a spreadsheet would run as a
formula (``=``, ``+``, ``-``, ``@`` first) is prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from ..profile.format import si

__all__ = ["FORMATS", "SummaryTable", "metric_name", "render_results", "summary_table", "verdict_text"]

FORMATS = ("md", "latex", "csv", "html")
DASH = "–"
MINUS = "−"
DECISIVE = ("better", "worse", "baseline")
"""Verdicts that need no explanation under the table; any other verdict's reason is listed."""


@dataclass(frozen=True)
class SummaryTable:
    """The arms-as-rows table every format renders, in neutral text.

    Attributes:
        header: column titles.
        rows: one list of cells per arm, in the order of ``results["arms"]``.
        left: how many leading columns are text (left-aligned); the rest are figures.
        verdict_column: index of the verdict column (HTML colours it).
        notes: sentences to print under the table: the partial-experiment warning, each withheld verdict's reason,
            how the figures are obtained.
    """

    header: list[str]
    rows: list[list[str]]
    left: int
    verdict_column: int
    notes: list[str] = field(default_factory=list)


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


# ------------------------------------------------------------------------------------------------- numbers as text


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def decimals(results: dict[str, Any]) -> int:
    """Decimals for every metric figure of the experiment: two significant digits of its smallest positive spread
    (standard deviation or CI half-width), between 0 and 6; 4 where nothing has spread."""
    spreads = [arm["std"] for arm in results["arms"] if _finite(arm.get("std")) and arm["std"] > 0]
    for arm in results["arms"]:
        ci = (arm.get("vs_baseline") or {}).get("ci95")
        if ci and all(_finite(v) for v in ci) and ci[1] > ci[0]:
            spreads.append((ci[1] - ci[0]) / 2)
    if not spreads:
        return 4
    return min(6, max(0, 1 - math.floor(math.log10(min(spreads)))))


def number(value: Any, places: int, signed: bool = False) -> str:
    """``value`` with ``places`` decimals and a true minus sign; ``–`` where absent or not finite."""
    if not _finite(value):
        return DASH
    text = f"{value:+.{places}f}" if signed else f"{value:.{places}f}"
    return text.replace("-", MINUS)


def p_value(value: Any) -> str:
    if not _finite(value):
        return DASH
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def duration(seconds: float | None) -> str:
    if not _finite(seconds):
        return DASH
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def counts(results: dict[str, Any]) -> dict[str, int]:
    """How many trials of the experiment have each status."""
    tally: dict[str, int] = {}
    for arm in results["arms"]:
        for trial in arm["trials"]:
            tally[trial["status"]] = tally.get(trial["status"], 0) + 1
    return tally


def partial_note(results: dict[str, Any]) -> str | None:
    """The sentence that says an experiment is partial, with its counts; ``None`` for a complete one."""
    tally = counts(results)
    total, done = sum(tally.values()), tally.get("done", 0)
    expected = len(results["arms"]) * len(results.get("seeds", []))
    if results.get("complete", done == total) and done == total:
        return None
    others = ", ".join(f"{tally[status]} {status}" for status in ("failed", "diverged", "missing") if tally.get(status))
    return (f"Partial experiment: {done} of {max(total, expected)} trials finished" + (f" ({others})" if others else "")
            + ". No verdict is given for an arm while any of its trials or the baseline's is unfinished.")


# ---------------------------------------------------------------------------------------------------- the summary


def _mean_seconds(arm: dict[str, Any]) -> float | None:
    times = [t["seconds"] for t in arm["trials"] if t["status"] == "done" and _finite(t.get("seconds"))]
    return sum(times) / len(times) if times else None


def metric_name(results: dict[str, Any]) -> str:
    """The compared metric's name; ``results.json`` has none before a trial has finished."""
    return str(results["metric"]) if results.get("metric") is not None else "metric (none reported yet)"


def verdict_text(arm: dict[str, Any]) -> str:
    """``baseline`` for the baseline, ``no verdict`` where none could be given (one seed), else the verdict."""
    if arm["kind"] == "baseline":
        return "baseline"
    return str(arm["verdict"]) if arm.get("verdict") else "no verdict"


def summary_table(results: dict[str, Any]) -> SummaryTable:
    """The arms-as-rows table (see :class:`SummaryTable`)."""
    places = decimals(results)
    arrow = "↑" if results.get("mode", "max") == "max" else "↓"
    framework = any(_finite(arm.get("gflops_framework")) for arm in results["arms"])
    header = ["Arm", "Kind", "Verdict", f"{metric_name(results)} {arrow}", "Δ vs baseline [95% CI]", "p (Holm)",
              "Params", "FLOPs", *(["GFLOPs (framework)"] if framework else []), "Time/trial", "Trials"]
    rows = []
    for arm in results["arms"]:
        mean = number(arm.get("mean"), places)
        if mean != DASH and _finite(arm.get("std")):
            mean += f" ± {number(arm['std'], places)}"
        versus = arm.get("vs_baseline") or {}
        diff = number(versus.get("mean_diff"), places, signed=True)
        ci = versus.get("ci95")
        if diff != DASH and ci and all(_finite(v) for v in ci):
            diff += f" [{number(ci[0], places, signed=True)}, {number(ci[1], places, signed=True)}]"
        done = sum(1 for t in arm["trials"] if t["status"] == "done")
        gflops = [number(arm.get("gflops_framework"), 1)] if framework else []
        rows.append([str(arm["name"]), str(arm["kind"]), verdict_text(arm), mean, diff,
                     p_value(versus.get("p_holm")), si(arm.get("params")) if _finite(arm.get("params")) else DASH,
                     si(arm.get("flops")) if _finite(arm.get("flops")) else DASH, *gflops,
                     duration(_mean_seconds(arm)), f"{done}/{len(arm['trials'])}"])
    notes = [note for note in (partial_note(results),) if note]
    notes += [f"{arm['name']}: {arm['verdict_reason']}" for arm in results["arms"]
              if arm.get("verdict_reason") and verdict_text(arm) not in DECISIVE]
    seeds = ", ".join(str(seed) for seed in results.get("seeds", []))
    better = "higher" if results.get("mode", "max") == "max" else "lower"
    notes.append(f"{metric_name(results)}: mean ± standard deviation over seeds {seeds} ({better} is better). "
                 "Δ: mean difference to the baseline, paired by seed, with its 95% confidence interval (Student t); "
                 "p: paired t-test, adjusted across arms with Holm's method. better/worse needs every seed finished "
                 f"and p (Holm) < {results.get('alpha', 0.05):g}; with few seeds the interval is wide, and no "
                 "evidence is not evidence of no effect.")
    return SummaryTable(header, rows, left=3, verdict_column=2, notes=notes)


def title(results: dict[str, Any]) -> str:
    return f"Ablation of {results['model']}: {metric_name(results)}"


def setting(results: dict[str, Any]) -> str:
    """The trainer with its arguments, the seeds and the number of arms, on one line."""
    seeds = ", ".join(str(seed) for seed in results.get("seeds", []))
    arguments = " ".join(f"{key}={value}" for key, value in (results.get("train_args") or {}).items())
    trainer = f"{results.get('trainer', DASH)}" + (f" ({arguments})" if arguments else "")
    return f"trainer {trainer} · seeds {seeds} · {len(results['arms'])} arms"


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
_TRIAL_COLUMNS = ("arm", "kind", "seed", "status", "seconds")


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
                             *(_csv_number(values.get(name)) for name in names),
                             *(_csv_number(value) for value in figures), _csv_text(verdict_text(arm))])
    return out.getvalue()
