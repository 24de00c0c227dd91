"""Large Separable Kernel Attention (LSKA).

Paper: Lau, Po and Rehman, "Large Separable Kernel Attention: Rethinking the Large Kernel Attention Design in CNN",
Expert Systems with Applications 2024, https://arxiv.org/abs/2309.01439
Official code: https://github.com/StevenLauHKHK/Large-Separable-Kernel-Attention (``models/van.py``, class ``LSKA``).

VAN's large kernel attention with each 2-D depthwise kernel split into a 1-D pair: depthwise 1×k0 → depthwise k0×1 →
depthwise 1×k1 with dilation d → depthwise k1×1 with dilation d → 1x1 conv (C → C), every conv with a bias; the
result multiplies the input, ``x · attn``, with no sigmoid. The effective kernel size ``k_size`` picks (k0, k1, d)
from the official table: 7 → (3, 3, 2), 11 → (3, 5, 2), 23 → (5, 7, 3), 35 → (5, 11, 3), 41 → (5, 13, 3),
53 → (5, 17, 3); other sizes are refused, as the official class builds no convolutions for them. Parameters:
``C² + (2·k0 + 2·k1 + 5)·C`` (k_size 7: ``C² + 17C``). PyTorch's default initialisation, as the official class
builds it (VAN's network then redraws every conv from a normal with std √(2 / fan_out); inserted without VAN's
1e-2 layer scale, that init would scale the features several-fold). Submodule names are the official ones, so
official LSKA weights load with ``load_state_dict``.

In VAN the block sits inside the attention unit (1x1 → GELU → LSKA → 1x1, plus a shortcut); inserted on its own here,
it is that unit's spatial gating part.

Deviations:
    * ``init="identity"`` starts the last 1x1 conv at zero weight and bias 1, so ``attn`` is exactly 1 and the block
      the identity; no parameter is added. As with the zero-initialised last layers of the GC and Non-local blocks,
      the depthwise convs receive gradient once that conv has moved.
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import check_init
from ._registry import register_block

__all__ = ["LSKA_KERNELS", "LargeSeparableKernelAttention", "lska_kernels"]

LSKA_KERNELS: dict[int, tuple[int, int, int]] = {
    7: (3, 3, 2), 11: (3, 5, 2), 23: (5, 7, 3), 35: (5, 11, 3), 41: (5, 13, 3), 53: (5, 17, 3),
}
"""Effective kernel size → (k0, k1, d) of the official ``LSKA`` class."""


def lska_kernels(k_size: int) -> tuple[int, int, int]:
    """(k0, k1, d) for an effective kernel size.

    Raises:
        ValueError: a size outside the official table (the message lists the supported ones).
    """
    if k_size not in LSKA_KERNELS:
        raise ValueError(f"LSKA k_size must be one of {', '.join(map(str, LSKA_KERNELS))}, got {k_size!r}")
    return LSKA_KERNELS[k_size]


def _strip_conv(channels: int, kernel: tuple[int, int], dilation: int = 1) -> nn.Conv2d:
    """A depthwise 1×k or k×1 convolution that keeps the spatial size."""
    padding = tuple((k - 1) // 2 * dilation for k in kernel)
    return nn.Conv2d(channels, channels, kernel, padding=padding, dilation=dilation, groups=channels)


@register_block("lska", aliases=("large_separable_kernel_attention",),
                paper="Large Separable Kernel Attention, ESWA 2024 (arXiv:2309.01439)", year=2024,
                params="C² + 17C (k_size 7; C² + (2k0 + 2k1 + 5)C)",
                placement="inside VAN's attention unit (1x1 → GELU → LSKA → 1x1, plus shortcut)", export="dynamic")
class LargeSeparableKernelAttention(nn.Module):
    """Large separable kernel attention: cascaded 1-D depthwise kernels, then a 1x1 conv, multiply the input.

    Args:
        channels: input and output channels.
        k_size: effective kernel size, one of 7, 11, 23, 35, 41, 53 (official table).
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(self, channels: int, k_size: int = 7, init: str = "paper") -> None:
        super().__init__()
        k0, k1, dilation = lska_kernels(k_size)
        self.k_size = k_size
        self.conv0h = _strip_conv(channels, (1, k0))
        self.conv0v = _strip_conv(channels, (k0, 1))
        self.conv_spatial_h = _strip_conv(channels, (1, k1), dilation)
        self.conv_spatial_v = _strip_conv(channels, (k1, 1), dilation)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1)
        if check_init(init) == "identity":
            nn.init.zeros_(self.conv1.weight)
            nn.init.ones_(self.conv1.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.conv0v(self.conv0h(x))
        attn = self.conv_spatial_v(self.conv_spatial_h(attn))
        return x * self.conv1(attn)
