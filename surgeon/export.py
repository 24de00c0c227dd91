"""Export a patched model: ONNX, TorchScript, a ``torch.export`` program, or a readable Python package.

Every export is checked before it is reported: the written file is loaded back (ONNX in onnxruntime when it is
installed, TorchScript with ``torch.jit.load``, the program with ``torch.export.load``, the Python package by
importing it) and run on the example batch, and the largest absolute difference from the eager model is returned.
An export with a dynamic spatial size is also run at a second size (:func:`other_size`), so a size that was baked
in is caught when it is written, not when it is deployed.

The Python package target is written by :mod:`surgeon.python_package`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .blocks import get_block
from .errors import BlockError, OutputExistsError, SurgeonError
from .io.files import atomic_write
from .io.specs import is_spec
from .python_package import run_package, write_python_package
from .recipe import recipe_of
from .tensors import default_input_shape, eval_mode, flatten_outputs, output_deviation, probe_guard, probe_input

__all__ = ["TARGETS", "ExportResult", "default_export_path", "export_model", "other_size", "require_exporter",
           "write_python_package"]

TARGETS = ("onnx", "torchscript", "exported-program", "python")
_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2", "python": "_py"}
_REQUIRES = {"onnx": ("onnx", "onnxscript")}  # what a target needs beyond torch: the package's ``onnx`` extra


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how the reloaded export compared with the eager model.

    Attributes:
        max_abs_diff: largest absolute output difference on the example batch, or ``None`` if not checked.
        checked_with: what ran the reloaded export (``onnxruntime``, ``torch.jit.load``, ...), or why not.
        files: the files written (several for the Python package).
        checked_shapes: the input shapes the reloaded export was run at (two with a dynamic spatial size).
    """

    target: str
    path: Path
    max_abs_diff: float | None
    checked_with: str
    files: list[Path] = field(default_factory=list)
    checked_shapes: list[tuple[int, ...]] = field(default_factory=list)


def default_export_path(source: str, target: str) -> Path:
    """``resnet50.onnx`` for ``torchvision:resnet50``; ``ckpt.pt2`` beside ``ckpt.pt``; ``ckpt_py/`` for python."""
    stem = source.rsplit(":", 1)[-1] if is_spec(source) else Path(source).name.split(".")[0]
    if target == "python":
        stem = re.sub(r"\W", "_", stem)
        stem = stem if stem[:1].isalpha() else f"model_{stem}"
    folder = Path(".") if is_spec(source) else Path(source).parent
    return folder / f"{stem}{_SUFFIXES[target]}"


def _max_diff(expected: Any, actual: Any) -> float:
    """The largest absolute difference between two outputs (``inf`` if their structure differs)."""
    return output_deviation(flatten_outputs(expected), flatten_outputs(actual))[0]


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters print progress on stdout and warn about their own deprecations; the CLI owns the terminal."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def require_exporter(target: str) -> None:
    """Check that the packages ``target``'s exporter needs can be imported, before any work is done.

    Raises:
        SurgeonError: one line naming the missing packages and the command that installs them.
    """
    missing = []
    for name in _REQUIRES.get(target, ()):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        names = " and ".join(missing)
        raise SurgeonError(f"{target} export needs {names}, not installed: pip install 'attn-surgeon[onnx]' "
                           f"(or: pip install {' '.join(missing)})")


def other_size(shape: Sequence[int]) -> tuple[int, ...]:
    """The second shape a dynamic-size export is checked at: H and W changed by different amounts (64x64 → 96x80)."""
    *lead, height, width = shape
    return (*lead, height + max(1, height // 2), width + max(1, width // 4))


def _traced_inputs(example: torch.Tensor, dynamic_batch: bool,
                   dynamic_size: bool) -> tuple[tuple[torch.Tensor], Any]:
    """Inputs and dynamic shapes for torch.export; a batch of 1 would be specialised to 1, so trace with 2.

    H and W are ``Dim.DYNAMIC``: export fails, naming the reason, if the model fixes them, rather than quietly
    writing a fixed-size file.
    """
    dims: dict[int, Any] = {}
    if dynamic_batch:
        example = example if example.shape[0] > 1 else torch.cat([example, example])
        dims[0] = torch.export.Dim("batch", min=1)
    if dynamic_size:
        dims[2] = dims[3] = torch.export.Dim.DYNAMIC
    return (example,), ((dims,) if dims else None)


Runner = Callable[[torch.Tensor], Any]


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, force: bool, opset: int | None,
                 dynamic_batch: bool, dynamic_size: bool) -> tuple[Runner, str]:
    inputs, dims = _traced_inputs(example, dynamic_batch, dynamic_size)
    with _quiet():
        program = torch.onnx.export(model, inputs, dynamo=True, input_names=["input"], output_names=["output"],
                                    dynamic_shapes=dims, opset_version=opset)
    data = program.model_proto.SerializeToString()
    atomic_write(path, lambda file: file.write(data), force=force)
    try:
        import onnxruntime
    except ImportError:
        return lambda x: None, "not checked (onnxruntime is not installed)"
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # its errors come back as exceptions, reported in one line; don't also print them
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {session.get_inputs()[0].name: x.numpy()}), "onnxruntime"


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, force: bool) -> tuple[Runner, str]:
    with _quiet():  # the generated forward has no source file for torch.jit.script to read: tracing it is
        traced = torch.jit.trace(model, (example,), check_trace=False)
    with _quiet():
        atomic_write(path, lambda file: torch.jit.save(traced, file), force=force)
        reloaded = torch.jit.load(str(path))
    return reloaded, "torch.jit.load"


def _export_program(model: nn.Module, example: torch.Tensor, path: Path, force: bool, dynamic_batch: bool,
                    dynamic_size: bool) -> tuple[Runner, str]:
    inputs, dims = _traced_inputs(example, dynamic_batch, dynamic_size)
    with _quiet():
        program = torch.export.export(model, inputs, dynamic_shapes=dims)
    atomic_write(path, lambda file: torch.export.save(program, file), force=force)
    with _quiet():
        reloaded = torch.export.load(str(path)).module()
    return reloaded, "torch.export.load"


def export_model(model: nn.Module, path: str | os.PathLike[str], target: str, *,
                 input_shape: Sequence[int] | None = None, force: bool = False, opset: int | None = None,
                 dynamic_batch: bool = True, dynamic_size: bool = False, check: bool = True) -> ExportResult:
    """Export ``model`` (in eval mode; its mode is restored) to ``target``, then reload it and compare outputs.

    Args:
        model: the model, usually patched (``python`` needs patched modules and a recipe).
        path: output file, or directory for ``python``.
        target: one of :data:`TARGETS`.
        input_shape: the example batch's shape (NCHW); ``None`` for the model's declared input size.
        force: overwrite an existing output.
        opset: ONNX opset version (the exporter's default if ``None``).
        dynamic_batch: let ONNX and exported programs take any batch size.
        dynamic_size: let ONNX and exported programs take any height and width; the check then also runs the
            export at :func:`other_size`.
        check: reload the export and compare its outputs with the eager model's.

    Raises:
        SurgeonError: an unknown target, an existing output without ``force``, a model the exporter rejects (with
            ``dynamic_size``: one that fixes its spatial size), or an export that fails at the second size.
        ModelForwardError: the model raises on the example batch.
    """
    if target not in TARGETS:
        raise SurgeonError(f"unknown export target {target!r}; choose one of {', '.join(TARGETS)}")
    require_exporter(target)
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: exists; pass --force to overwrite it")
    fixed = _fixed_size_blocks(model) if dynamic_size and target in ("onnx", "exported-program") else []
    if fixed:
        raise SurgeonError(f"cannot export with a dynamic size: {fixed[0]}; export at a fixed size (without "
                           "--dynamic-size), or use a block that `attn-surgeon blocks` lists as dynamic")
    input_shape = tuple(int(v) for v in input_shape) if input_shape is not None else default_input_shape(model)
    with eval_mode(model):
        return _export(model, path, target, probe_input(input_shape), force=force, opset=opset,
                       dynamic_batch=dynamic_batch, dynamic_size=dynamic_size, check=check)


def _export(model: nn.Module, path: Path, target: str, example: torch.Tensor, *, force: bool, opset: int | None,
            dynamic_batch: bool, dynamic_size: bool, check: bool) -> ExportResult:
    """:func:`export_model` on a model already in eval mode."""
    with probe_guard(model, tuple(example.shape)), torch.no_grad():
        expected = model(example)
    if target == "python":
        files = write_python_package(model, path, force=force)
        if not check or recipe_of(model).base is None:  # without a named base only the user can build it
            return ExportResult(target, path, None, "not checked", files)
        actual = run_package(path, model, example)
        return ExportResult(target, path, _max_diff(expected, actual), "import", files)
    try:
        if target == "onnx":
            run, checker = _export_onnx(model, example, path, force, opset, dynamic_batch, dynamic_size)
        elif target == "torchscript":
            run, checker = _export_torchscript(model, example, path, force)
        else:
            run, checker = _export_program(model, example, path, force, dynamic_batch, dynamic_size)
    except SurgeonError:
        raise
    except Exception as exc:  # exporters raise many types; the user needs the reason
        raise SurgeonError(f"{target} export failed: {_reason(exc)}") from exc
    if not check:
        return ExportResult(target, path, None, "not checked", [path])
    with torch.no_grad():
        actual = run(example)
    if actual is None:
        return ExportResult(target, path, None, checker, [path])
    deviation, shapes = _max_diff(expected, actual), [tuple(example.shape)]
    if dynamic_size and target != "torchscript":  # a traced TorchScript module makes no promise about other sizes
        other = probe_input(other_size(example.shape), model, seed=1)
        deviation = max(deviation, _deviation_at(model, run, other, target))
        shapes.append(tuple(other.shape))
    return ExportResult(target, path, deviation, checker, [path], shapes)


def _deviation_at(model: nn.Module, run: Runner, x: torch.Tensor, target: str) -> float:
    """The reloaded export's largest difference from ``model`` on ``x``, a size it was not traced at.

    Raises:
        SurgeonError: the export fails to run at that size (a size baked into its graph).
    """
    with torch.no_grad():
        expected = model(x)
        try:
            actual = run(x)
        except Exception as exc:  # the runtime's own error types
            size = "x".join(map(str, x.shape))
            raise SurgeonError(f"{target} export with a dynamic size fails at {size}: {_reason(exc)}") from exc
    return _max_diff(expected, actual)


def _fixed_size_blocks(model: nn.Module) -> list[str]:
    """The inserted blocks whose registry entry declares a fixed spatial size for export, with the reason."""
    recipe = recipe_of(model)
    found = []
    for step in recipe.steps if recipe is not None else ():
        try:
            info = get_block(step.block)
        except BlockError:  # a user block that is not importable here: the exporter will judge it
            continue
        if info.export == "fixed_size":
            found.append(f"block {info.name!r} at {step.site} fixes its input size ({info.export_note})")
    return found


def _reason(exc: Exception) -> str:
    """The first line of an exception's message (exporters and runtimes write pages), at most 300 characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
