"""``attn-surgeon blocks``: what can be inserted or swapped in."""

from __future__ import annotations

import inspect

import click
import torch

from ..blocks import BlockInfo, block_arguments, create_block, get_block, list_blocks
from ._console import out, print_json, table

EXAMPLES = """\b
Examples:
  attn-surgeon blocks
  attn-surgeon blocks eca
  attn-surgeon blocks --json
"""

_CHANNELS = 256


def _params_at(info: BlockInfo, init: str) -> int | None:
    args = (_CHANNELS,) if info.kind == "insert" else (_CHANNELS, _CHANNELS, 1)
    try:
        with torch.device("meta"):
            block = create_block(info, *args, init=init)
    except Exception:  # a block that cannot build at the reference width just shows no count
        return None
    return sum(p.numel() for p in block.parameters())


def _defaults(info: BlockInfo) -> dict[str, object]:
    return {name: (None if p.default is inspect.Parameter.empty else p.default)
            for name, p in block_arguments(info).items()}


def _describe(info: BlockInfo) -> dict[str, object]:
    return {"name": info.name, "aliases": list(info.aliases), "kind": info.kind, "paper": info.paper,
            "summary": info.summary, "options": {k: repr(v) for k, v in _defaults(info).items()},
            f"params_at_{_CHANNELS}": _params_at(info, "paper"),
            f"params_at_{_CHANNELS}_identity": _params_at(info, "identity") if info.supports_init else None}


@click.command("blocks", epilog=EXAMPLES)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
def blocks(name: str | None, as_json: bool) -> None:
    """List the blocks, or show one block's options in detail.

    Parameter counts are for 256 channels (swaps: 256 → 256, stride 1) with init=paper.
    """
    if name:
        info = get_block(name)
        data = _describe(info)
        if as_json:
            print_json(data)
            return
        out.print(f"[bold]{info.name}[/bold] ({info.kind}) — {info.paper}")
        if info.aliases:
            out.print(f"aliases: {', '.join(info.aliases)}")
        out.print(inspect.getdoc(info.factory) or "")
        module_doc = inspect.getdoc(inspect.getmodule(info.factory))
        if module_doc:
            out.print("\n" + module_doc)
        return
    infos = list_blocks()
    if as_json:
        print_json([_describe(info) for info in infos])
        return
    view = table(f"{len(infos)} blocks (parameters at {_CHANNELS} channels, init=paper)",
                 ("name", "kind", "paper", "params", "options"), right=("params",))
    for info in infos:
        params = _params_at(info, "paper")
        options = ", ".join(f"{k}={v!r}" for k, v in _defaults(info).items() if k != "init")
        view.add_row(info.name + (f" ({', '.join(info.aliases)})" if info.aliases else ""), info.kind, info.paper,
                     "-" if params is None else f"{params:,}", options)
    out.print(view)
