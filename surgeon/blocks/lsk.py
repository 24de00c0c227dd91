"""Large Selective Kernel block (LSK, the spatial unit of LSKNet).

Paper: Li et al., "Large Selective Kernel Network for Remote Sensing Object Detection", ICCV 2023,
https://arxiv.org/abs/2303.09030
Official code: https://github.com/zcablii/LSKNet (``mmrotate/models/backbones/lsknet.py``, class ``LSKblock``).

Two depthwise convolutions in sequence build a small and a large receptive field: depthwise 5x5 (``conv0``), then
depthwise 7x7 with dilation 3 on its output (``conv_spatial``). Each is reduced to C/2 channels by its own 1x1 conv
(``conv1``, ``conv2``). Spatial selection: the channel mean and the channel max over both reduced maps (in that order)
→ 7x7 conv (2 → 2, bias) → sigmoid gives one weight map per branch; the weighted sum goes through a 1x1 conv
(C/2 → C, ``conv``) and multiplies the input, ``x · attn``, with no gate of its own. Every conv has a bias.
Parameters: ``1.5C² + 78C + 198`` (C even). PyTorch's default initialisation, as the official class builds it
(LSKNet's ``init_weights`` then redraws every conv of the network from a normal with std √(2 / fan_out), which,
inserted without the network's 1e-2 layer scale, would scale the features several-fold). Submodule names are the
official ones, so official LSKNet weights load with ``load_state_dict``.

The channel max: in training mode ``torch.max`` with indices, as the official code, so the gradient goes to one
maximal element; in eval mode ``amax``, the same values without the cost of indices (see :func:`max_pool`).

Deviations:
    * The reduced width is ``max(1, int(C · rd_ratio))`` with ``rd_ratio = 1/2``: the official ``C // 2``, clamped so
      that C = 1 still builds.
    * ``init="identity"`` starts the last 1x1 conv (``conv``) at zero weight and bias 1, so ``attn`` is exactly 1 and
      the block the identity; no parameter is added. As in the GC and Non-local blocks' zero-initialised last
      layers, the earlier convs receive gradient once that conv has moved.
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import check_init, max_pool, mean_pool, reduced_channels
from ._registry import register_block

__all__ = ["LargeSelectiveKernel"]


@register_block("lsk", aliases=("lsknet", "large_selective_kernel"),
                paper="LSKNet: Large Selective Kernel Network, ICCV 2023 (arXiv:2303.09030)", year=2023,
                params="1.5C² + 78C + 198",
                placement="the spatial unit of each LSKNet block (1x1 → GELU → LSK → 1x1, plus shortcut)",
                export="dynamic")
class LargeSelectiveKernel(nn.Module):
    """Large selective kernel: a spatial selection between a small and a large depthwise receptive field.

    Args:
        channels: input and output channels.
        rd_ratio: width of each reduced branch relative to ``channels`` (1/2 in the official code).
        rd_channels: width of each reduced branch; overrides ``rd_ratio``.
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 2, rd_channels: int | None = None,
                 init: str = "paper") -> None:
        super().__init__()
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        self.conv0 = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.conv_spatial = nn.Conv2d(channels, channels, 7, padding=9, dilation=3, groups=channels)
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.conv2 = nn.Conv2d(channels, hidden, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(hidden, channels, 1)
        if check_init(init) == "identity":
            nn.init.zeros_(self.conv.weight)
            nn.init.ones_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = self.conv0(x)
        large = self.conv_spatial(small)
        small, large = self.conv1(small), self.conv2(large)
        both = torch.cat((small, large), dim=1)
        pooled = torch.cat((mean_pool(both, (1,), keepdim=True),
                            max_pool(both, 1, keepdim=True, with_indices=self.training)), dim=1)
        weights = torch.sigmoid(self.conv_squeeze(pooled))  # (N, 2, H, W): one map per branch
        selected = small * weights[:, 0:1] + large * weights[:, 1:2]
        return x * self.conv(selected)
