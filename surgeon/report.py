"""Plain-data summaries of a surgery, shared by the JSON report, ``--json`` and the terminal tables.

A surgery's report (``X.report.json`` beside the checkpoint) is :func:`surgery_summary` plus, under ``profile``,
the profile report of the original against the patched model (:func:`surgery_profile`; the same layout as
``attn-surgeon profile --format json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from .build import planned_parameters
from .io import LoadedModel, atomic_write
from .match import Plan
from .profile import LatencyOptions, ModelFacts, Step, count_report, model_facts, profile_models, render_text
from .recipe import Recipe, versions
from .rewrite import RewriteResult
from .sites import SiteTable
from .verify import Verification

__all__ = ["SCHEMA_VERSION", "PROFILE_MODES", "FULL_PROFILE_RUNS", "FULL_PROFILE_WARMUP", "PatchResult",
           "SurgeryResult", "count_parameters", "html_report_path", "plan_rows", "report_path", "surgery_profile",
           "surgery_summary", "write_reports"]

ProfileMode = Literal["counts", "full", "off"]
PROFILE_MODES: tuple[str, ...] = ("counts", "full", "off")
FULL_PROFILE_RUNS = 10
FULL_PROFILE_WARMUP = 3

SCHEMA_VERSION = 1


@dataclass
class SurgeryResult:
    """Everything one surgery produced; ``rewrite``, ``verification`` and ``recipe`` are ``None`` on a dry run."""

    model: nn.Module
    sites: SiteTable
    plan: Plan
    rewrite: RewriteResult | None = None
    verification: Verification | None = None
    recipe: Recipe | None = None
    params_before: int = 0


@dataclass
class PatchResult:
    """What :func:`surgeon.pipeline.patch` did: the surgery, its report, and the files it wrote.

    Attributes:
        surgery: the surgery's result (a dry run's holds the plan only).
        summary: the report (:func:`surgery_summary`, with the profile under ``profile``), as written to ``report``.
        loaded: the model as loaded (its spec, layout and, when detected, how its architecture was found).
        output, report, html: the checkpoint and the reports beside it (``html`` is ``None`` without a profile);
            nothing is written on a dry run.
        dropped: container entries left out of the checkpoint (optimizer state).
        notes: other things worth telling about the checkpoint written.
    """

    surgery: SurgeryResult
    summary: dict[str, Any]
    loaded: LoadedModel
    output: Path
    report: Path
    html: Path | None
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def report_path(output: Path) -> Path:
    """``X.report.json`` beside the checkpoint ``X.pt``."""
    return output.with_name(output.stem + ".report.json")


def html_report_path(output: Path) -> Path:
    """``X.report.html`` beside the checkpoint ``X.pt``."""
    return output.with_name(output.stem + ".report.html")


def write_reports(summary: dict[str, Any], report: Path, html: Path | None, *, force: bool) -> None:
    """Write the surgery report as JSON, and its profile as a self-contained HTML page (atomically)."""
    text = json.dumps(summary, indent=2, default=str).encode()
    atomic_write(report, lambda file: file.write(text), force=force)
    if html is not None:
        page = render_text(summary["profile"], "html").encode("utf-8")
        atomic_write(html, lambda file: file.write(page), force=force)


def count_parameters(model: nn.Module) -> int:
    """Every parameter's element count, summed."""
    return sum(p.numel() for p in model.parameters())


def plan_rows(plan: Plan) -> list[dict[str, Any]]:
    """One row per planned action: where, what, and on how many channels."""
    rows = []
    for action in plan.actions:
        site = action.site
        rows.append({
            "site": site.name, "kind": site.kind, "class": site.cls, "stage": site.stage, "index": site.index,
            "channels": site.channels_at(action.position), "size": list(site.out_size), "op": action.op,
            "position": action.position, "block": action.block, "args": action.args, "init": action.init,
            "rule": action.rule, "parameters": planned_parameters(action),
        })
    return rows


def surgery_summary(result: SurgeryResult, source: str, output: str | None = None) -> dict[str, Any]:
    """The surgery report: what was patched, what it added, and how far the function moved."""
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "output": output,
        "input_shape": list(result.sites.input_shape),
        "dry_run": result.rewrite is None,
        "plan": plan_rows(result.plan),
        "versions": versions(),
    }
    if result.rewrite is None:
        return summary
    verification = result.verification
    params_after = count_parameters(result.model)
    original = (len(result.model.state_dict()) - len(verification.added_keys) + len(verification.removed_by_swap)
                + len(verification.missing_keys))
    summary.update({
        "sites_patched": len(result.rewrite.inserted),
        "parameters": {"before": result.params_before, "after": params_after,
                       "added": params_after - result.params_before},
        "inserted": [
            {"site": item.action.site.name, "module": item.key, "host": item.host, "mode": item.mode,
             "block": item.action.block, "position": item.action.position, "op": item.action.op,
             "parameters": item.params, "removed_keys": len(item.removed_keys), "inherited": item.inherited}
            for item in result.rewrite.inserted
        ],
        "verification": {
            "forward_ok": verification.forward_ok,
            "keys_preserved": verification.keys_preserved,
            "original_tensors": original,
            "transferred_tensors": original - len(verification.missing_keys) - len(verification.changed_keys)
            - len(verification.removed_by_swap),
            "added_keys": len(verification.added_keys),
            "removed_by_swap": len(verification.removed_by_swap),
            "removed_keys": list(verification.removed_by_swap),
            "max_abs_diff": verification.max_abs_diff,
            "rel_diff": verification.rel_diff,
        },
        "recipe": result.recipe.to_dict() if result.recipe else None,
    })
    return summary


def surgery_profile(mode: ProfileMode, result: SurgeryResult, *, before: ModelFacts | None,
                    original: nn.Module | None, names: tuple[str, str], input_shape: Sequence[int],
                    step: Step = lambda message: nullcontext()) -> dict[str, Any] | None:
    """The profile report of a surgery: original against patched.

    Args:
        mode: ``counts`` (sizes, MACs/FLOPs and per-block counts, from ``before`` taken before surgery and the
            patched model; milliseconds), ``full`` (also latency, peak memory and the time of each block, with
            :data:`FULL_PROFILE_RUNS` timed runs at the probe's batch size; needs ``original``, an unpatched copy),
            or ``off`` (``None``).
        result: the surgery's result (not a dry run).
        before: :func:`~surgeon.profile.model_facts` of the model before surgery (``counts``).
        original: an unpatched copy of the model (``full``).
        names: labels of the original and the patched model.
        input_shape: the probe batch shape of the surgery.
        step: wraps each long step (the CLI passes a progress spinner).
    """
    if mode == "off":
        return None
    if mode == "full":
        if original is None:
            raise ValueError("a full profile needs an unpatched copy of the model (original=)")
        # a fixed number of passes keeps the surgery's own report quick; its ratios still carry their intervals
        timing = LatencyOptions(runs=FULL_PROFILE_RUNS, warmup=FULL_PROFILE_WARMUP, max_time=0)
        return profile_models(original, result.model, input_shape=input_shape, latency=timing, names=names,
                              step=step)
    if mode != "counts" or before is None:
        raise ValueError(f"profile mode must be one of {', '.join(PROFILE_MODES)} (counts needs before=)")
    verification = result.verification
    after = model_facts(result.model, names[1], tuple(input_shape)[1:])
    report = count_report(before, after, input_shape=input_shape,
                          deviation=(verification.max_abs_diff, verification.rel_diff),
                          replaced=len(verification.removed_by_swap))
    report["notes"].append("Latency, peak memory and the time of each block were not measured (the surgery's "
                           "default --profile counts); pass --profile full, or run `attn-surgeon profile ORIGINAL "
                           "--compare PATCHED`.")
    return report
