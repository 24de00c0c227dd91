"""Options shared by several commands, and the parsing of their values."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click
import yaml

from ..checkpoint import LoadedModel
from ..errors import ModelForwardError
from ..pipeline import load_model
from ..tensors import DEFAULT_INPUT_SHAPE
from ._console import err, progress

__all__ = ["LoadOptions", "model_options", "note", "input_shape_option", "parse_shape", "parse_assignments",
           "load_source", "model_errors", "note_detection"]

_SHAPE_EXAMPLE = ",".join(map(str, DEFAULT_INPUT_SHAPE))


def note(message: str) -> None:
    """An informational line on stderr (stdout stays clean for --json)."""
    err.print(message, highlight=False, markup=False, soft_wrap=True)


def parse_shape(value: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like {_SHAPE_EXAMPLE}, got {value!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise click.BadParameter(f"expected an NCHW shape of four positive integers like {_SHAPE_EXAMPLE}, "
                                 f"got {value!r}")
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
                             f"299 for Inception v3), else {_SHAPE_EXAMPLE}].")(func)


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

    def arch_options(self) -> dict[str, Any]:
        """``arch`` and the parsed ``arch_args``, as the library's loaders take them."""
        return {"arch": self.arch, "arch_args": parse_assignments(self.arch_args, "--arch-args")}


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
        loaded = load_model(source, trust_code=load.trust_code, trust_pickle=load.trust_pickle, **load.arch_options())
    note_detection(source, loaded)
    return loaded


def note_detection(source: str, loaded: LoadedModel) -> None:
    """Say which architecture was detected for MODEL, if it was."""
    if loaded.detection is not None:
        note(f"{source}: {loaded.detection.describe()}")
