"""``attn-surgeon insert``: put an attention block at every selected site."""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline import insert_rule
from ._options import LoadOptions, input_shape_option, model_options, parse_assignments, placement_options
from ._surgery import output_options, run_rules_command

EXAMPLES = """\b
Examples:
  attn-surgeon insert torchvision:resnet50 --block eca --after bottleneck -o resnet50_eca.pt
  attn-surgeon insert torchvision:resnet50 --block se --init paper -o se_resnet50.pt
  attn-surgeon insert torchvision:mobilenet_v2 --block ca --after conv3x3 --stride 1 --dry-run
  attn-surgeon insert timm:resnet50 --block gc --stage 2-4 --set rd_ratio=0.25 -o gc_r4.pt
  attn-surgeon insert ckpt.pt --arch torchvision:resnet18 --block cbam --after 'layer3.*'
  attn-surgeon insert ultralytics:yolov8n.yaml --block cbam --after C2f -o y8_cbam.pt
"""


@click.command("insert", epilog=EXAMPLES)
@click.argument("model")
@click.option("-b", "--block", required=True,
              help="Block to insert (see `attn-surgeon blocks`), or package.module:Class.")
@placement_options
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Block option (repeatable), e.g. --set k_size=3 --set rd_ratio=0.25.")
@input_shape_option
@model_options
@output_options
def insert(model: str, block: str, site: str, position: str | None, settings: tuple[str, ...], init: str,
           stage: str | None, stride: int | None, input_shape: tuple[int, ...] | None, load: LoadOptions,
           output: Path | None, dry_run: bool, force: bool, profile: str,
           as_json: bool, fmt: str | None) -> None:
    """Insert an attention block at every site of MODEL that --after selects.

    Every original weight keeps its key and value; the new blocks add keys under their own names. The output
    loads with torch.load(weights_only=True) and rebuilds with surgeon.load().
    """
    rule = insert_rule(block, site, position, init=init, args=parse_assignments(settings, "--set"), stage=stage,
                       stride=stride, name=f"--block {block} --after {site}")
    run_rules_command(model, [rule], load=load, input_shape=input_shape, output=output, dry_run=dry_run,
                      force=force, as_json=as_json, profile=profile, fmt=fmt)
