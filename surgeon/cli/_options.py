"""Options shared by several commands, and the parsing of their values."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import torch
import yaml

from ..blocks import INIT_MODES
from ..errors import ModelForwardError, OutputExistsError
from ..io import LoadedModel, LoadOptions
from ..pipeline import load_model
from ..profile import LatencyOptions
from ..tensors import DEFAULT_INPUT_SHAPE
from ._console import err, progress

__all__ = ["LoadOptions", "model_options", "note", "input_shape_option", "parse_shape", "parse_assignments",
           "load_source", "model_errors", "note_detection", "placement_options", "timing_options", "report_options",
           "report_format"]

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


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--arch``, ``--arch-args``, ``--trust-pickle`` and ``--trust-code``; the command's function receives
    them together as ``load``, the library's :class:`~surgeon.io.LoadOptions`."""

    @functools.wraps(func)
    def command(*args: Any, arch: str | None, arch_args: tuple[str, ...], trust_pickle: bool, trust_code: bool,
                **kwargs: Any) -> Any:
        load = LoadOptions(arch, parse_assignments(arch_args, "--arch-args"), trust_code, trust_pickle)
        return func(*args, load=load, **kwargs)

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
        loaded = load_model(source, load)
    note_detection(source, loaded)
    return loaded


def note_detection(source: str, loaded: LoadedModel) -> None:
    """Say which architecture was detected for MODEL, if it was."""
    if loaded.detection is not None:
        note(f"{source}: {loaded.detection.describe()}")


# --- options of the commands that measure (profile, compare) and of those that place blocks (insert, compare) ----


def _batch_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated batch sizes like 1,8,32, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"batch sizes must be positive integers, got {value!r}")
    return tuple(dict.fromkeys(sizes))


def _device(ctx: click.Context, param: click.Parameter, value: str) -> torch.device:
    try:
        device = torch.device(value)
    except RuntimeError:
        raise click.BadParameter(f"expected cpu, cuda or cuda:N, got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine (torch.cuda.is_available() is False)")
    if device.type not in ("cpu", "cuda"):
        raise click.BadParameter(f"expected cpu, cuda or cuda:N, got {value!r}")
    return device


def timing_options(*, runs: int, warmup: int, max_time: float,
                   runs_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--batch-sizes``, ``--device``, ``--threads``, ``--runs``, ``--warmup`` and ``--max-time``, as ``profile``
    and ``compare`` share them (same names and meaning; each command chooses its defaults). The command's function
    receives ``batch_sizes``, ``device`` and, built once, ``latency`` (a
    :class:`~surgeon.profile.LatencyOptions`)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def command(*args: Any, threads: int | None, runs: int, warmup: int, max_time: float, **kwargs: Any) -> Any:
            return func(*args, latency=LatencyOptions(runs=runs, warmup=warmup, threads=threads, max_time=max_time),
                        **kwargs)

        for option in reversed((
            click.option("--batch-sizes", callback=_batch_sizes, metavar="B1,B2,...",
                         help="Batch sizes to time and measure memory at, e.g. 1,8,32 [default: N of --input-shape]."),
            click.option("--device", default="cpu", show_default=True, callback=_device, help="cpu, cuda or cuda:N."),
            click.option("--threads", type=click.IntRange(1),
                         help="Intra-op CPU threads while timing [default: torch's current]."),
            click.option("--runs", default=runs, show_default=True, type=click.IntRange(0), help=runs_help),
            click.option("--warmup", default=warmup, show_default=True, type=click.IntRange(0),
                         help="Untimed passes first."),
            click.option("--max-time", default=max_time, show_default=True, type=click.FloatRange(0), metavar="SEC",
                         help="Seconds of timing allowed per candidate (per model for a profile): rounds go on past "
                              "--runs until each ratio's 95% interval is within ±2%, or this time is spent; 0 times "
                              "exactly --runs rounds."),
        )):
            command = option(command)
        return command

    return decorate


def report_options(formats: Sequence[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format``, ``--json``, ``-o``/``--output`` and ``--force`` of a command that writes a report; the command
    receives ``fmt``, ``as_json``, ``output`` and ``force`` (see :func:`report_format`)."""
    suffixes = ", ".join(f".{fmt}" for fmt in formats if fmt != "table")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed((
            click.option("--format", "fmt", type=click.Choice(formats),
                         help=f"{', '.join(formats)} [default: from -o's extension, else table]."),
            click.option("--json", "as_json", is_flag=True, help="Same as --format json."),
            click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                         help=f"Write the report to this file instead of stdout ({suffixes} or .txt)."),
            click.option("--force", is_flag=True, help="Overwrite an existing report file."),
        )):
            func = option(func)
        return func

    return decorate


def report_format(fmt: str | None, as_json: bool, output: Path | None, force: bool,
                  for_path: Callable[[Path], str | None]) -> str:
    """The format asked for (``--json``, ``--format``, else ``-o``'s extension, else ``table``); refuses an existing
    ``-o`` without ``--force`` now, before minutes of measuring, not after."""
    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json contradicts --format {fmt}")
    if output is not None and output.exists() and not force:
        raise OutputExistsError(f"{output}: exists; pass --force to overwrite it")
    return "json" if as_json else fmt or (for_path(output) if output else None) or "table"


def placement_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--after``, ``--position``, ``--init``, ``--stage`` and ``--stride``: where a block goes, as ``insert`` and
    ``compare`` share them; the command receives ``site``, ``position``, ``init``, ``stage`` and ``stride``."""
    for option in reversed((
        click.option("--after", "site", default="bottleneck", show_default=True,
                     help="Sites: bottleneck (residual units), conv, conv3x3, a class name (C2f), a name glob "
                          "('layer3.*'; * stays within one dotted segment) or re:REGEX."),
        click.option("--position", type=click.Choice(["residual", "after", "before"]),
                     help="Where at each site: before the skip addition (residual; default for residual units), on "
                          "its output (after; default otherwise) or on its input (before)."),
        click.option("--init", type=click.Choice(INIT_MODES), default="identity", show_default=True,
                     help="identity: the patched model computes exactly what the original did until fine-tuned; "
                          "paper: the block exactly as published."),
        click.option("--stage", help="Only these stages (from 1), e.g. 3, 2,3 or 2-4."),
        click.option("--stride", type=int, help="Only sites with this stride."),
    )):
        func = option(func)
    return func
