"""``attn-surgeon compare``: every candidate block on the user's model, and bigger models beside them, in one table."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ..pipeline import EXPORT_SCOPES, CompareOptions
from ..pipeline import compare as compare_models
from ..profile import REPORT_FORMATS, LatencyOptions, format_for_path, render_text, write_report
from ..profile.comparison import SORT_KEYS
from ..profile.render.compare_table import render_compare
from ._console import out, progress_bar
from ._options import (
    LoadOptions,
    input_shape_option,
    load_source,
    model_errors,
    model_options,
    placement_options,
    report_format,
    report_options,
    timing_options,
)

EXAMPLES = """\b
Examples:
  attn-surgeon compare torchvision:resnet50
  attn-surgeon compare torchvision:resnet50 --blocks se,eca,cbam,gc --baseline torchvision:resnet101
  attn-surgeon compare torchvision:resnet50 --blocks eca,ca --stage 3-4 --sort params --format md
  attn-surgeon compare torchvision:resnet50 --rules se_resnet --rules gc_resnet --blocks none -o compare.html
  attn-surgeon compare timm:resnet50d --blocks se,cbam --batch-sizes 1,8 --exports model --json
"""


def _blocks(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["none"]:
        return []
    if not names:
        raise click.BadParameter("expected block names like se,eca,cbam (or none)")
    return list(dict.fromkeys(names))


@click.command("compare", epilog=EXAMPLES)
@click.argument("model")
@click.option("--blocks", callback=_blocks, metavar="B1,B2,...",
              help="Blocks to compare (see `attn-surgeon blocks`), or none [default: every insert block in the "
                   "registry; none when only --rules are given]. One that cannot go at these sites is a row with "
                   "the reason.")
@placement_options
@click.option("--rules", "rules", multiple=True, metavar="FILE",
              help="A rules file or preset to compare as one candidate (repeatable), e.g. --rules se_resnet.")
@click.option("--baseline", "baselines", multiple=True, metavar="SPEC",
              help="A reference model measured the same way (repeatable), e.g. --baseline torchvision:resnet101.")
@input_shape_option
@model_options
@timing_options(runs=5, warmup=1, max_time=10.0,
                runs_help="The least number of timed rounds per batch size, for the eval forward and for a training "
                          "step; a round is one pass of MODEL and one of the candidate. 0 skips latency and memory.")
@click.option("--exports", type=click.Choice(EXPORT_SCOPES), default="blocks", show_default=True,
              help="Exportability (ONNX in onnxruntime, TorchScript, torch.export, torch.compile graph breaks): of "
                   "each distinct inserted block alone (blocks, fast), of the whole patched model (model), or off.")
@click.option("--sort", type=click.Choice(tuple(SORT_KEYS)), default="latency", show_default=True,
              help="Order of the rows: " + "; ".join(f"{key}: {text}" for key, text in SORT_KEYS.items()) + ".")
@report_options(REPORT_FORMATS)
def compare(model: str, blocks: list[str] | None, site: str, position: str | None, init: str, stage: str | None,
            stride: int | None, rules: tuple[str, ...], baselines: tuple[str, ...],
            input_shape: tuple[int, ...] | None, load: LoadOptions, batch_sizes: tuple[int, ...] | None,
            device: torch.device, latency: LatencyOptions, exports: str, sort: str, fmt: str | None, as_json: bool,
            output: Path | None, force: bool) -> None:
    """Patch MODEL with each candidate block in turn and measure every one against MODEL in one table.

    Per candidate: parameters and FLOPs added, latency as a ratio to MODEL from alternating rounds (eval forward
    and one training step), peak memory added, the output deviation at insertion, and whether the blocks export to
    ONNX, TorchScript and torch.export and compile without graph breaks. --baseline adds whole models (the next
    size up) to the same table, to answer "is a block better than a bigger model?".

    Every ratio comes with its 95% interval: rounds go on until it is within ±2% or --max-time is spent per
    candidate. A ratio whose interval stays wider than ±5%, or a block (which only adds work) measured faster than
    MODEL beyond noise, is flagged unstable with what to do. Each candidate is patched from one copy of MODEL in
    memory and freed before the next.
    """
    fmt = report_format(fmt, as_json, output, force, format_for_path)
    loaded = load_source(model, load)
    loaded.module.to(device)
    with model_errors(model, input_shape), progress_bar(f"Comparing on {model}") as advance:
        options = CompareOptions(blocks=blocks, after=site, position=position, stage=stage, stride=stride,
                                 init=init, rules=rules, baselines=baselines, input_shape=input_shape,
                                 batch_sizes=batch_sizes, latency=latency, exports=exports, sort=sort, name=model,
                                 trust_code=load.trust_code)
        comparison = compare_models(loaded.module, options, progress=advance)
    if output is not None:
        write_report(comparison, output, fmt, force=force)
        out.print(f"Wrote {output}", highlight=False)
    elif fmt == "table":
        out.print(render_compare(comparison))
    else:
        click.echo(render_text(comparison, fmt), nl=False)
