"""``attn-surgeon profile``: parameters, MACs and latency, before and after."""

from __future__ import annotations

import click

from ..profile import profile_models
from ..profile.render import render_profile
from ._console import print_json, progress
from ._options import input_shape_option, load_source, model_options

EXAMPLES = """\b
Examples:
  attn-surgeon profile torchvision:resnet50
  attn-surgeon profile torchvision:resnet50 --compare resnet50_eca.pt --runs 20
  attn-surgeon profile timm:resnet50 --compare resnet50_eca.pt --json
"""


@click.command("profile", epilog=EXAMPLES)
@click.argument("model")
@click.option("--compare", metavar="MODEL2", help="A second model (e.g. the patched checkpoint) to profile beside it.")
@input_shape_option
@model_options
@click.option("--runs", default=20, show_default=True, type=click.IntRange(1), help="Timed runs per model.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(0), help="Untimed warm-up runs.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads during timing [default: torch's current].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def profile(model: str, compare: str | None, input_shape: tuple[int, ...], arch: str | None,
            arch_args: tuple[str, ...], runs: int, warmup: int, threads: int | None, as_json: bool) -> None:
    """Count parameters and MACs of MODEL and time its forward pass; with --compare, side by side.

    Latency is the median of --runs timed forward passes after --warmup, alternating between the two models
    so machine noise hits both alike.
    """
    base = load_source(model, arch, arch_args)
    other = load_source(compare, arch, arch_args) if compare else None
    with progress("Profiling"):
        report = profile_models(base.module, other.module if other else None, input_shape=input_shape, runs=runs,
                                warmup=warmup, threads=threads, names=(model, compare))
    if as_json:
        print_json(report)
    else:
        render_profile(report)
