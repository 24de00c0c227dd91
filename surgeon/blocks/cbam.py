"""Convolutional Block Attention Module (CBAM).

Paper: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018, https://arxiv.org/abs/1807.06521
Official code: https://github.com/Jongchan/attention-module (``MODELS/cbam.py``).

Channel gate: a shared MLP, Linear (C → C/r, bias) → ReLU → Linear (C/r → C, bias), applied to the average- and
the max-pooled channel vectors, summed, sigmoid. Spatial gate, applied to the channel-gated features: pool
across channels into a 2-channel map ordered **[max, mean]**, 7x7 conv (2 → 1, no bias) → BatchNorm
(eps 1e-5, momentum 0.01) → sigmoid. r = 16. The module has no internal residual.

Max pools: in training mode ``torch.max`` with indices, as the official code (``torch.max(x, 1)[0]``, and
``max_pool2d`` for the channel gate), so the gradient goes to one maximal element; in eval mode ``amax``, the same
values without the cost of indices (see :func:`max_pool`).

Deviations: none with ``init="paper"``, except that a gradient taken in eval mode is split over exact ties
(``amax``). timm's ``CbamModule`` orders the spatial pool [mean, max] and uses ``amax`` in both modes; pass
``spatial_pool_order="mean_max"`` for its order. ``init="identity"`` adds one scalar shared by both gates (see
:class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, LayerType, check_init, get_act_layer, max_pool, mean_pool, reduced_channels
from ._registry import register_block

__all__ = ["CBAM", "ChannelGate", "SpatialGate"]


class ChannelGate(nn.Module):
    """CBAM's channel gate: returns the (N, C, 1, 1) gate, not the gated features."""

    def __init__(self, channels: int, hidden: int, act_layer: LayerType = "relu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = get_act_layer(act_layer)()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (2, N, C): both pools through the MLP at once
        pooled = torch.stack((mean_pool(x, (2, 3)), max_pool(x, (2, 3), keepdim=False, with_indices=self.training)))
        logits = self.fc2(self.act(self.fc1(pooled))).sum(0)
        return torch.sigmoid(logits).unsqueeze(-1).unsqueeze(-1)


class SpatialGate(nn.Module):
    """CBAM's spatial gate: returns the (N, 1, H, W) gate."""

    def __init__(self, kernel_size: int = 7, pool_order: str = "max_mean") -> None:
        super().__init__()
        if pool_order not in ("max_mean", "mean_max"):
            raise ValueError(f"spatial_pool_order must be 'max_mean' or 'mean_max', got {pool_order!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial_kernel_size must be a positive odd integer, got {kernel_size}")
        self.max_first = pool_order == "max_mean"
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_max, x_mean = max_pool(x, 1, keepdim=True, with_indices=self.training), mean_pool(x, (1,), keepdim=True)
        pooled = torch.cat((x_max, x_mean) if self.max_first else (x_mean, x_max), dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))


@register_block("cbam", paper="CBAM, ECCV 2018 (arXiv:1807.06521)", year=2018, params="2Ch + h + C + 100, h = C/16",
                placement="residual branch after bn3, before the addition", export="dynamic")
class CBAM(nn.Module):
    """Channel gate followed by spatial gate.

    Args:
        channels: input and output channels.
        rd_ratio: reduction ratio of the channel MLP (1/16 in the paper).
        rd_channels: hidden width of the channel MLP; overrides ``rd_ratio``.
        rd_divisor: round the hidden width to a multiple of this (1: truncate, as the official code).
        spatial_kernel_size: kernel of the spatial gate's convolution (7 in the paper).
        spatial_pool_order: ``"max_mean"`` (official code) or ``"mean_max"`` (timm).
        no_spatial: channel gate only (the paper's ablation; official ``no_spatial``).
        act_layer: hidden activation of the channel MLP.
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        spatial_kernel_size: int = 7,
        spatial_pool_order: str = "max_mean",
        no_spatial: bool = False,
        act_layer: LayerType = "relu",
        init: str = "paper",
    ) -> None:
        super().__init__()
        hidden = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.channel_gate = ChannelGate(channels, hidden, act_layer)
        self.spatial_gate = None if no_spatial else SpatialGate(spatial_kernel_size, spatial_pool_order)
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.channel_gate(x)
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        x = x * gate
        if self.spatial_gate is not None:
            gate = self.spatial_gate(x)
            if self.identity_gate is not None:
                gate = self.identity_gate(gate)
            x = x * gate
        return x
