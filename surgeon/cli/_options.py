"""Options shared by several commands, and the parsing of their values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from ..checkpoint import LoadedModel, is_spec, load_model
from ._console import err, progress

__all__ = ["model_options", "note", "input_shape_option", "parse_shape", "parse_assignments", "load_source",
           "default_output"]


def note(message: str) -> None:
    """An informational line on stderr (stdout stays clean for --json)."""
    err.print(message, highlight=False, markup=False, soft_wrap=True)


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
    """``--arch``, ``--arch-args``, ``--trust-pickle`` and ``--trust-code``; the last two reach the command's
    function as ``trust_pickle`` and ``trust_code`` only if it names them (else :func:`load_source` reads them from
    the click context)."""
    func = click.option("--trust-code", is_flag=True, expose_value=False, is_eager=False,
                        callback=_remember("trust_code"),
                        help="Allow a checkpoint whose recipe builds a package.module:factory architecture "
                             "(imports and runs that factory).")(func)
    func = click.option("--trust-pickle", is_flag=True, expose_value=False, callback=_remember("trust_pickle"),
                        help="Allow a file that holds pickled code (torch.save(model)); loading it runs that code, "
                             "so only for files you trust.")(func)
    func = click.option("--arch-args", "arch_args", multiple=True, metavar="KEY=VALUE",
                        help="Keyword argument for the architecture's factory (repeatable), e.g. num_classes=10.")(func)
    func = click.option("--arch", metavar="SPEC",
                        help="Architecture of a checkpoint that holds only weights: torchvision:NAME, timm:NAME or "
                             "package.module:factory [default: detected from the keys and shapes].")(func)
    return func


def _remember(name: str) -> Callable[[click.Context, click.Parameter, bool], bool]:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        ctx.meta[f"surgeon.{name}"] = value
        return value

    return callback


def load_source(source: str, arch: str | None, arch_args: tuple[str, ...], *, trust_pickle: bool | None = None,
                trust_code: bool | None = None) -> LoadedModel:
    """Load MODEL; ``--trust-pickle``/``--trust-code`` are read from the current command line unless given."""
    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    trust_pickle = meta.get("surgeon.trust_pickle", False) if trust_pickle is None else trust_pickle
    trust_code = meta.get("surgeon.trust_code", False) if trust_code is None else trust_code
    with progress(f"Loading {source}"):
        loaded = load_model(source, arch=arch, arch_args=parse_assignments(arch_args, "--arch-args"),
                            trust_code=trust_code, trust_pickle=trust_pickle)
    if loaded.detection is not None:
        note(f"{source}: {loaded.detection.describe()}")
    return loaded


def default_output(source: str, suffix: str) -> Path:
    """``resnet50_eca.pt`` for ``torchvision:resnet50``; ``ckpt_eca.pt`` beside ``ckpt.pt``."""
    if is_spec(source):
        return Path(f"{source.rsplit(':', 1)[-1]}_{suffix}.pt")
    path = Path(source)
    return path.with_name(f"{path.stem}_{suffix}{path.suffix or '.pt'}")
