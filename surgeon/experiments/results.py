"""``results.json``: the experiment's trials and statistics as one versioned dict, a pure function of the plan, the
stored trials and the arms' costs.

Schema ``attn-surgeon/ablate``, version 1 (documented in ``docs/ablate.md``)::

    {"schema": "attn-surgeon/ablate", "version": 1,
     "model": SOURCE, "metric": NAME | null, "mode": "max" | "min", "seeds": [INT], "trainer": SPEC,
     "train_args": {KEY: VALUE}, "alpha": 0.05, "complete": BOOL,
     "trials": {"total", "done", "failed", "diverged", "missing"}, "versions": {...},
     "arms": [{"name", "kind": "baseline" | "candidate" | "control", "params", "flops", "gflops_framework",
               "trials": [{"seed", "status": "done" | "failed" | "diverged" | "missing", "metrics", "seconds",
                           "curves", "error"}],
               "mean", "std", "n",
               "vs_baseline": {"mean_diff", "ci95": [LOW, HIGH] | null, "p", "p_holm", "n"} | null,
               "verdict": "better" | "worse" | "no evidence" | "incomplete" | null, "verdict_reason"}]}

``metric`` is the plan's, else the first metric the first finished trial returned (``null`` before any finished).
Non-finite numbers are written as ``null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .plan import Arm, ExperimentPlan
from .stats import ALPHA, Paired, holm, mean_std, paired, verdict
from .store import StoredTrial

__all__ = ["RESULTS_SCHEMA", "RESULTS_VERSION", "build_results", "resolve_metric"]

RESULTS_SCHEMA = "attn-surgeon/ablate"
RESULTS_VERSION = 1
Trials = Mapping[tuple[str, int], StoredTrial | None]


def resolve_metric(plan: ExperimentPlan, trials: Trials) -> str | None:
    """The compared metric: the plan's, else the first key of the first finished trial in plan order."""
    if plan.metric is not None:
        return plan.metric
    for arm in plan.arms:
        for seed in plan.seeds:
            trial = trials.get((arm.name, seed))
            if trial is not None and trial["status"] == "done" and trial["metrics"]:
                return next(iter(trial["metrics"]))
    return None


def _last_line(error: str | None) -> str | None:
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def _trial_rows(plan: ExperimentPlan, arm: Arm, trials: Trials) -> list[dict[str, Any]]:
    rows = []
    for seed in plan.seeds:
        trial = trials.get((arm.name, seed))
        if trial is None:
            rows.append({"seed": seed, "status": "missing", "metrics": {}, "seconds": None, "curves": {},
                         "error": None})
        else:
            rows.append({"seed": seed, "status": trial["status"], "metrics": dict(trial["metrics"]),
                         "seconds": trial["seconds"], "curves": dict(trial.get("curves") or {}),
                         "error": _last_line(trial.get("error"))})
    return rows


def _values(rows: list[dict[str, Any]], metric: str | None) -> dict[int, float]:
    """The compared metric of each finished trial, by seed."""
    if metric is None:
        return {}
    return {row["seed"]: row["metrics"][metric] for row in rows
            if row["status"] == "done" and row["metrics"].get(metric) is not None}


def _not_done(name: str, rows: list[dict[str, Any]], values: dict[int, float]) -> list[str]:
    return [f"{name} seed {row['seed']} {row['status'] if row['status'] != 'done' else 'has no such metric'}"
            for row in rows if row["seed"] not in values]


def build_results(plan: ExperimentPlan, trials: Trials, costs: Mapping[str, Mapping[str, Any]], *,
                  metric: str | None = None, mode: str | None = None) -> dict[str, Any]:
    """The results dict (see the module docstring).

    Args:
        plan: the experiment's plan.
        trials: the stored trial of each ``(arm name, seed)``, ``None`` (or absent) where none finished.
        costs: each arm's ``params``, ``flops`` and ``gflops_framework``, by arm name.
        metric, mode: compare another metric, or the other way, than the plan says (for a report).
    """
    metric = metric or resolve_metric(plan, trials)
    mode = mode or plan.mode
    rows = {arm.name: _trial_rows(plan, arm, trials) for arm in plan.arms}
    values = {name: _values(arm_rows, metric) for name, arm_rows in rows.items()}
    baseline = plan.arms[0]
    comparisons: dict[str, Paired | None] = {}
    for arm in plan.arms[1:]:
        seeds = [seed for seed in plan.seeds if seed in values[arm.name] and seed in values[baseline.name]]
        comparisons[arm.name] = paired([values[arm.name][s] for s in seeds], [values[baseline.name][s] for s in seeds])
    adjusted = holm({name: c.p for name, c in comparisons.items() if c is not None and c.p is not None})
    arms = []
    for arm in plan.arms:
        mean, std = mean_std(list(values[arm.name].values()))
        entry: dict[str, Any] = {"name": arm.name, "kind": arm.kind, "params": None, "flops": None,
                                 "gflops_framework": None, **{k: v for k, v in costs.get(arm.name, {}).items()
                                                              if k in ("params", "flops", "gflops_framework")},
                                 "trials": rows[arm.name], "mean": mean, "std": std, "n": len(values[arm.name]),
                                 "vs_baseline": None}
        if arm is baseline:
            entry.update(verdict=None, verdict_reason="the reference every other arm is compared with")
        else:
            comparison = comparisons[arm.name]
            if comparison is not None and comparison.p is not None:
                comparison = Paired(comparison.n, comparison.mean_diff, comparison.ci95, comparison.p,
                                    adjusted[arm.name])
            entry["vs_baseline"] = comparison.to_dict() if comparison is not None else None
            missing = (_not_done(arm.name, rows[arm.name], values[arm.name])
                       + _not_done(baseline.name, rows[baseline.name], values[baseline.name]))
            judged = verdict(comparison, seeds=len(plan.seeds), complete=not missing, missing=", ".join(missing),
                             mode=mode)
            entry.update(verdict=judged.verdict, verdict_reason=judged.reason)
        arms.append(entry)
    statuses = [row["status"] for arm_rows in rows.values() for row in arm_rows]
    counts = {status: statuses.count(status) for status in ("done", "failed", "diverged", "missing")}
    return {"schema": RESULTS_SCHEMA, "version": RESULTS_VERSION, "model": plan.model["source"], "metric": metric,
            "mode": mode, "seeds": list(plan.seeds), "trainer": plan.trainer["spec"],
            "train_args": dict(plan.trainer["args"]), "alpha": ALPHA, "complete": counts["done"] == len(statuses),
            "trials": {"total": len(statuses), **counts}, "versions": dict(plan.versions), "arms": arms}
