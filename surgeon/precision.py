"""Reduced-precision safety: does the patched model still compute under float16 and bfloat16?

Mixed-precision training and inference (``torch.autocast``: Ultralytics' AMP, timm's ``--amp``, Lightning's
``precision="16-mixed"``) run every block of a model in a narrower type than it was checked in. A block that
overflows there (an unscaled exponent, a large sum before a softmax) trains to NaN or predicts nothing, and the
frameworks' own checks never see it: Ultralytics' AMP check runs a stock YOLO11n, not the user's model.

So the original model and the patched one each run once in float32 and once under autocast per precision the device
supports, and each one's deviation from its own float32 output is measured. A patched model whose reduced-precision
output is not finite, or deviates far more than the original's, gets a warning naming the inserted block that
overflows first or deviates most, its site and the precision. The original is measured before surgery
(:func:`measure`), since surgery changes the model in place, and the patched model after it (:func:`check`);
where both models exist side by side (``profile``), :func:`compare` does both. It knows only torch and the leaves,
so the surgery pipeline and the profiler both use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .recipe import Recipe
from .tensors import eval_mode, flatten_outputs, output_deviation

__all__ = [
    "WORSE_FACTOR",
    "WORSE_FLOOR",
    "PrecisionResult",
    "check",
    "compare",
    "measure",
    "precisions",
    "summary_line",
    "warnings_of",
]

WORSE_FACTOR = 10.0
"""A patched model is far worse than the original in a precision when its relative deviation from its float32 output
is more than this many times the original's ..."""
WORSE_FLOOR = 0.01
"""... and more than this (1% of the output's largest magnitude): below it, any deviation is rounding."""


@dataclass(frozen=True)
class PrecisionResult:
    """One precision on one device: each model's relative deviation from its own float32 output.

    Attributes:
        precision: ``float16`` or ``bfloat16``.
        device: where it ran (``cpu``, ``cuda``).
        original: the original model's relative deviation (``inf`` when its output is not finite).
        patched: the patched model's.
        block: the inserted block whose output is first non-finite, else the one that deviates most, as
            ``(block, site, module)``; ``None`` when the model has no inserted block that ran.
    """

    precision: str
    device: str
    original: float
    patched: float
    block: tuple[str, str, str] | None = None

    @property
    def problem(self) -> str | None:
        """What is wrong, in words, or ``None`` when the patched model is as safe as the original here."""
        if math.isinf(self.patched) and not math.isinf(self.original):
            return "the patched model's output is not finite (the original's is)"
        if not math.isinf(self.patched) and self.patched > max(WORSE_FACTOR * self.original, WORSE_FLOOR):
            return (f"the patched model deviates {self.patched:.3g} from its float32 output, the original "
                    f"{self.original:.3g}")
        return None

    def to_dict(self) -> dict[str, object]:
        """Plain data for a JSON report (``inf`` as ``None``)."""
        finite = (lambda v: None if math.isinf(v) else v)
        return {"precision": self.precision, "device": self.device, "original": finite(self.original),
                "patched": finite(self.patched), "block": None if self.block is None else
                {"block": self.block[0], "site": self.block[1], "module": self.block[2]}, "problem": self.problem}


def precisions(device: torch.device | str) -> tuple[torch.dtype, ...]:
    """The reduced precisions autocast runs on ``device``: bfloat16 and float16 on CPU (torch 2.x), float16 on CUDA
    and bfloat16 where the GPU has it."""
    kind = torch.device(device).type
    if kind == "cuda":
        return (torch.float16, torch.bfloat16) if torch.cuda.is_bf16_supported() else (torch.float16,)
    found = []
    for dtype in (torch.float16, torch.bfloat16):
        try:
            with torch.autocast(kind, dtype=dtype):
                found.append(dtype)
        except (RuntimeError, ValueError):  # this torch or device has no autocast in that type (it warns, too)
            continue
    return tuple(found)


def _relative(reference: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]) -> float:
    """The relative deviation of ``outputs`` from ``reference``, ``inf`` when an output is not finite."""
    if any(t.is_floating_point() and not torch.isfinite(t).all() for t in outputs):
        return math.inf
    return output_deviation(reference, [t.float() for t in outputs])[1]


def _run(model: nn.Module, example: torch.Tensor, dtype: torch.dtype | None) -> list[torch.Tensor]:
    """The flattened eval-mode outputs of ``model``: in float32, or under autocast in ``dtype``."""
    with torch.no_grad(), eval_mode(model):
        if dtype is None:
            return flatten_outputs(model(example))
        with torch.autocast(example.device.type, dtype=dtype):
            return flatten_outputs(model(example))


def measure(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Before surgery: the original model's relative deviation from its float32 output, per precision of the
    example's device (``inf`` where it is not finite)."""
    reference = _run(model, example, None)
    return {str(dtype).removeprefix("torch."): _relative(reference, _run(model, example, dtype))
            for dtype in precisions(example.device)}


@contextmanager
def _block_outputs(model: nn.Module, recipe: Recipe | None) -> Iterator[dict[str, torch.Tensor]]:
    """Record the first tensor each inserted block returns (measurement only: the hooks go on exit)."""
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for step in recipe.steps if recipe is not None else ():
        module = modules.get(step.module)
        if module is None:
            continue

        def hook(_: nn.Module, __: object, output: object, name: str = step.module) -> None:
            tensors = flatten_outputs(output)
            if tensors and name not in captured:
                captured[name] = tensors[0].detach()

        handles.append(module.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _culprit(recipe: Recipe | None, reference: Mapping[str, torch.Tensor],
             reduced: Mapping[str, torch.Tensor]) -> tuple[str, str, str] | None:
    """The inserted block that overflows first (in execution order), else the one that deviates most."""
    if recipe is None:
        return None
    steps = {step.module: step for step in recipe.steps}
    ran = [name for name in reduced if name in reference]
    if not ran:
        return None
    scores = {name: _relative([reference[name]], [reduced[name]]) for name in ran}
    worst = next((name for name in ran if math.isinf(scores[name])), None) or max(ran, key=scores.__getitem__)
    return steps[worst].block, steps[worst].site, worst


def check(model: nn.Module, example: torch.Tensor, original: Mapping[str, float],
          recipe: Recipe | None = None) -> list[PrecisionResult]:
    """After surgery: the patched model under every precision :func:`measure` measured the original in.

    Args:
        model: the patched model.
        example: the probe batch :func:`measure` ran (the same values).
        original: what :func:`measure` returned for the original model.
        recipe: the patch's recipe, to name the block that overflows or deviates most.
    """
    with _block_outputs(model, recipe) as captured:
        reference = _run(model, example, None)
        reference_blocks = dict(captured)
        results = []
        for dtype in precisions(example.device):
            name = str(dtype).removeprefix("torch.")
            if name not in original:
                continue
            captured.clear()
            deviation = _relative(reference, _run(model, example, dtype))
            results.append(PrecisionResult(name, example.device.type, original[name], deviation,
                                           _culprit(recipe, reference_blocks, captured)))
    return results


def warnings_of(results: Sequence[PrecisionResult]) -> list[str]:
    """One line per precision in which the patched model is unsafe: the precision, what is wrong, and the block and
    site to look at."""
    lines = []
    for result in results:
        if result.problem is None:
            continue
        where = (f"; look at {result.block[0]} at {result.block[1]} ({result.block[2]})"
                 if result.block is not None else "")
        lines.append(f"{result.precision} on {result.device}: {result.problem}{where}; mixed-precision training "
                     "(AMP) may diverge or predict nothing, so train in float32 (amp=False) or change the block")
    return lines


def compare(original: nn.Module, patched: nn.Module, example: torch.Tensor,
            recipe: Recipe | None = None) -> list[PrecisionResult]:
    """:func:`measure` on ``original`` and :func:`check` on ``patched``, both on ``example``."""
    return check(patched, example, measure(original, example), recipe)


def summary_line(results: Sequence[PrecisionResult]) -> str:
    """Both models' deviations in one line, as the command line and the profile's notes show them."""
    shown = (lambda v: "not finite" if math.isinf(v) else f"{v:.3g}")
    return "Reduced precision (relative deviation from float32, original → patched): " + ", ".join(
        f"{r.precision} {shown(r.original)} → {shown(r.patched)}" for r in results)
