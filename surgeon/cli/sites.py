"""``attn-surgeon sites``: list every place a block can go."""

from __future__ import annotations

import dataclasses

import click

from ..blocks import get_block, validate_block_args
from ..io.registry import model_places
from ..pipeline import sites as find_sites
from ._console import out, print_json, progress, table
from ._options import LoadOptions, input_shape_option, load_source, model_errors, model_options, parse_assignments

EXAMPLES = """\b
Examples:
  attn-surgeon sites torchvision:resnet50
  attn-surgeon sites timm:efficientnet_b0 --kind block
  attn-surgeon sites torchvision:mobilenet_v2 --kind conv --json
  attn-surgeon sites ultralytics:yolo11n.yaml --kind block
  attn-surgeon sites torchvision:resnet18 --block sa --set groups=32
"""


@click.command("sites", epilog=EXAMPLES)
@click.argument("model")
@click.option("--kind", type=click.Choice(["block", "conv", "module", "all"]), multiple=True,
              help="Kinds to list (repeatable) [default: block and conv].")
@input_shape_option
@model_options
@click.option("-b", "--block", help="Mark which sites this insert block fits (after the site; its options: --set).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Option of --block (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the sites as JSON on stdout.")
def sites(model: str, kind: tuple[str, ...], input_shape: tuple[int, ...] | None, load: LoadOptions,
          block: str | None, settings: tuple[str, ...], as_json: bool) -> None:
    """List the sites of MODEL: residual units (block), convolutions (conv) and other modules with 4-D outputs.

    Use the names, classes, stages and indices shown here in --after, --stage and YAML rules. For an Ultralytics
    YOLO, the places people put attention (backbone C2f/C3k2, SPPF, the P3/P4/P5 head inputs) are named in a
    "place" column and always listed. With --block, a column says whether that block fits each site (its output
    channels and size), or why not and which option would.
    """
    info = get_block(block) if block else None
    args = parse_assignments(settings, "--set")
    if info is not None:
        validate_block_args(info, args)
    loaded = load_source(model, load)
    with progress("Finding sites"), model_errors(model):
        found = find_sites(loaded.module, input_shape)
    input_shape = found.input_shape
    kinds = {"block", "conv", "module"} if "all" in kind else (set(kind) or {"block", "conv"})
    places = model_places(loaded.module)
    chosen = [site for site in found.sites if site.kind in kinds or site.name in places]
    fits = {}
    if info is not None:
        for site in chosen:
            misfit = info.misfit(site.out_channels, site.out_size, args)
            fits[site.name] = "yes" if misfit is None else f"no: {misfit.reason}; {misfit.hint()}"
    if as_json:
        print_json({"model": model, "input_shape": list(input_shape), "untraceable": found.untraceable,
                    "sites": [{**dataclasses.asdict(site), **({"place": places.get(site.name)} if places else {}),
                               **({"fits": fits[site.name]} if fits else {})}
                              for site in chosen]})
        return
    columns = ("name", "kind", "class", "in → out ch", "size", "stride", "stage", "index", "conv")
    view = table(f"{len(chosen)} sites of {model} at input {','.join(map(str, input_shape))}",
                 columns + (("place",) if places else ()) + ((f"fits {info.name}",) if info is not None else ()))
    for site in chosen:
        conv = ""
        if site.kind == "conv":
            conv = f"{site.kernel_size[0]}x{site.kernel_size[1]}" + (f" g{site.groups}" if site.groups > 1 else "") \
                + (f" d{site.dilation[0]}" if site.dilation and site.dilation[0] > 1 else "")
        view.add_row(site.name, site.kind, site.cls, f"{site.in_channels} → {site.out_channels}",
                     f"{site.out_size[0]}x{site.out_size[1]}", str(site.stride),
                     "-" if site.stage is None else str(site.stage), "-" if site.index is None else str(site.index),
                     conv, *((places.get(site.name, ""),) if places else ()), *([fits[site.name]] if fits else []))
    out.print(view)
    if not found.of_kind("block"):
        out.print("No residual units with convolutions found: select sites by class name or name glob instead "
                  "(--after ClassName, --after 'features.*').")
    if found.untraceable:
        out.print(f"{len(found.untraceable)} modules could not be traced (their inner positions are unavailable; "
                  "before/after still work): " + "; ".join(f"{k or '(model)'}: {v}"
                                                           for k, v in list(found.untraceable.items())[:5]))
