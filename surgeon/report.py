"""Plain-data summaries of a surgery, shared by the JSON report, ``--json`` and the terminal tables."""

from __future__ import annotations

from typing import Any

from torch import nn

from .match import Plan
from .pipeline import SurgeryResult
from .recipe import versions

__all__ = ["SCHEMA_VERSION", "plan_rows", "surgery_summary", "count_parameters"]

SCHEMA_VERSION = 1


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def plan_rows(plan: Plan) -> list[dict[str, Any]]:
    """One row per planned action: where, what, and on how many channels."""
    rows = []
    for action in plan.actions:
        site = action.site
        channels = site.residual_channels if action.position == "residual" else (
            site.in_channels if action.position == "before" else site.out_channels)
        rows.append({
            "site": site.name, "kind": site.kind, "class": site.cls, "stage": site.stage, "index": site.index,
            "channels": channels, "size": list(site.out_size), "op": action.op, "position": action.position,
            "block": action.block, "args": action.args, "init": action.init, "rule": action.rule,
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
            "added_keys": len(verification.added_keys),
            "removed_by_swap": len(verification.removed_by_swap),
            "max_abs_diff": verification.max_abs_diff,
            "rel_diff": verification.rel_diff,
        },
        "recipe": result.recipe.to_dict() if result.recipe else None,
    })
    return summary
