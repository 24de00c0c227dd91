"""``attn-surgeon sites``: list every place a block can go."""

from __future__ import annotations

import dataclasses

import click

from ..pipeline import sites as find_sites
from ._console import out, print_json, progress, table
from ._options import LoadOptions, input_shape_option, load_source, model_errors, model_options

EXAMPLES = """\b
Examples:
  attn-surgeon sites torchvision:resnet50
  attn-surgeon sites timm:efficientnet_b0 --kind block
  attn-surgeon sites torchvision:mobilenet_v2 --kind conv --json
"""


@click.command("sites", epilog=EXAMPLES)
@click.argument("model")
@click.option("--kind", type=click.Choice(["block", "conv", "module", "all"]), multiple=True,
              help="Kinds to list (repeatable) [default: block and conv].")
@input_shape_option
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the sites as JSON on stdout.")
def sites(model: str, kind: tuple[str, ...], input_shape: tuple[int, ...] | None, load: LoadOptions,
          as_json: bool) -> None:
    """List the sites of MODEL: residual units (block), convolutions (conv) and other modules with 4-D outputs.

    Use the names, classes, stages and indices shown here in --after, --stage and YAML rules.
    """
    loaded = load_source(model, load)
    with progress("Finding sites"), model_errors(model):
        found = find_sites(loaded.module, input_shape)
    input_shape = found.input_shape
    kinds = {"block", "conv", "module"} if "all" in kind else (set(kind) or {"block", "conv"})
    chosen = [site for site in found.sites if site.kind in kinds]
    if as_json:
        print_json({"model": model, "input_shape": list(input_shape), "untraceable": found.untraceable,
                    "sites": [dataclasses.asdict(site) for site in chosen]})
        return
    view = table(f"{len(chosen)} sites of {model} at input {','.join(map(str, input_shape))}",
                 ("name", "kind", "class", "in → out ch", "size", "stride", "stage", "index", "conv"))
    for site in chosen:
        conv = ""
        if site.kind == "conv":
            conv = f"{site.kernel_size[0]}x{site.kernel_size[1]}" + (f" g{site.groups}" if site.groups > 1 else "") \
                + (f" d{site.dilation[0]}" if site.dilation and site.dilation[0] > 1 else "")
        view.add_row(site.name, site.kind, site.cls, f"{site.in_channels} → {site.out_channels}",
                     f"{site.out_size[0]}x{site.out_size[1]}", str(site.stride),
                     "-" if site.stage is None else str(site.stage), "-" if site.index is None else str(site.index),
                     conv)
    out.print(view)
    if not found.of_kind("block"):
        out.print("No residual units with convolutions found: select sites by class name or name glob instead "
                  "(--after ClassName, --after 'features.*').")
    if found.untraceable:
        out.print(f"{len(found.untraceable)} modules could not be traced (their inner positions are unavailable; "
                  "before/after still work): " + "; ".join(f"{k or '(model)'}: {v}"
                                                           for k, v in list(found.untraceable.items())[:5]))
