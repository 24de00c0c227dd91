"""Pieces shared by the blocks: reduced widths, activation lookup, the identity-init gate, and pools that take any
map size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ClippedAvgPool",
    "IdentityGate",
    "check_init",
    "clipped_avg_pool",
    "get_act_layer",
    "make_divisible",
    "max_pool",
    "mean_pool",
    "reduced_channels",
]

LayerType = str | type[nn.Module] | Callable[..., nn.Module]

_ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
    "hard_swish": nn.Hardswish,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below ``min_value`` (timm's convention).

    With ``round_limit`` the result never drops more than ``1 - round_limit`` below ``value``.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def reduced_channels(channels: int, rd_ratio: float, rd_channels: int | None = None, rd_divisor: int = 1) -> int:
    """Width of a bottleneck inside a block: explicit ``rd_channels``, else ``channels * rd_ratio``.

    ``rd_divisor=1`` truncates like the official code (``channels // reduction``); the result is clamped to at
    least 1 so that narrow layers still get a valid block.
    """
    if rd_channels is not None:
        if rd_channels < 1:
            raise ValueError(f"rd_channels must be >= 1, got {rd_channels}")
        return int(rd_channels)
    if rd_ratio <= 0:
        raise ValueError(f"rd_ratio must be > 0, got {rd_ratio}")
    if rd_divisor <= 1:
        return max(1, int(channels * rd_ratio))
    return make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)


def get_act_layer(layer: LayerType) -> Callable[..., nn.Module]:
    """Resolve an activation given by name (``"relu"``, ``"sigmoid"``, ...) or as a class/factory."""
    if isinstance(layer, str):
        try:
            return _ACTIVATIONS[layer.lower()]
        except KeyError:
            raise ValueError(f"unknown activation {layer!r}; valid: {', '.join(sorted(_ACTIVATIONS))}") from None
    return layer


def mean_pool(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """``x.mean(dims, keepdim)``, computed as a sum divided by the number of elements summed.

    The values are those of ``mean`` (on CPU ``mean`` is this very sum and division), but the backward is cheaper:
    the gradient of a sum is the incoming gradient broadcast as a view, where ``mean``'s backward writes
    ``grad / count`` out at the input's full size. In a block that pools its input and also gates it, that is one
    full-size tensor fewer written per training step (SE at 8x256x56x56: about a quarter of its backward time).
    """
    count = 1
    for dim in dims:
        count = count * x.shape[dim]
    return x.sum(dims, keepdim=keepdim) / count


def max_pool(x: torch.Tensor, dim: int | tuple[int, ...], keepdim: bool, with_indices: bool) -> torch.Tensor:
    """The maximum over ``dim`` (one dim, or trailing dims), with either backward.

    ``with_indices`` takes ``torch.max(..., dim)``, as the official CBAM and Triplet code: the gradient goes to one
    maximal element, and the backward (a scatter) is 2-3x cheaper than ``amax``'s, which spreads the gradient over
    ties with full-size masks. Without it, ``amax``: no indices to compute, so about 4x cheaper in a forward
    pass alone. The values are the same; blocks pass ``self.training``.
    """
    if not with_indices:
        return x.amax(dim, keepdim=keepdim)
    if isinstance(dim, int):
        return x.max(dim, keepdim=keepdim)[0]
    if dim != tuple(range(x.dim() - len(dim), x.dim())):
        raise ValueError(f"max_pool over several dims takes trailing dims, got {dim} for a {x.dim()}-D tensor")
    flat = x.flatten(dim[0]).max(-1)[0]
    return flat.view(flat.shape + (1,) * len(dim)) if keepdim else flat


def check_init(init: str) -> str:
    if init not in ("identity", "paper"):
        raise ValueError(f"init must be 'identity' or 'paper', got {init!r}")
    return init


class IdentityGate(nn.Module):
    """Turns a multiplicative gate ``g`` into ``1 + gamma * (g - 1)`` with a learnable scalar ``gamma``.

    With ``gamma = 0`` (its initial value) the gate is exactly 1, so ``x * gate`` is exactly ``x``: a gating block
    inserted into a pretrained network starts as the identity and learns to open. The blend works on the small
    gate tensor (N, C, 1, 1 or N, 1, H, W), so it costs nothing next to the ``x * gate`` product itself. Used only
    with ``init="identity"``; ``init="paper"`` leaves the block exactly as published (no extra parameter).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, gate: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(torch.ones_like(gate), self.gamma.to(gate.dtype), gate - 1)


def clipped_avg_pool(x: torch.Tensor, r: int) -> torch.Tensor:
    """``AvgPool2d(r, r)`` with the window clipped to the input, so inputs smaller than ``r`` pool to 1x1 (SCConv,
    SCSA).

    Written with a kernel that does not depend on the input's size, so that ONNX export keeps H and W dynamic (an
    AveragePool's kernel is fixed when exported; ``min(r, H)`` would bake in the example's size). The input is cut to
    whole windows (to H // r · r rows, or to its H < r rows), then pooled with ``ceil_mode``, which clips a window
    that runs past the input and divides by what it covers: bit for bit the clipped kernel's values.
    """
    cut = x[:, :, :_whole_windows(x.shape[2], r), :_whole_windows(x.shape[3], r)]
    # torch 2.9's ONNX export divides a clipped window by its full r x r area; ones pooled the same way carry the same
    # divisor, which cancels (in PyTorch they pool to exactly 1, so the values stay bit for bit)
    ones = cut.new_ones(1, 1, cut.shape[2], cut.shape[3])
    return F.avg_pool2d(cut, r, r, ceil_mode=True) / F.avg_pool2d(ones, r, r, ceil_mode=True)


def _whole_windows(size: Any, r: int) -> Any:
    """``size // r · r``, or ``size`` itself when it is below ``r``."""
    if torch.jit.is_tracing():  # the TorchScript exporter: sizes are traced tensors, and its graph has fixed sizes
        size = int(size)
    if isinstance(size, int):  # eager, or static sizes under torch.compile (torch 2.9 breaks its graph on sym_max)
        return max(size // r * r, min(size, r - 1))
    return torch.sym_max(size // r * r, torch.sym_min(size, r - 1))  # symbolic under torch.export: H, W stay free


torch.fx.wrap("clipped_avg_pool")  # an fx leaf: the cut reads the input's shape


class ClippedAvgPool(nn.Module):
    """:func:`clipped_avg_pool` as a module: ``AvgPool2d(window, window)`` that also takes maps smaller than it."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clipped_avg_pool(x, self.window)

    def extra_repr(self) -> str:
        return f"window={self.window}"
