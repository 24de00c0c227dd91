"""Hand-made ``results.json`` dicts, as ``attn-surgeon ablate`` writes them, for the report and schema tests."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["BASELINE_REASON", "HOSTILE", "METRIC", "arm", "results"]

METRIC = "metrics/mAP50-95(B)"
BASELINE_REASON = "the reference every other arm is compared with"
HOSTILE = '<img src=x onerror="fetch(1)"> & $\\frac{a}$ _x_ 50% #1 {y} ~^|'


def _trial(seed: int, value: float, status: str = "done", epochs: int = 4) -> dict[str, Any]:
    done = status == "done"
    losses = [2.0 - 0.3 * e + 0.01 * seed for e in range(epochs)]
    curves = {"epoch": list(range(1, epochs + 1)), "train/box_loss": losses,
              METRIC: [value * (e + 1) / epochs for e in range(epochs)]} if done else {}
    metrics = {METRIC: value, "metrics/mAP50(B)": value + 0.2} if done else {}
    if status == "diverged":
        metrics = {METRIC: None, "metrics/mAP50(B)": None}  # NaN, as strict JSON writes it
    error = {"failed": "RuntimeError: CUDA out of memory", "diverged": f"diverged: {METRIC} = nan"}.get(status)
    return {"seed": seed, "status": status, "metrics": metrics,
            "seconds": 60.0 + seed if status != "missing" else None, "curves": curves, "error": error}


def arm(name: str, kind: str, values: list[float], flops: float, params: int, verdict: str | None,
        versus: dict[str, Any] | None = None, statuses: list[str] | None = None, reason: str | None = None,
        ) -> dict[str, Any]:
    """One arm: a trial per value (seeds 0, 1, ...), its mean and sample standard deviation over the done ones."""
    statuses = statuses or ["done"] * len(values)
    done = [v for v, s in zip(values, statuses, strict=True) if s == "done"]
    mean = math.fsum(done) / len(done) if done else None
    std = (math.fsum((v - mean) ** 2 for v in done) / (len(done) - 1)) ** 0.5 if len(done) > 1 else None
    return {"name": name, "kind": kind, "params": params, "flops": flops, "gflops_framework": None,
            "trials": [_trial(seed, v, s) for seed, (v, s) in enumerate(zip(values, statuses, strict=True))],
            "mean": mean, "std": std, "n": len(done), "vs_baseline": versus, "verdict": verdict,
            "verdict_reason": reason}


def _paired(mean_diff: float | None, ci95: list[float] | None, p: float | None, p_holm: float | None,
            n: int = 3) -> dict[str, Any]:
    return {"mean_diff": mean_diff, "ci95": ci95, "p": p, "p_holm": p_holm, "n": n}


def _document(arms: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    statuses = [trial["status"] for entry in arms for trial in entry["trials"]]
    counts = {status: statuses.count(status) for status in ("done", "failed", "diverged", "missing")}
    return {"schema": "attn-surgeon/ablate", "version": 1, "model": "ultralytics:yolov8n.yaml", "metric": METRIC,
            "mode": "max", "seeds": list(range(seeds)), "trainer": "ultralytics",
            "train_args": {"data": "coco8.yaml", "epochs": "100"}, "alpha": 0.05,
            "complete": counts["done"] == len(statuses), "trials": {"total": len(statuses), **counts},
            "versions": {"attn_surgeon": "0.1.0", "torch": "2.14.1"}, "arms": arms}


def results(case: str) -> dict[str, Any]:
    """``complete`` (baseline, two candidates, a control), ``partial`` (one arm with a diverged and a missing
    trial, one whose every trial failed) or ``one seed`` (no verdict possible)."""
    baseline = arm("baseline", "baseline", [0.412, 0.418, 0.409], 8.7e9, 3_157_200, None, reason=BASELINE_REASON)
    cbam = arm("cbam", "candidate", [0.431, 0.433, 0.427], 8.9e9, 3_200_000, "better",
               _paired(0.0173, [0.009, 0.0256], 0.008, 0.016), reason="Holm-adjusted p = 0.016 < 0.05")
    se = arm("se", "candidate", [0.415, 0.42, 0.401], 8.75e9, 3_180_000, "no evidence",
             _paired(-0.001, [-0.02, 0.018], 0.8, 0.8), reason="Holm-adjusted p = 0.8 ≥ 0.05")
    control = arm("ultralytics:yolov8s.yaml", "control", [0.452, 0.449, 0.455], 28.6e9, 11_166_560, "better",
                  _paired(0.039, [0.03, 0.048], 0.001, 0.003), reason="Holm-adjusted p = 0.003 < 0.05")
    if case == "complete":
        return _document([baseline, cbam, se, control], seeds=3)
    if case == "partial":
        cbam = arm("cbam", "candidate", [0.431, 0.0, 0.0], 8.9e9, 3_200_000, "incomplete", None,
                   statuses=["done", "diverged", "missing"], reason="seed 1 diverged; seed 2 missing")
        eca = arm("eca", "candidate", [0.0, 0.0, 0.0], 8.7e9, 3_157_209, "incomplete", None,
                  statuses=["failed"] * 3, reason="every trial failed")
        return _document([baseline, cbam, se, control, eca], seeds=3)
    if case == "one seed":
        reason = "1 seed: a paired test needs at least 2 (--seeds 3 or more)"
        return _document([arm("baseline", "baseline", [0.41], 8.7e9, 3_157_200, None, reason=BASELINE_REASON),
                          arm("cbam", "candidate", [0.43], 8.9e9, 3_200_000, None, None, reason=reason)], seeds=1)
    raise ValueError(f"unknown case {case!r}")
