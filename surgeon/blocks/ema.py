"""Efficient Multi-scale Attention (EMA).

Paper: Ouyang et al., "Efficient Multi-Scale Attention Module with Cross-Spatial Learning", ICASSP 2023,
https://arxiv.org/abs/2305.13563
Official code: https://github.com/YOLOonMe/EMA-attention-module (file ``EMA_attention_module``, class ``EMA``).

The C channels are split into ``factor`` = g groups of c' = C/g, folded into the batch. Per group:

* 1x1 branch: average-pool along W (an H-long strip) and along H (a W-long strip), concatenate along the spatial
  axis, one 1x1 conv (c' → c', bias), split, and ``x1 = GroupNorm(c', c')(x · σ(a_h) · σ(a_w))``;
* 3x3 branch: ``x2 = conv3x3(x)`` (c' → c', bias, padding 1);
* cross-spatial learning: the softmax over channels of each branch's global average pool, multiplied with the
  other branch's (c', H·W) features, summed: one (H, W) map per group; the output is ``x · σ(map)``.

Parameters: 10c'² + 4c' (C=64: 48; C=256: 672 with g 32).

Deviations: none in the numbers with ``init="paper"``. The official ``nn.AdaptiveAvgPool2d((None, 1))`` and
``((1, None))`` are written as means over one axis (the same values; adaptive pools to non-unit sizes do not export to
ONNX), and the global pool as a mean over both axes. The official code only asserts ``C // factor > 0`` and then fails
in ``reshape`` when C is not divisible by ``factor``; here that is a declared misfit (:func:`ema_fits`), answered
before any model is touched, with the largest ``factor`` that divides C; so is a 1x1 site, where the GroupNorm
would normalise single values (the official code then returns a constant branch, or fails with batch 1).
``init="identity"`` adds one scalar that blends the final gate σ(map) towards 1 (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, check_init, mean_pool
from ._registry import Misfit, register_block

__all__ = ["EfficientMultiScaleAttention", "ema_fits"]


def ema_fits(channels: int, feat_size: tuple[int, int] | None = None, *, factor: int = 32,
             **_: object) -> Misfit | None:
    """EMA folds ``factor`` groups into the batch: C must be a multiple of ``factor``; its GroupNorm normalises each
    channel over the map, so the map must have more than one position."""
    if feat_size is not None and feat_size[0] * feat_size[1] == 1:
        return Misfit("a 1x1 site leaves GroupNorm one value per channel to normalise")
    if factor < 1 or channels % factor:
        fit = max(d for d in range(1, min(max(factor, 1), channels) + 1) if channels % d == 0)
        return Misfit(f"{channels} channels are not divisible by factor={factor}", {"factor": fit})
    return None


@register_block("ema", paper="EMA, ICASSP 2023 (arXiv:2305.13563)", fits=ema_fits, year=2023,
                params="10c² + 4c, c = C/32 (factor 32; c = C/factor)",
                placement="YOLOv5s: after the backbone C3 at P4 and P5; MobileNetV2: after the depthwise conv unit",
                export="dynamic")
class EfficientMultiScaleAttention(nn.Module):
    """Efficient Multi-scale Attention: grouped 1x1 (strip) and 3x3 branches combined by cross-spatial attention.

    Args:
        channels: input and output channels; a multiple of ``factor``.
        factor: groups folded into the batch (32 in the official code).
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(self, channels: int, factor: int = 32, init: str = "paper") -> None:
        super().__init__()
        misfit = ema_fits(channels, factor=factor)
        if misfit is not None:
            raise ValueError(f"{misfit.reason} ({misfit.hint()})")
        self.groups = factor
        group_channels = channels // factor
        self.conv1x1 = nn.Conv2d(group_channels, group_channels, kernel_size=1)
        self.conv3x3 = nn.Conv2d(group_channels, group_channels, kernel_size=3, padding=1)
        self.gn = nn.GroupNorm(group_channels, group_channels)
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        grouped = x.reshape(batch * self.groups, channels // self.groups, height, width)
        x_h = mean_pool(grouped, (3,), keepdim=True)  # (B·g, c', H, 1)
        x_w = mean_pool(grouped, (2,), keepdim=True).transpose(2, 3)  # (B·g, c', W, 1)
        strips = self.conv1x1(torch.cat((x_h, x_w), dim=2))
        a_h, a_w = strips[:, :, :height], strips[:, :, height:].transpose(2, 3)
        x1 = self.gn(grouped * a_h.sigmoid() * a_w.sigmoid())
        x2 = self.conv3x3(grouped)
        # cross-spatial learning: (B·g, 1, c') channel weights of one branch times the other's (B·g, c', H·W)
        w1 = mean_pool(x1, (2, 3)).softmax(-1).unsqueeze(1)
        w2 = mean_pool(x2, (2, 3)).softmax(-1).unsqueeze(1)
        attn = torch.matmul(w1, x2.flatten(2)) + torch.matmul(w2, x1.flatten(2))
        gate = attn.view(batch * self.groups, 1, height, width).sigmoid()
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        return (grouped * gate).reshape(batch, channels, height, width)
