"""``attn-surgeon apply``: run a rules file, a preset, or the recipe of a patched checkpoint on a model."""

from __future__ import annotations

from pathlib import Path

import click

from ..blocks import INIT_MODES
from ..io import read_recipe
from ..rules import list_presets
from ._options import LoadOptions, input_shape_option, model_options
from ._surgery import output_options, run_rules_command

EXAMPLES = f"""\b
Examples:
  attn-surgeon apply torchvision:resnet18 se_resnet --dry-run
  attn-surgeon apply torchvision:resnet18 eca_resnet -o resnet18_eca.pt
  attn-surgeon apply torchvision:resnet18 cbam_resnet --init paper --dry-run --json
  attn-surgeon apply ckpt.pt --arch torchvision:resnet18 --recipe resnet18_eca.pt -o ckpt_eca.pt
  attn-surgeon apply ultralytics:yolo11n.yaml yolo_c2f_cbam --dry-run

\b
Presets (rules/*.yaml; the language is described in rules/README.md):
  {", ".join(list_presets())}
"""


@click.command("apply", epilog=EXAMPLES)
@click.argument("model")
@click.argument("rules", required=False)
@click.option("--recipe", type=click.Path(path_type=Path),
              help="Replay the surgery recorded in this patched checkpoint (or transformers model directory) instead "
                   "of RULES (same sites, blocks, options and module names).")
@click.option("--init", type=click.Choice(INIT_MODES),
              help="Override the init of every insert rule: identity (the patched model computes what the original "
                   "did) or paper (each block exactly as published).")
@input_shape_option
@model_options
@output_options
def apply(model: str, rules: str | None, recipe: Path | None, init: str | None, input_shape: tuple[int, ...] | None,
          load: LoadOptions, profile: str, output: Path | None, dry_run: bool, force: bool,
          as_json: bool, fmt: str | None) -> None:
    """Apply RULES (a rules file or the name of a preset) to MODEL, or replay a patched checkpoint's --recipe.

    Rules apply in file order; a rule that matches nothing is an error unless it says allow_empty: true, and every
    error names the file, line, column and rule. Every original weight keeps its key and value. --trust-code also
    allows blocks given as package.module:Class in RULES (importing them runs code).
    """
    if (rules is None) == (recipe is None):
        raise click.UsageError("give RULES (a rules file or a preset name) or --recipe PATCHED.pt, not both"
                               if rules else "missing RULES (a rules file or a preset name) or --recipe PATCHED.pt")
    if recipe is not None and init:
        raise click.UsageError("--init applies to RULES; --recipe replays the recorded init of each block")
    source = read_recipe(recipe, trust_code=load.trust_code) if recipe is not None else rules
    run_rules_command(model, source, load=load, input_shape=input_shape, output=output, init=init,
                      dry_run=dry_run, force=force, as_json=as_json, profile=profile, fmt=fmt)
