"""Profiling: exact counts (:mod:`.counting`), honest timings (:mod:`.latency`), and the before/after report."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..pipeline import recipe_of
from ..recipe import versions
from ..sites import probe_input
from ..verify import output_deviation
from .counting import CONVENTIONS, CountResult, count_ops
from .latency import LatencyResult, compare_latency, measure_latency, peak_memory

__all__ = ["SCHEMA_VERSION", "CONVENTIONS", "count_ops", "measure_latency", "compare_latency", "peak_memory",
           "profile_models"]

SCHEMA_VERSION = 1


def _outputs(model: nn.Module, probe: torch.Tensor) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_flatten

    from .counting import eval_mode

    with torch.no_grad(), eval_mode(model):
        leaves, _ = tree_flatten(model(probe))
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


def _model_row(name: str | None, model: nn.Module, counts: CountResult, latency: LatencyResult,
               memory: int) -> dict[str, Any]:
    return {
        "name": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "macs": counts.macs,
        "flops": counts.flops,
        "uncounted_ops": dict(counts.uncounted),
        "latency": {key: getattr(latency, key) for key in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms",
                                                           "runs", "warmup", "images_per_s", "batch_size")},
        "peak_memory_bytes": memory,
    }


def _site_rows(model: nn.Module, counts: CountResult) -> list[dict[str, Any]]:
    recipe = recipe_of(model)
    if recipe is None:
        return []
    modules = dict(model.named_modules())
    rows = []
    for step in recipe.steps:
        module = modules.get(step.module)
        count = counts.per_module.get(step.module)
        rows.append({
            "site": step.site, "module": step.module, "block": step.block, "op": step.op, "position": step.position,
            "parameters": sum(p.numel() for p in module.parameters()) if module is not None else None,
            "macs": count.macs if count else None,
            "flops": count.flops if count else None,
            "flops_share": (count.flops / counts.flops) if count and counts.flops else None,
        })
    return rows


def profile_models(model: nn.Module, other: nn.Module | None = None, *, input_shape: Sequence[int] = (1, 3, 224, 224),
                   runs: int = 20, warmup: int = 5, threads: int | None = None,
                   names: tuple[str | None, str | None] = ("model", "other")) -> dict[str, Any]:
    """Parameters, MACs/FLOPs, latency and peak memory of ``model`` (and ``other`` beside it), as plain data.

    With ``other``, latency is measured with the two models' passes interleaved, and the report holds the
    deltas, the output deviation of ``other`` from ``model`` on a probe batch, and one row per block that
    ``other``'s recipe inserted.
    """
    probe = probe_input(tuple(input_shape), model)
    models = [model] if other is None else [model, other]
    counts = [count_ops(m, (probe,)) for m in models]
    if other is None:
        latencies = [measure_latency(model, (probe,), runs=runs, warmup=warmup, threads=threads)]
    else:
        latencies = list(compare_latency(model, other, (probe,), runs=runs, warmup=warmup, threads=threads))
    memories = [peak_memory(m, (probe,)) for m in models]
    rows = [_model_row(names[i], m, counts[i], latencies[i], memories[i]) for i, m in enumerate(models)]
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "conventions": CONVENTIONS,
        "input_shape": list(input_shape),
        "environment": {**versions(), "machine": latencies[0].machine, "device": latencies[0].device,
                        "threads": latencies[0].threads, "python": platform.python_version()},
        "models": rows,
    }
    if other is not None:
        before, after = rows
        max_abs, rel = output_deviation(_outputs(model, probe), _outputs(other, probe))
        report["delta"] = {
            "parameters": after["parameters"] - before["parameters"],
            "macs": after["macs"] - before["macs"],
            "flops": after["flops"] - before["flops"],
            "latency_ratio": after["latency"]["median_ms"] / before["latency"]["median_ms"],
            "max_abs_diff": max_abs,
            "rel_diff": rel,
        }
        report["sites"] = _site_rows(other, counts[1])
    return report
