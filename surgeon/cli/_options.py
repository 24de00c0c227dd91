"""Options shared by several commands, and the parsing of their values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from ..checkpoint import LoadedModel, is_spec, load_model
from ._console import progress

__all__ = ["model_options", "input_shape_option", "parse_shape", "parse_assignments", "load_source",
           "default_output"]


def parse_shape(value: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,3,224,224, got {value!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise click.BadParameter(f"expected an NCHW shape of four positive integers like 1,3,224,224, got {value!r}")
    return shape


def parse_assignments(values: tuple[str, ...], option: str) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars/lists (``3``, ``0.5``, ``true``, ``[3, 5]``)."""
    result: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint=option)
        try:
            result[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            result[key.strip()] = raw
    return result


def _shape_callback(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    return parse_shape(value)


def input_shape_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--input-shape", default="1,3,224,224", show_default=True, callback=_shape_callback,
                        help="Probe batch shape N,C,H,W used to measure sites and the output deviation.")(func)


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--arch-args", "arch_args", multiple=True, metavar="KEY=VALUE",
                        help="Keyword argument for the architecture's factory (repeatable), e.g. num_classes=10.")(func)
    func = click.option("--arch", metavar="SPEC",
                        help="Architecture of a checkpoint that holds only weights: torchvision:NAME, timm:NAME or "
                             "package.module:factory.")(func)
    return func


def load_source(source: str, arch: str | None, arch_args: tuple[str, ...]) -> LoadedModel:
    with progress(f"Loading {source}"):
        return load_model(source, arch=arch, arch_args=parse_assignments(arch_args, "--arch-args"))


def default_output(source: str, suffix: str) -> Path:
    """``resnet50_eca.pt`` for ``torchvision:resnet50``; ``ckpt_eca.pt`` beside ``ckpt.pt``."""
    if is_spec(source):
        return Path(f"{source.rsplit(':', 1)[-1]}_{suffix}.pt")
    path = Path(source)
    return path.with_name(f"{path.stem}_{suffix}{path.suffix or '.pt'}")
