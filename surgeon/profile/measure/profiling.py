"""The profile report: a model, or a model and its patched version side by side, as plain JSON-safe data.

:func:`profile_models` measures everything (counts, latency per batch size, peak memory, the cost of each inserted
block, the output deviation); :func:`count_report` builds the same report from counts alone, fast enough to run
after every surgery. Both return the dict that every renderer (terminal, Markdown, HTML) and ``--format json``
take; its layout is versioned by :data:`SCHEMA_VERSION` and described in :func:`profile_models`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ... import precision
from ...recipe import Recipe, recipe_of, versions
from ...tensors import (
    DEFAULT_INPUT_SHAPE,
    declared_input_shape,
    device_of,
    probe_guard,
    probe_input,
)
from ..jsonsafe import json_safe
from .attribution import SITE_TIMING_METHOD, time_blocks
from .counting import CONVENTIONS, CountResult, count_ops
from .deviation import deviation_entry, output_deviation_entry
from .framework_flops import add_framework_flops
from .intervals import LatencyOptions, busy_warning, instability, load_average, ratio_interval
from .latency import LatencyResult, compare_latency, machine_name, measure_latency
from .memory import peak_memory

__all__ = [
    "SCHEMA_VERSION",
    "ModelFacts",
    "Step",
    "adopt_original_weights",
    "count_report",
    "model_facts",
    "profile_models",
]

SCHEMA_VERSION = 2  # 2: intervals of the medians and ratios, why timing stopped, unstable, load average

Step = Callable[[str], AbstractContextManager[Any]]
"""Wraps one long step of the profile (``step("Timing batch size 8")``); the CLI shows it as progress."""

LATENCY_CONVENTION = (
    "{warmup} untimed, then at least {runs} timed forward passes per batch size and model, in eval mode under "
    "torch.inference_mode, with {threads} (intra-op, CPU){interleaved}; passes go on until the 95% interval of the "
    "{precise} is within ±{target}% or {max_time} s per model are spent. CPU passes are timed with "
    "time.perf_counter, CUDA passes with CUDA events, synchronising after each pass. Reported: median with its 95% "
    "interval (bootstrap over passes, scipy.stats), p10 and p90 (linear interpolation) and images/s = batch size / "
    "median. A ratio whose interval is wider than ±5%, or an add-only change measured faster beyond noise, is "
    "flagged unstable."
)
MEMORY_CONVENTION = (
    "the most bytes one forward pass allocates beyond what was allocated before it (activations, workspaces and the "
    "output; not weights or inputs). CPU: the torch profiler's record of PyTorch's allocator (memory that bypasses "
    "it, such as oneDNN scratch space, is not seen); CUDA: torch.cuda.max_memory_allocated."
)
COUNT_CONVENTION = "per image: one forward pass at batch size 1 in eval mode, counted at dispatch level."


@dataclass
class ModelFacts:
    """What is known about a model without running it for real: sizes and counts (per image)."""

    name: str | None
    parameters: int
    trainable: int
    counts: CountResult
    recipe: Recipe | None
    block_parameters: dict[str, int]


def model_facts(model: nn.Module, name: str | None, image_shape: Sequence[int]) -> ModelFacts:
    """Parameters and MACs/FLOPs of one image of ``image_shape`` (C, H, W); milliseconds on the meta device.

    Raises:
        ModelForwardError: the model raises on an image of that shape.
    """
    probe = probe_input((1, *image_shape), model)
    recipe = recipe_of(model)
    named = dict(model.named_modules())
    inserted = [step.module for step in recipe.steps if step.module in named] if recipe else []
    with probe_guard(model, probe.shape, name):
        counts = count_ops(model, (probe,))
    return ModelFacts(
        name=name,
        parameters=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        counts=counts,
        recipe=recipe,
        block_parameters={module: sum(p.numel() for p in named[module].parameters()) for module in inserted},
    )


def count_report(before: ModelFacts, after: ModelFacts | None, *, input_shape: Sequence[int],
                 deviation: tuple[float, float] | None = None, replaced: int = 0,
                 device: str = "cpu") -> dict[str, Any]:
    """The report without timings: what :func:`profile_models` gives with ``runs=0``, from facts taken earlier.

    Surgery uses this to report on a model it patched in place: the facts of the original are taken before the
    surgery; the deviation comes from its verification, which also checked that every original tensor (but the
    ``replaced`` ones a swap removed on purpose) is still there, unchanged.
    """
    facts = [before] if after is None else [before, after]
    report = _skeleton(facts, input_shape, [], device)
    if after is not None:
        report["delta"] = _delta(report["models"], [[], []], add_only=_add_only(facts))
        if deviation is not None:
            report["deviation"] = deviation_entry(input_shape, deviation,
                                                   {"common": None, "differ": 0, "replaced": replaced})
    report["sites"] = _site_rows(facts, None, None)
    return json_safe(report)


def profile_models(model: nn.Module, other: nn.Module | None = None, *, input_shape: Sequence[int] | None = None,
                   batch_sizes: Sequence[int] | None = None, latency: LatencyOptions | None = None,
                   names: tuple[str | None, str | None] = ("model", "other"),
                   share_weights: bool = False, step: Step = lambda message: nullcontext()) -> dict[str, Any]:
    """Profile ``model`` (and ``other`` beside it): sizes, counts, latency, peak memory, inserted blocks, deviation.

    Both models run where their weights are and are not modified (train/eval flags and the thread count are
    restored). With ``other``, the two models' timed passes are interleaved so that machine noise hits both alike.

    Args:
        model: the model (usually the original).
        other: a second model (usually the patched one); deltas are ``other`` minus ``model``.
        input_shape: probe batch N, C, H, W; counts are per image of C, H, W; the deviation is measured on it.
            ``None``: the input size ``model`` declares, else the one ``other`` declares, else 1, 3, 224, 224.
        batch_sizes: batch sizes to time and measure memory at; ``None`` times batch size N only.
        latency: timed passes per batch size and model (a floor; 0 skips latency, memory and block timing),
            warm-up, threads, and the precision to reach within the time allowed per model [default:
            ``LatencyOptions(runs=20, warmup=5)``].
        names: labels of the two models in the report.
        share_weights: first copy into ``model`` the tensors of ``other`` it has under the same key and shape
            (``model`` is modified): for a ``model`` built with random weights, so that the deviation measures the
            surgery rather than two random draws. The report's ``deviation.weights.adopted`` counts them.
        step: wraps each long step (the CLI passes a progress spinner).

    Returns:
        ``schema_version``; ``conventions`` (how each figure is obtained); ``input``; ``environment`` (machine,
        device, threads, versions, cores, load average before and after timing); ``models`` (per model:
        ``parameters``, ``trainable``, ``macs``, ``flops``, ``operators``, ``uncounted_ops``, ``latency`` and
        ``peak_memory`` per batch size, and for a model of a registered framework ``framework_flops``: its own GFLOPs
        count beside ours at its input); with ``other``,
        ``delta`` (with each latency ratio's 95% interval and ``unstable``: why it is not to be trusted, or
        ``None``) and ``deviation``; ``sites``: one row per inserted block of the patched model (where it went,
        parameters, MACs, FLOPs, measured time and share of the model's latency); ``site_timing``.

    Raises:
        ModelForwardError: a model raises on the probe batch (it runs only at another input size, say).
    """
    timing = latency or LatencyOptions(runs=20, warmup=5)
    runs, warmup, threads = timing.runs, timing.warmup, timing.threads
    models = [model] if other is None else [model, other]
    if input_shape is None:
        input_shape = next(filter(None, map(declared_input_shape, models)), DEFAULT_INPUT_SHAPE)
    input_shape = tuple(int(v) for v in input_shape)
    batch_sizes = tuple(int(b) for b in batch_sizes) if batch_sizes else (input_shape[0],)
    adopted = adopt_original_weights(model, other) if share_weights and other is not None else None
    with step("Counting MACs and FLOPs"):
        facts = [model_facts(m, names[i], input_shape[1:]) for i, m in enumerate(models)]
    report = _skeleton(facts, input_shape, batch_sizes if runs > 0 else [], str(device_of(model)))
    add_framework_flops(report, models, names)
    latencies: list[list[LatencyResult]] = [[] for _ in models]
    if runs > 0:
        latencies = _time_models(models, names, report, batch_sizes, timing, step=step)
    else:
        report["notes"].append("Latency, peak memory and the time of each block were not measured (runs=0).")
    if other is not None:
        report["delta"] = _delta(report["models"], latencies, add_only=_add_only(facts))
        report["notes"] += [f"Unstable latency ratio at batch size {entry['batch_size']}: {entry['unstable']}"
                            for entry in report["delta"]["latency"] if entry["unstable"]]
        with step("Measuring the output deviation"):
            report["deviation"] = output_deviation_entry(model, other, input_shape, adopted, names)
        with step("Running both models in reduced precision"):  # issue 25: float16/bfloat16 safety
            checked = precision.compare(model, other, probe_input(input_shape, model), recipe_of(other))
        report["precision"] = [result.to_dict() for result in checked]
        report["notes"] += [precision.summary_line(checked), *precision.warnings_of(checked)] if checked else []
    patched_index = 1 if other is not None and facts[1].recipe is not None else 0
    block_times = None
    if runs > 0 and facts[patched_index].recipe is not None:
        block_times = _time_sites(models[patched_index], facts[patched_index].recipe, input_shape, batch_sizes[0],
                                  runs=runs, warmup=warmup, threads=threads, step=step)
        report["conventions"]["site_latency"] = SITE_TIMING_METHOD
    model_ms = latencies[patched_index][0].median_ms if runs > 0 else None
    report["sites"] = _site_rows(facts, block_times, model_ms)
    if block_times is not None:
        report["site_timing"] = _site_timing_summary(latencies, batch_sizes[0], block_times, patched_index)
    return json_safe(report)


def _time_models(models: list[nn.Module], names: tuple[str | None, str | None], report: dict[str, Any],
                 batch_sizes: Sequence[int], timing: LatencyOptions, *, step: Step) -> list[list[LatencyResult]]:
    """Latency (interleaved between the models) and peak memory per batch size, written into ``report``."""
    latencies: list[list[LatencyResult]] = [[] for _ in models]
    runs, warmup, threads = timing.runs, timing.warmup, timing.threads
    budget = timing.max_time / len(batch_sizes)  # per model, so a pair shares twice the time of one model
    load_before = load_average()
    for batch_size in batch_sizes:
        probe = probe_input((batch_size, *report["input"]["image"]), models[0])
        with step(f"Timing batch size {batch_size}: {warmup} + at least {runs} passes x {len(models)} model(s)"), \
                _guards(models, names, probe.shape):
            if len(models) == 2:
                timed = compare_latency(*models, (probe,), runs=runs, warmup=warmup, threads=threads,
                                        target=timing.target, max_time=2 * budget)
            else:
                timed = (measure_latency(models[0], (probe,), runs=runs, warmup=warmup, threads=threads,
                                         target=timing.target, max_time=budget),)
        with step(f"Measuring peak memory at batch size {batch_size}"):
            for model, row, result, model_latencies in zip(models, report["models"], timed, latencies, strict=True):
                model_latencies.append(result)
                row["latency"].append(_latency_entry(result))
                row["peak_memory"].append({"batch_size": batch_size, "bytes": peak_memory(model, (probe,))})
    load = {"before": load_before, "after": load_average()}
    first = latencies[0][0]
    report["environment"].update(machine=first.machine, device=first.device, threads=first.threads,
                                 load_average=load)
    busy = busy_warning(load["before"], load["after"], report["environment"]["cpu_count"])
    report["notes"] += [busy] if busy else []
    report["conventions"]["latency"] = LATENCY_CONVENTION.format(
        warmup=warmup, runs=runs, threads=f"{first.threads} thread{'s' if first.threads != 1 else ''}",
        target=f"{100 * timing.target:g}",
        max_time=f"{timing.max_time:g}", precise="ratio of the two models" if len(models) == 2 else "median",
        interleaved="; the two models' passes alternate (A, B, A, B, ...)" if len(models) == 2 else "")
    report["conventions"]["memory"] = MEMORY_CONVENTION
    return latencies


def adopt_original_weights(model: nn.Module, patched: nn.Module) -> int:
    """Copy into ``model`` every tensor of ``patched`` stored under one of ``model``'s keys with the same shape.

    For ``profile SPEC --compare PATCHED.pt``: a spec is built with random weights, so without this the output
    deviation would compare two different random draws instead of measuring the surgery. Returns the number of
    tensors copied.
    """
    target = model.state_dict()
    source = {key: value for key, value in patched.state_dict().items()
              if key in target and value.shape == target[key].shape}
    model.load_state_dict(source, strict=False)
    return len(source)


# --- building blocks of the report ------------------------------------------------------------------------------


def _skeleton(facts: list[ModelFacts], input_shape: Sequence[int], batch_sizes: Sequence[int],
              device: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "conventions": {"counts": COUNT_CONVENTION, "flops": CONVENTIONS},
        "input": {"shape": list(input_shape), "image": list(input_shape[1:]), "batch_sizes": list(batch_sizes)},
        "environment": {**versions(), "python": platform.python_version(), "platform": platform.platform(),
                        "machine": machine_name(torch.device(device)), "device": device,
                        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
        "models": [_model_row(f) for f in facts],
        "notes": [],
    }


def _model_row(facts: ModelFacts) -> dict[str, Any]:
    counts = facts.counts
    return {
        "name": facts.name,
        "patched": facts.recipe is not None,
        "parameters": facts.parameters,
        "trainable": facts.trainable,
        "macs": counts.macs,
        "flops": counts.flops,
        "execution": counts.execution,
        "operators": {key: {"calls": op.calls, "macs": op.macs, "flops": op.flops}
                      for key, op in counts.by_operator.items()},
        "uncounted_ops": dict(counts.uncounted),
        "latency": [],
        "peak_memory": [],
    }


def _latency_entry(result: LatencyResult) -> dict[str, Any]:
    keys = ("batch_size", "median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "images_per_s", "runs", "warmup",
            "stopped", "seconds")
    return {**{key: getattr(result, key) for key in keys}, "interval_ms": list(result.interval_ms)}


def _delta(rows: list[dict[str, Any]], latencies: list[list[LatencyResult]], add_only: bool) -> dict[str, Any]:
    """``after - before`` of every figure; each latency ratio with its 95% interval and, if any, why it is unstable."""
    before, after = rows
    delta: dict[str, Any] = {key: after[key] - before[key] for key in ("parameters", "trainable", "macs", "flops")}
    delta["add_only"] = add_only
    delta["latency"] = []
    for b, a, timed_b, timed_a in zip(before["latency"], after["latency"], *latencies, strict=True):
        ratio = a["median_ms"] / b["median_ms"]
        low, high = ratio_interval(timed_b.samples_ms, timed_a.samples_ms)
        delta["latency"].append({"batch_size": a["batch_size"], "ms": a["median_ms"] - b["median_ms"], "ratio": ratio,
                                 "ratio_low": low, "ratio_high": high,
                                 "unstable": instability(ratio, low, high, add_only=add_only,
                                                         rounds=len(timed_a.samples_ms))})
    delta["peak_memory"] = [
        {"batch_size": a["batch_size"], "bytes": a["bytes"] - b["bytes"]}
        for b, a in zip(before["peak_memory"], after["peak_memory"], strict=True)
    ]
    return delta


def _add_only(facts: list[ModelFacts]) -> bool:
    """Whether the second model is the first with blocks inserted and nothing swapped (it only adds work)."""
    original, patched = facts
    recipe = patched.recipe
    return (original.recipe is None and recipe is not None and bool(recipe.steps)
            and all(step.op == "insert" for step in recipe.steps))


def _guards(models: list[nn.Module], names: tuple[str | None, str | None],
            shape: Sequence[int]) -> AbstractContextManager[Any]:
    """A :func:`~surgeon.tensors.probe_guard` for each model: a failure is blamed on the model that fails alone."""
    stack = ExitStack()
    for model, name in zip(models, names):
        stack.enter_context(probe_guard(model, shape, name))
    return stack


def _time_sites(model: nn.Module, recipe: Recipe, input_shape: Sequence[int], batch_size: int, *, runs: int,
                warmup: int, threads: int | None, step: Step) -> dict[str, LatencyResult | None]:
    modules = [s.module for s in recipe.steps]
    probe = probe_input((batch_size, *input_shape[1:]), model)
    with step(f"Timing {len(modules)} inserted block(s) alone at batch size {batch_size}"):
        return time_blocks(model, modules, (probe,), runs=runs, warmup=warmup, threads=threads)


def _site_rows(facts: list[ModelFacts], block_times: dict[str, LatencyResult | None] | None,
               model_ms: float | None) -> list[dict[str, Any]]:
    """One row per inserted block of the patched model (the second model if it is patched, else the first)."""
    patched = facts[1] if len(facts) > 1 and facts[1].recipe is not None else facts[0]
    if patched.recipe is None:
        return []
    counts = patched.counts
    rows = []
    for recipe_step in patched.recipe.steps:
        count = counts.per_module.get(recipe_step.module)
        timed = block_times.get(recipe_step.module) if block_times else None
        rows.append({
            "site": recipe_step.site, "module": recipe_step.module, "block": recipe_step.block, "op": recipe_step.op,
            "position": recipe_step.position, "init": recipe_step.init, "args": dict(recipe_step.args),
            "input_shape": list(count.input_shape[1:]) if count and count.input_shape else None,
            "parameters": patched.block_parameters.get(recipe_step.module),
            "macs": count.macs if count else None,
            "flops": count.flops if count else None,
            "flops_share": count.flops / counts.flops if count and counts.flops else None,
            "uncounted_calls": count.uncounted_calls if count else None,
            "latency_ms": timed.median_ms if timed else None,
            "latency_share": timed.median_ms / model_ms if timed and model_ms else None,
        })
    return rows


def _site_timing_summary(latencies: list[list[LatencyResult]], batch_size: int,
                         block_times: dict[str, LatencyResult | None], patched_index: int) -> dict[str, Any]:
    """The blocks' time alone, summed, beside the patched model's latency and the measured difference."""
    blocks_ms = sum(t.median_ms for t in block_times.values() if t is not None)
    model_ms = latencies[patched_index][0].median_ms
    summary: dict[str, Any] = {"batch_size": batch_size, "blocks_ms": blocks_ms, "model_ms": model_ms,
                               "blocks_share": blocks_ms / model_ms if model_ms else None,
                               "untimed": [name for name, t in block_times.items() if t is None]}
    if len(latencies) == 2 and patched_index == 1:
        summary["measured_delta_ms"] = model_ms - latencies[0][0].median_ms
    return summary

