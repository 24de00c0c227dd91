"""The summary every ablate report starts from: arms as rows, in neutral text (see :func:`summary_table`), and the
number formatting the formats share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..profile.render.format import si

__all__ = ["DASH", "SummaryTable", "decimals", "duration", "metric_name", "number", "p_value", "partial_note",
           "setting", "summary_table", "title", "verdict_text"]

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
