"""Efficient Local Attention (ELA).

Paper: Xu and Wan, "ELA: Efficient Local Attention for Deep Convolutional Neural Networks", 2024,
https://arxiv.org/abs/2403.01123
Official code: none published; this follows the paper (its description and its PyTorch listing).

Average-pool along W (an H-long strip per channel) and along H (a W-long strip), pass **each strip along its own
axis** through one shared depthwise Conv1d (C → C, kernel k, padding k//2, no bias), one shared GroupNorm(16, C) and a
sigmoid, and scale: ``x · a_h · a_w`` with ``a_h`` of shape (N, C, H, 1) and ``a_w`` (N, C, 1, W). k = 7.
Parameters: kC + 2C (k 7, C=64: 576).

Where the details come from: the strips, the 1-D convolution without channel reduction, GroupNorm in place of
Coordinate Attention's BatchNorm, and the product of the two gates are the paper's description; the depthwise
grouping, the absent bias, the sharing of one convolution and one GroupNorm by both strips, GroupNorm's 16 groups
and k = 7 are its listing. The paper names four variants (ELA-T, -B, -S, -L) by kernel size and GroupNorm groups;
copies of the small variant use k = 5 with 32 groups (``--set kernel_size=5 --set gn_groups=32``).

Deviations: none with ``init="paper"``. Copies that reshape the W strip as (N, C, W, 1) apply the W gate along H;
here it is (N, C, 1, W). GroupNorm(16, C) needs C divisible by 16, and more than one value per group (a 1-long strip
with C = 16 has one): declared misfits (:func:`ela_fits`) answered before any model is touched, with the largest
``gn_groups`` that fits. ``init="identity"`` adds one scalar
shared by both gates (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, check_init, mean_pool
from ._registry import Misfit, register_block

__all__ = ["EfficientLocalAttention", "ela_fits"]


def ela_fits(channels: int, feat_size: tuple[int, int] | None = None, *, gn_groups: int = 16,
             **_: object) -> Misfit | None:
    """ELA's GroupNorm needs C divisible by ``gn_groups``, and more than one value per group in each strip."""
    shortest = 2 if feat_size is None else min(feat_size)

    def fit() -> dict[str, int]:  # the most groups that divide C and leave each group more than one value
        fits = [d for d in range(1, min(max(gn_groups, 1), channels) + 1)
                if channels % d == 0 and channels // d * shortest > 1]
        return {"gn_groups": fits[-1]} if fits else {}

    if gn_groups < 1 or channels % gn_groups:
        return Misfit(f"{channels} channels are not divisible by gn_groups={gn_groups}", fit())
    if channels // gn_groups * shortest == 1:
        return Misfit(f"a {feat_size[0]}x{feat_size[1]} site gives a 1-long strip: GroupNorm({gn_groups}, {channels}) "
                      "would normalise single values", fit())
    return None


@register_block("ela", paper="ELA, 2024 (arXiv:2403.01123; no official code)", fits=ela_fits, year=2024,
                params="9C (k 7; kC + 2C)",
                placement="no network code; the paper compares it with Coordinate Attention in ResNet and MobileNetV2",
                export="dynamic")
class EfficientLocalAttention(nn.Module):
    """Efficient Local Attention: direction-aware gates from strip pooling, a 1-D depthwise conv and GroupNorm.

    Args:
        channels: input and output channels; a multiple of ``gn_groups``.
        kernel_size: odd kernel of the depthwise Conv1d (7 in the paper's listing).
        gn_groups: groups of the GroupNorm (16 in the paper's listing).
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(self, channels: int, kernel_size: int = 7, gn_groups: int = 16, init: str = "paper") -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        misfit = ela_fits(channels, gn_groups=gn_groups)
        if misfit is not None:
            raise ValueError(f"{misfit.reason} ({misfit.hint()})")
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)
        self.gn = nn.GroupNorm(gn_groups, channels)
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h = torch.sigmoid(self.gn(self.conv(mean_pool(x, (3,))))).unsqueeze(3)  # (N, C, H) → (N, C, H, 1)
        a_w = torch.sigmoid(self.gn(self.conv(mean_pool(x, (2,))))).unsqueeze(2)  # (N, C, W) → (N, C, 1, W)
        if self.identity_gate is not None:
            a_h, a_w = self.identity_gate(a_h), self.identity_gate(a_w)
        return x * a_h * a_w
