"""Tensor helpers shared by the stages, the profiler and the exporter: the probe batch, the flattened outputs of a
forward pass, how far two outputs are apart, and an eval-mode scope that gives every submodule its flag back.

They know only torch, so every layer may use them; each small rule here has no other owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

__all__ = ["DEFAULT_INPUT_SHAPE", "device_of", "eval_mode", "flatten_outputs", "output_deviation", "probe_input",
           "run_outputs"]

DEFAULT_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 224, 224)
"""The probe batch (N, C, H, W) used when the caller gives none."""


def probe_input(input_shape: Sequence[int], module: nn.Module | None = None, seed: int = 0) -> torch.Tensor:
    """A deterministic probe batch of ``input_shape`` on the module's device and floating dtype."""
    device, dtype = torch.device("cpu"), torch.float32
    if module is not None:
        tensor = next((t for t in module.parameters()), None)
        if tensor is not None and tensor.is_floating_point():
            device, dtype = tensor.device, tensor.dtype
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(input_shape), generator=generator).to(device=device, dtype=dtype)


def device_of(model: nn.Module) -> torch.device:
    """Where the model's first parameter or buffer lives (CPU for a model without either)."""
    tensor = next(chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and give every submodule its own train/eval flag back on exit.

    Restoring each flag, rather than calling ``model.train(previous)``, keeps a submodule that the user froze in
    eval mode (a frozen BatchNorm) frozen.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def flatten_outputs(value: Any) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or nested tuples, lists and dicts of them), in order.

    NumPy arrays (what onnxruntime returns) become tensors; anything else that is not a tensor is left out.
    """
    leaves, _ = tree_flatten(value)
    tensors = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            tensors.append(leaf)
        elif type(leaf).__module__ == "numpy" and hasattr(leaf, "dtype"):
            tensors.append(torch.from_numpy(leaf))
    return tensors


def run_outputs(model: nn.Module, probe: torch.Tensor) -> list[torch.Tensor]:
    """The flattened eval-mode outputs of ``model`` on ``probe``, without autograd; every train/eval flag is kept."""
    with torch.no_grad(), eval_mode(model):
        return flatten_outputs(model(probe))


def output_deviation(reference: Iterable[torch.Tensor], outputs: Iterable[torch.Tensor]) -> tuple[float, float]:
    """``(max abs diff, relative diff)`` over matching output tensors; ``inf`` if their structure differs."""
    reference, outputs = list(reference), list(outputs)
    if len(reference) != len(outputs) or any(a.shape != b.shape for a, b in zip(reference, outputs)):
        return float("inf"), float("inf")
    max_abs, scale = 0.0, 0.0
    for a, b in zip(reference, outputs):
        if a.numel() == 0:
            continue
        if not a.is_floating_point():
            max_abs = max(max_abs, 0.0 if torch.equal(a, b) else float("inf"))
            continue
        max_abs = max(max_abs, (a.float() - b.float()).abs().max().item())
        scale = max(scale, a.float().abs().max().item())
    return max_abs, (max_abs / scale if scale > 0 else max_abs)
