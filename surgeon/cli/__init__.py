"""The ``attn-surgeon`` command: a thin layer over the library; each command lives in its own module."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.markup import escape

from .._version import __version__
from ..errors import SurgeonError
from ._console import err

__all__ = ["main", "cli"]


class _Group(click.Group):
    """Turns library errors into one line on stderr and exit code 1 (a traceback only with ``--debug``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SurgeonError as exc:
            if ctx.meta.get("surgeon.debug"):
                raise
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="attn-surgeon")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Insert attention blocks into existing PyTorch models, keeping every original weight.

    MODEL is a spec such as torchvision:resnet50, timm:resnet50d, ultralytics:yolov8n.yaml or
    transformers:ResNetForImageClassification (random weights, nothing downloaded), a checkpoint file (with --arch
    SPEC when it holds only weights; an Ultralytics .pt with --trust-pickle), or a save_pretrained directory.

    \b
    Examples:
      attn-surgeon sites torchvision:resnet50
      attn-surgeon insert torchvision:resnet50 --block eca --after bottleneck -o resnet50_eca.pt
      attn-surgeon profile torchvision:resnet50 --compare resnet50_eca.pt
      attn-surgeon compare torchvision:resnet50 --blocks se,eca,cbam --baseline torchvision:resnet101
      attn-surgeon ablate torchvision:resnet18 --blocks se,eca --seeds 5 --trainer my_repo.train:fit -o exp
    """
    ctx.meta["surgeon.debug"] = debug


def _register() -> None:
    from .ablate import ablate
    from .apply import apply
    from .blocks import blocks
    from .compare import compare
    from .export import export
    from .insert import insert
    from .profile import profile
    from .sites import sites
    from .swap import swap

    for command in (insert, swap, apply, sites, profile, compare, ablate, blocks, export):
        cli.add_command(command)


_register()


def main() -> None:
    # `--arch package.module:factory` names the user's own model code, usually a package of the repository the
    # command runs in. `python -m` puts the working directory on sys.path; a console script does not, so do it here
    # (as uvicorn and flask do), or `attn-surgeon insert ckpt.pt --arch models.resnet:build` fails from the repo root.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    cli(prog_name="attn-surgeon")
