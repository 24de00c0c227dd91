"""``attn-surgeon profile``: parameters, MACs/FLOPs, latency, memory and per-block cost, before and after."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ..io import is_spec
from ..profile import (
    REPORT_FORMATS,
    LatencyOptions,
    format_for_path,
    profile_models,
    quiet_profiler_logs,
    render_text,
    write_report,
)
from ..profile.render.terminal import render_profile
from ._console import out, progress
from ._options import (
    LoadOptions,
    input_shape_option,
    load_source,
    model_errors,
    model_options,
    report_format,
    report_options,
    timing_options,
)

EXAMPLES = """\b
Examples:
  attn-surgeon profile torchvision:resnet18 --batch-sizes 1,4
  attn-surgeon profile torchvision:resnet50 --compare resnet50_eca.pt --threads 2
  attn-surgeon profile torchvision:resnet50 --compare resnet50_eca.pt -o resnet50_eca.html
  attn-surgeon profile timm:resnet50 --compare gc_r4.pt --runs 0 --json
  attn-surgeon profile ultralytics:yolov8n.yaml --compare y8_cbam.pt --trust-pickle --runs 0
"""


@click.command("profile", epilog=EXAMPLES)
@click.argument("model")
@click.option("--compare", metavar="MODEL2", help="A second model (e.g. the patched checkpoint) to profile beside it.")
@input_shape_option
@model_options
@timing_options(runs=20, warmup=5, max_time=10.0,
                runs_help="The least number of timed passes per batch size and model; 0 skips latency, memory and "
                          "block timing.")
@report_options(REPORT_FORMATS)
def profile(model: str, compare: str | None, input_shape: tuple[int, ...] | None, batch_sizes: tuple[int, ...] | None,
            load: LoadOptions, device: torch.device, latency: LatencyOptions, fmt: str | None, as_json: bool,
            output: Path | None, force: bool) -> None:
    """Count, time and compare MODEL (and --compare MODEL2): parameters, MACs and FLOPs per image, latency and
    peak memory per batch size, the cost of each inserted block, and the output deviation.

    Timed passes of the two models alternate so that machine noise hits both alike, and go on until the latency
    ratio's 95% interval is within ±2% or --max-time is spent; a ratio that stays imprecise is flagged unstable.
    A MODEL given as a spec has random weights; when MODEL2 was patched from it, MODEL takes MODEL2's original
    weights first, so that the output deviation measures the surgery.
    """
    fmt = report_format(fmt, as_json, output, force, format_for_path)
    quiet_profiler_logs()
    base = load_source(model, load)
    other = load_source(compare, load) if compare else None
    share = bool(other and is_spec(model) and other.recipe is not None and other.recipe.base == base.spec)
    base.module.to(device)
    if other is not None:
        other.module.to(device)
    with model_errors(input_shape=input_shape):  # each model is named by its own argument already
        report = profile_models(base.module, other.module if other else None, input_shape=input_shape,
                                batch_sizes=batch_sizes, latency=latency, names=(model, compare),
                                share_weights=share, step=progress)
    if output is not None:
        write_report(report, output, fmt, force=force)
        out.print(f"Wrote {output}", highlight=False)
    elif fmt == "table":  # fitted to a terminal; at its natural width in a pipe (see _console)
        out.print(render_profile(report))
    else:
        click.echo(render_text(report, fmt), nl=False)
