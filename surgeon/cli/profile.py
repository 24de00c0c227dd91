"""``attn-surgeon profile``: parameters, MACs/FLOPs, latency, memory and per-block cost, before and after."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ..arch import is_spec
from ..errors import OutputExistsError
from ..profile import profile_models
from ..profile.latency import quiet_profiler_logs
from ..profile.output import FORMATS, format_for_path, render_text, write_report
from ..profile.render import render_profile
from ._console import out, progress
from ._options import LoadOptions, input_shape_option, load_source, model_errors, model_options

EXAMPLES = """\b
Examples:
  attn-surgeon profile torchvision:resnet18 --batch-sizes 1,4
  attn-surgeon profile torchvision:resnet50 --compare resnet50_eca.pt --threads 2
  attn-surgeon profile torchvision:resnet50 --compare resnet50_eca.pt -o resnet50_eca.html
  attn-surgeon profile timm:resnet50 --compare gc_r4.pt --runs 0 --json
"""


def _batch_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated batch sizes like 1,8,32, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"batch sizes must be positive integers, got {value!r}")
    return tuple(dict.fromkeys(sizes))


def _device(ctx: click.Context, param: click.Parameter, value: str) -> torch.device:
    try:
        device = torch.device(value)
    except RuntimeError:
        raise click.BadParameter(f"expected cpu, cuda or cuda:N, got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine (torch.cuda.is_available() is False)")
    if device.type not in ("cpu", "cuda"):
        raise click.BadParameter(f"expected cpu, cuda or cuda:N, got {value!r}")
    return device


@click.command("profile", epilog=EXAMPLES)
@click.argument("model")
@click.option("--compare", metavar="MODEL2", help="A second model (e.g. the patched checkpoint) to profile beside it.")
@input_shape_option
@click.option("--batch-sizes", callback=_batch_sizes, metavar="B1,B2,...",
              help="Batch sizes to time and measure memory at, e.g. 1,8,32 [default: N of --input-shape].")
@model_options
@click.option("--device", default="cpu", show_default=True, callback=_device, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1), help="Intra-op CPU threads while timing [default: torch's current].")
@click.option("--runs", default=20, show_default=True, type=click.IntRange(0),
              help="Timed passes per batch size and model; 0 skips latency, memory and block timing.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(0), help="Untimed passes first.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="table (terminal), json, md or html [default: from -o's extension, else table].")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to this file instead of stdout (.json, .md, .html or .txt).")
@click.option("--force", is_flag=True, help="Overwrite an existing report file.")
def profile(model: str, compare: str | None, input_shape: tuple[int, ...] | None, batch_sizes: tuple[int, ...] | None,
            load: LoadOptions, device: torch.device, threads: int | None, runs: int,
            warmup: int, fmt: str | None, as_json: bool, output: Path | None, force: bool) -> None:
    """Count, time and compare MODEL (and --compare MODEL2): parameters, MACs and FLOPs per image, latency and
    peak memory per batch size, the cost of each inserted block, and the output deviation.

    Timed passes of the two models alternate so that machine noise hits both alike. A MODEL given as a spec has
    random weights; when MODEL2 was patched from it, MODEL takes MODEL2's original weights first, so that the
    output deviation measures the surgery.
    """
    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json contradicts --format {fmt}")
    fmt = "json" if as_json else fmt or (format_for_path(output) if output else None) or "table"
    if output is not None and output.exists() and not force:  # before minutes of timing, not after
        raise OutputExistsError(f"{output}: exists; pass --force to overwrite it")
    quiet_profiler_logs()
    base = load_source(model, load)
    other = load_source(compare, load) if compare else None
    share = bool(other and is_spec(model) and other.recipe is not None and other.recipe.base == base.spec)
    base.module.to(device)
    if other is not None:
        other.module.to(device)
    with model_errors(input_shape=input_shape):  # each model is named by its own argument already
        report = profile_models(base.module, other.module if other else None, input_shape=input_shape,
                                batch_sizes=batch_sizes, runs=runs, warmup=warmup, threads=threads,
                                names=(model, compare), share_weights=share, step=progress)
    if output is not None:
        write_report(report, output, fmt, force=force)
        out.print(f"Wrote {output}", highlight=False)
    elif fmt == "table":  # fitted to a terminal; at its natural width in a pipe (see _console)
        out.print(render_profile(report))
    else:
        click.echo(render_text(report, fmt), nl=False)
