"""Whether a module survives the ways a model leaves PyTorch: ONNX, TorchScript, ``torch.export``, ``torch.compile``.

:func:`check_exports` runs :func:`surgeon.export.export_model` for ONNX, TorchScript and an exported program into a
temporary directory (each export is loaded back and run: ONNX in onnxruntime, TorchScript with ``torch.jit.load``,
the program with ``torch.export.load``), and counts the graph breaks ``torch.compile`` would meet with
``torch._dynamo.explain``. Each check gives ``"ok"`` or a one-line reason; none raises. Nothing is left on disk, and
dynamo's caches are reset by ``explain`` itself before and after, as it always does.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .export import export_model
from .tensors import device_of, eval_mode, probe_input

__all__ = ["CHECKS", "OK", "check_exports", "graph_breaks"]

CHECKS = ("onnx", "torchscript", "torch.export", "torch.compile")
"""The checks, in the order they are reported."""
OK = "ok"
_TARGETS = {"onnx": ("onnx", ".onnx"), "torchscript": ("torchscript", ".torchscript.pt"),
            "torch.export": ("exported-program", ".pt2")}
_TOLERANCE = 1e-3  # relative to the output's scale: an export that runs but computes something else is not ok


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters and dynamo print progress and warnings of their own; the caller owns the terminal."""
    loggers = [logging.getLogger(name) for name in ("torch._dynamo", "torch.onnx", "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def graph_breaks(module: nn.Module, example: torch.Tensor) -> str:
    """``"ok"`` when ``torch._dynamo.explain`` finds no graph break in ``module``'s forward, else how many and the
    first reason."""
    try:
        with _quiet(), eval_mode(module), torch.no_grad():
            explanation = torch._dynamo.explain(module)(example)
    except Exception as exc:  # noqa: BLE001  dynamo fails in many ways; the reason is the result
        return f"dynamo failed: {_one_line(exc)}"
    if explanation.graph_break_count == 0:
        return OK
    reasons = explanation.break_reasons
    first = _one_line(Exception(reasons[0].reason)) if reasons else "reason not given"
    count = explanation.graph_break_count
    return f"{count} graph break{'s' if count != 1 else ''}: {first}"


def _export_check(module: nn.Module, example_shape: Sequence[int], check: str, directory: Path) -> str:
    target, suffix = _TARGETS[check]
    try:
        with _quiet():
            result = export_model(module, directory / f"module{suffix}", target, input_shape=example_shape,
                                  force=True)
    except Exception as exc:  # noqa: BLE001  every exporter failure is a reason, never a crash of the comparison
        return _one_line(exc)
    if result.max_abs_diff is None:
        return OK if "not installed" not in result.checked_with else result.checked_with
    with torch.no_grad(), eval_mode(module):
        scale = module(probe_input(example_shape, module)).abs().max().item()
    if result.max_abs_diff > _TOLERANCE * max(scale, 1.0):
        return f"runs, but differs from PyTorch by {result.max_abs_diff:.3g} ({result.checked_with})"
    return OK


def check_exports(module: nn.Module, example_shape: Sequence[int],
                  checks: Sequence[str] = CHECKS) -> dict[str, str]:
    """Each of ``checks`` (:data:`CHECKS`) on ``module`` with an example batch of ``example_shape``: ``"ok"`` or
    why not. The module is not changed (its train/eval flags are restored); a module on another device than the CPU
    is checked as a CPU copy, since the exports are loaded back and run on the CPU (onnxruntime's CPU provider)."""
    if device_of(module).type != "cpu":
        module = copy.deepcopy(module).cpu()
    unknown = [check for check in checks if check not in CHECKS]
    if unknown:
        raise ValueError(f"unknown export check {unknown[0]!r}; valid: {', '.join(CHECKS)}")
    shape = tuple(int(v) for v in example_shape)
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="attn-surgeon-export-") as directory:
        for check in checks:
            if check == "torch.compile":
                results[check] = graph_breaks(module, probe_input(shape, module))
            else:
                results[check] = _export_check(module, shape, check, Path(directory))
    return results
