"""``attn-surgeon swap``: replace convolution units by SCConv, SK or another swap block, or a model's own attention
modules by a block."""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline import swap_rule
from ._options import LoadOptions, input_shape_option, model_options, parse_assignments
from ._surgery import output_options, run_rules_command

EXAMPLES = """\b
Examples:
  attn-surgeon swap torchvision:resnet50 --conv 3x3 --stride 1 --with scconv -o resnet50_sc.pt
  attn-surgeon swap torchvision:resnet50 --conv 3x3 --with sk --set groups=1 --dry-run
  attn-surgeon swap torchvision:mobilenet_v3_small --module SqueezeExcitation --with mlca --dry-run
"""


@click.command("swap", epilog=EXAMPLES)
@click.argument("model")
@click.option("--with", "block", required=True,
              help="Swap block (see `attn-surgeon blocks`), e.g. scconv or sk; with --module, an insert block.")
@click.option("--conv", "conv", default="3x3", show_default=True,
              help="Convolutions to replace: a kernel (3x3), or a name glob / re:REGEX of conv modules.")
@click.option("--module", "module", metavar="CLASS",
              help="Replace these modules instead (a class such as SqueezeExcitation, SEModule, EcaModule, CBAM, "
                   "or a name glob / re:REGEX) by the insert block --with; --conv is ignored.")
@click.option("--stride", type=int, help="Only convolutions with this stride.")
@click.option("--stage", help="Only convolutions inside residual units of these stages, e.g. 3,4 or 2-4.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Swap block option (repeatable).")
@input_shape_option
@model_options
@output_options
def swap(model: str, block: str, conv: str, module: str | None, stride: int | None, stage: str | None,
         settings: tuple[str, ...], input_shape: tuple[int, ...] | None, load: LoadOptions, output: Path | None,
         dry_run: bool, force: bool, profile: str, as_json: bool, fmt: str | None) -> None:
    """Replace each selected conv unit (conv → norm → activation) of MODEL with a swap block, or each module of
    class --module (the model's own SE, ECA or CBAM) with an insert block.

    The new operator keeps the unit's channels and stride and inherits the old conv's weights where shapes
    allow; a block replacing a module is built for that module's channels. The swapped units' and replaced
    modules' keys are removed (the documented exception, listed in the recipe); every other key is preserved, and
    the report states the measured output deviation.
    """
    what = f"--module {module}" if module is not None else f"--conv {conv}"
    rule = swap_rule(block, conv, module=module, args=parse_assignments(settings, "--set"), stage=stage,
                     stride=stride, name=f"--with {block} {what}")
    run_rules_command(model, [rule], load=load, input_shape=input_shape, output=output, dry_run=dry_run,
                      force=force, as_json=as_json, profile=profile, fmt=fmt)
