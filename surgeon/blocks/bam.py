"""Bottleneck Attention Module (BAM).

Paper: Park et al., "BAM: Bottleneck Attention Module", BMVC 2018, https://arxiv.org/abs/1807.06514
Official code: https://github.com/Jongchan/attention-module (``MODELS/bam.py``).

Two parallel branches on the same input. Channel branch: global average pool → Linear (C → C/r, bias) →
BatchNorm1d → ReLU → Linear (C/r → C, bias), giving an (N, C, 1, 1) map. Spatial branch: 1x1 conv (C → C/r, bias)
→ BN → ReLU, two 3x3 convs with dilation 4 (C/r → C/r, bias) each → BN → ReLU, 1x1 conv (C/r → 1, bias), giving an
(N, 1, H, W) map. Both are broadcast to (N, C, H, W) and combined as ``att = 1 + sigmoid(channel * spatial)``; the
output is ``att * x`` (so ``x + x * sigmoid(...)``). r = 16, dilation 4. The paper places BAM at every bottleneck
of the network, where the feature maps are downsampled (end of ResNet stages 1-3).

Deviations:

* Combination: the official code **multiplies** the two branch outputs before the sigmoid; the paper (Eq. 2,
  ``M(F) = σ(M_c(F) + M_s(F))``) and its ablation (Table 2b) use the element-wise **sum**. The default follows the
  code (the released weights were trained with it); ``combine="sum"`` gives the paper's version.
* BatchNorm position: the paper's equations put a BN at the end of each branch; the code puts them on the hidden
  layers only. The code's placement is used (no BN after the last layers).
* The official channel branch pools with ``avg_pool2d(x, H)``, which only works for square inputs; a global mean
  over (H, W) is used instead (identical for square inputs). The hidden width ``C // r`` is clamped to at least 1
  (the official code builds zero-width layers for C < 16).
* The stored official file sets ``self.gate_activation = gate_activation`` from an undefined name in
  ``ChannelGate.__init__``; it has no effect on the computation and is not reproduced.
* Train mode needs more than one value per BatchNorm channel, like the official code: the channel branch's
  BatchNorm1d fails for a batch of 1 in train mode (eval mode works at any batch size), and the spatial branch's
  BatchNorm2d fails for batch 1 at 1x1 resolution in train mode.
* ``init="identity"`` adds one scalar gating ``att`` (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, LayerType, check_init, get_act_layer, mean_pool, reduced_channels
from ._registry import register_block

__all__ = ["BAM"]

_COMBINE_MODES = ("mul", "sum")


def _channel_branch(channels: int, hidden: int, num_layers: int, act_layer: LayerType) -> nn.Sequential:
    """GAP'd vector → [Linear → BN1d → act] x num_layers → Linear back to ``channels``."""
    act = get_act_layer(act_layer)
    layers: list[nn.Module] = []
    width = channels
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), act()]
        width = hidden
    layers.append(nn.Linear(width, channels))
    return nn.Sequential(*layers)


def _spatial_branch(
    channels: int, hidden: int, num_dilated: int, dilation: int, act_layer: LayerType
) -> nn.Sequential:
    """1x1 reduce → [3x3 dilated conv → BN → act] x num_dilated → 1x1 to one channel."""
    act = get_act_layer(act_layer)
    layers: list[nn.Module] = [nn.Conv2d(channels, hidden, kernel_size=1), nn.BatchNorm2d(hidden), act()]
    for _ in range(num_dilated):
        layers += [
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(hidden),
            act(),
        ]
    layers.append(nn.Conv2d(hidden, 1, kernel_size=1))
    return nn.Sequential(*layers)


@register_block("bam", paper="BAM: Bottleneck Attention Module, BMVC 2018 (arXiv:1807.06514)", year=2018,
                params="3Ch + 18h² + 13h + C + 1, h = C/16",
                placement="where the maps are downsampled: the end of ResNet stages 1-3", export="dynamic")
class BAM(nn.Module):
    """Bottleneck Attention Module: parallel channel and spatial branches, ``x * (1 + sigmoid(c * s))``.

    Args:
        channels: input and output channels.
        rd_ratio: reduction ratio shared by both branches (1/16 in the paper).
        rd_channels: hidden width of both branches; overrides ``rd_ratio``.
        rd_divisor: round the hidden width to a multiple of this (1: truncate, as the official code).
        dilation: dilation (and padding) of the spatial branch's 3x3 convs (4 in the paper).
        num_dilated_convs: number of dilated 3x3 convs in the spatial branch (2 in the paper).
        channel_layers: hidden layers of the channel MLP (1 in the paper; official ``num_layers``).
        combine: ``"mul"`` (official code) or ``"sum"`` (paper's Eq. 2) to merge the branches before the sigmoid.
        act_layer: hidden activation of both branches.
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        dilation: int = 4,
        num_dilated_convs: int = 2,
        channel_layers: int = 1,
        combine: str = "mul",
        act_layer: LayerType = "relu",
        init: str = "paper",
    ) -> None:
        super().__init__()
        if combine not in _COMBINE_MODES:
            raise ValueError(f"combine must be one of {', '.join(_COMBINE_MODES)}, got {combine!r}")
        if dilation < 1 or num_dilated_convs < 0 or channel_layers < 1:
            raise ValueError(
                f"need dilation >= 1, num_dilated_convs >= 0 and channel_layers >= 1, got {dilation}, "
                f"{num_dilated_convs} and {channel_layers}"
            )
        hidden = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.combine = combine
        self.channel_att = _channel_branch(channels, hidden, channel_layers, act_layer)
        self.spatial_att = _spatial_branch(channels, hidden, num_dilated_convs, dilation, act_layer)
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_map = self.channel_att(mean_pool(x, (2, 3))).unsqueeze(-1).unsqueeze(-1)  # (N, C, 1, 1)
        spatial_map = self.spatial_att(x)  # (N, 1, H, W)
        if self.combine == "mul":
            logits = channel_map * spatial_map
        else:
            logits = channel_map + spatial_map
        gate = 1 + torch.sigmoid(logits)
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        return x * gate
