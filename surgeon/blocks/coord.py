"""Coordinate Attention (CA).

Paper: Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
https://arxiv.org/abs/2103.02907
Official code: https://github.com/houqb/CoordAttention (``coordatt.py``, ``mbv2_ca.py``).

Average-pool along W (giving an H-long descriptor) and along H (a W-long one), concatenate them along the
spatial axis, 1x1 conv (C → mip, bias) → BatchNorm → h_swish, split back, then one 1x1 conv (mip → C, bias)
and sigmoid per direction; the output is ``x * a_w * a_h``. ``mip = max(8, C // reduction)``, reduction = 32.

Deviations: none with ``init="paper"`` (h_swish is ``nn.Hardswish``, which computes the official
``x * ReLU6(x + 3) / 6``). ``init="identity"`` adds one scalar shared by both gates (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, LayerType, check_init, get_act_layer, mean_pool
from ._registry import register_block

__all__ = ["CoordAttention"]


@register_block("ca", aliases=("coord", "coordatt"), paper="Coordinate Attention, CVPR 2021 (arXiv:2103.02907)",
                year=2021, params="3Cm + 3m + 2C, m = max(8, C/32)",
                placement="MobileNetV2: after the depthwise 3x3 + BN + ReLU6, before the projection (t ≠ 1)",
                export="dynamic")
class CoordAttention(nn.Module):
    """Coordinate Attention: direction-aware channel attention from pooling along each spatial axis.

    Args:
        channels: input and output channels.
        reduction: ``mip = max(min_channels, channels // reduction)`` (32 in the paper).
        min_channels: floor of the hidden width (8 in the official code).
        act_layer: activation after the shared 1x1 conv (h_swish in the paper).
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 32,
        min_channels: int = 8,
        act_layer: LayerType = "hard_swish",
        init: str = "paper",
    ) -> None:
        super().__init__()
        if reduction < 1 or min_channels < 1:
            raise ValueError(f"reduction and min_channels must be >= 1, got {reduction} and {min_channels}")
        mip = max(min_channels, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1, bias=True)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = get_act_layer(act_layer)()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1, bias=True)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1, bias=True)
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        x_h = mean_pool(x, (3,), keepdim=True)  # (N, C, H, 1)
        x_w = mean_pool(x, (2,), keepdim=True).transpose(2, 3)  # (N, C, W, 1)
        y = self.act(self.bn1(self.conv1(torch.cat((x_h, x_w), dim=2))))
        y_h, y_w = y[:, :, :height], y[:, :, height:]
        a_h = torch.sigmoid(self.conv_h(y_h))  # (N, C, H, 1)
        a_w = torch.sigmoid(self.conv_w(y_w)).transpose(2, 3)  # (N, C, 1, W)
        if self.identity_gate is not None:
            a_h, a_w = self.identity_gate(a_h), self.identity_gate(a_w)
        return x * a_w * a_h
