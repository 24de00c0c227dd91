"""Shuffle Attention (SA).

Paper: Zhang and Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021,
https://arxiv.org/abs/2102.00240
Official code: https://github.com/wofmanaf/SA-Net (``models/sa_resnet.py``, class ``sa_layer``).

The C channels are split into ``groups`` = G groups folded into the batch, and each group into two halves of
c = C/2G channels. Channel half: ``x0 · σ(cw · GAP(x0) + cb)``; spatial half: ``x1 · σ(sw · GroupNorm(c, c)(x1) + sb)``;
``cw, cb, sw, sb`` are per-channel (1, c, 1, 1) parameters shared by all groups, initialised to 0, 1, 0, 1. The
halves are concatenated, the groups unfolded, and the channels shuffled with 2 groups. Parameters: 3C/G (C=256,
G 64: 12; ResNet-50 after every bn3: 708). The paper puts it after bn3 of each Bottleneck, before the addition.

Deviations: none with ``init="paper"``. The official code cannot be built when C is not divisible by 2G (GroupNorm
with 0 groups, or a failed ``reshape``); here that is a declared misfit (:func:`sa_fits`), answered before any model
is touched, with the largest ``groups`` that fits; so is a 1x1 site, where the GroupNorm would normalise single values.
``init="identity"`` adds one scalar blending both gates towards 1
(see :class:`IdentityGate`) **and leaves out the channel shuffle**: the shuffle is a fixed permutation of the
channels, so with it no initialisation could give the identity, and the layers after the block in a pretrained model
expect the channels in their original order.
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, check_init, mean_pool
from ._registry import Misfit, register_block

__all__ = ["ShuffleAttention", "sa_fits"]


def sa_fits(channels: int, feat_size: tuple[int, int] | None = None, *, groups: int = 64, **_: object) -> Misfit | None:
    """SA folds ``groups`` groups into the batch and halves each: C must be a multiple of 2·``groups``; its GroupNorm
    normalises each channel over the map, so the map must have more than one position."""
    if feat_size is not None and feat_size[0] * feat_size[1] == 1:
        return Misfit("a 1x1 site leaves GroupNorm one value per channel to normalise")
    if groups >= 1 and channels % (2 * groups) == 0:
        return None
    fits = [g for g in range(1, min(max(groups, 1), channels // 2) + 1) if channels % (2 * g) == 0]
    return Misfit(f"{channels} channels are not divisible by 2*groups={2 * groups}",
                  {"groups": fits[-1]} if fits else {})


@register_block("sa", aliases=("shuffle_attention",), paper="SA-Net, ICASSP 2021 (arXiv:2102.00240)", fits=sa_fits,
                year=2021, params="3C/64 (groups 64; 3C/G)",
                placement="ResNet bottleneck after bn3, before the addition (ResNet-50: +708)", export="dynamic")
class ShuffleAttention(nn.Module):
    """Shuffle Attention: grouped channel and spatial gates on the two halves of each group, then a channel shuffle.

    Args:
        channels: input and output channels; a multiple of ``2 * groups``.
        groups: groups folded into the batch (64 in the official code).
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function (no shuffle).
    """

    def __init__(self, channels: int, groups: int = 64, init: str = "paper") -> None:
        super().__init__()
        misfit = sa_fits(channels, groups=groups)
        if misfit is not None:
            raise ValueError(f"{misfit.reason} ({misfit.hint()})")
        self.groups = groups
        half = channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.gn = nn.GroupNorm(half, half)
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        x0, x1 = x.reshape(batch * self.groups, channels // self.groups, height, width).chunk(2, dim=1)
        channel_gate = torch.sigmoid(self.cweight * mean_pool(x0, (2, 3), keepdim=True) + self.cbias)
        spatial_gate = torch.sigmoid(self.sweight * self.gn(x1) + self.sbias)
        if self.identity_gate is not None:
            channel_gate, spatial_gate = self.identity_gate(channel_gate), self.identity_gate(spatial_gate)
        out = torch.cat((x0 * channel_gate, x1 * spatial_gate), dim=1).reshape(batch, channels, height, width)
        if self.identity_gate is not None:
            return out
        # channel shuffle with 2 groups: channel i of the first half and channel i of the second half become neighbours
        shuffled = out.reshape(batch, 2, channels // 2, height, width).transpose(1, 2)
        return shuffled.reshape(batch, channels, height, width)
