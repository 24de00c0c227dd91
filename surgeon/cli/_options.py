"""Options shared by several commands, and the parsing of their values."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from ..checkpoint import LoadedModel, is_spec, load_model
from ..frameworks import writes_directory
from ..errors import ModelForwardError
from ._console import err, progress

__all__ = ["LoadOptions", "model_options", "note", "input_shape_option", "parse_shape", "parse_assignments",
           "load_source", "default_output", "model_errors"]


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


def _shape_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    return None if value is None else parse_shape(value)


def input_shape_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--input-shape N,C,H,W``, passed as a tuple, or ``None`` when not given (the model's declared size)."""
    return click.option("--input-shape", callback=_shape_callback, metavar="N,C,H,W",
                        help="Probe batch shape used to measure sites and the output deviation [default: the input "
                             "size the model declares (timm's pretrained config, an Ultralytics model's imgsz, "
                             "299 for Inception v3), else 1,3,224,224].")(func)


@contextmanager
def model_errors(source: str | None = None, input_shape: tuple[int, ...] | None = None) -> Iterator[None]:
    """A model that refuses its probe batch is named as on the command line (``source``, ``--input-shape``), with the
    option to pass."""
    try:
        yield
    except ModelForwardError as exc:
        raise exc.on_command_line(source, input_shape) from exc.__cause__


@dataclass(frozen=True)
class LoadOptions:
    """How to load MODEL: ``--arch``, ``--arch-args``, ``--trust-pickle`` and ``--trust-code``."""

    arch: str | None = None
    arch_args: tuple[str, ...] = ()
    trust_pickle: bool = False
    trust_code: bool = False


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--arch``, ``--arch-args``, ``--trust-pickle`` and ``--trust-code``; the command's function receives
    them together as ``load`` (a :class:`LoadOptions`)."""

    @functools.wraps(func)
    def command(*args: Any, arch: str | None, arch_args: tuple[str, ...], trust_pickle: bool, trust_code: bool,
                **kwargs: Any) -> Any:
        return func(*args, load=LoadOptions(arch, arch_args, trust_pickle, trust_code), **kwargs)

    command = click.option("--trust-code", is_flag=True,
                           help="Allow a checkpoint whose recipe builds a package.module:factory architecture "
                                "(imports and runs that factory).")(command)
    command = click.option("--trust-pickle", is_flag=True,
                           help="Allow a file that holds pickled code (torch.save(model)); loading it runs that "
                                "code, so only for files you trust.")(command)
    command = click.option("--arch-args", "arch_args", multiple=True, metavar="KEY=VALUE",
                           help="Keyword argument for the architecture's factory (repeatable), e.g. "
                                "num_classes=10.")(command)
    command = click.option("--arch", metavar="SPEC",
                           help="Architecture of a checkpoint that holds only weights: torchvision:NAME, timm:NAME "
                                "or package.module:factory [default: detected from the keys and shapes].")(command)
    return command


def load_source(source: str, load: LoadOptions) -> LoadedModel:
    """Load MODEL as the command line says, showing progress and what architecture detection found."""
    with progress(f"Loading {source}"):
        loaded = load_model(source, arch=load.arch, arch_args=parse_assignments(load.arch_args, "--arch-args"),
                            trust_code=load.trust_code, trust_pickle=load.trust_pickle)
    if loaded.detection is not None:
        note(f"{source}: {loaded.detection.describe()}")
    return loaded


def default_output(source: str, suffix: str) -> Path:
    """``resnet50_eca.pt`` for ``torchvision:resnet50``; ``ckpt_eca.pt`` beside ``ckpt.pt``; a directory (``DIR_eca``
    beside a model directory ``DIR``, ``ResNetForImageClassification_eca`` for a transformers spec) for a framework
    whose models are saved as directories."""
    if is_spec(source):
        return Path(f"{source.rsplit(':', 1)[-1]}_{suffix}" + ("" if writes_directory(source) else ".pt"))
    path = Path(source)
    if writes_directory(source):
        return path.with_name(f"{path.name}_{suffix}")
    return path.with_name(f"{path.stem}_{suffix}{path.suffix or '.pt'}")
