"""Dual Attention Network (DANet): position attention (PAM) and channel attention (CAM) modules.

Paper: Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019, https://arxiv.org/abs/1809.02983
Official code: https://github.com/junfu1115/DANet (``encoding/nn/da_att.py``: ``PAM_Module``, ``CAM_Module``).

PAM (self-attention over positions, after SAGAN): query and key 1x1 convolutions C → C/8 (bias), value 1x1
convolution C → C (bias); ``energy[i, j] = q_i · k_j`` over the H·W positions, softmax over the keys ``j``,
``out_i = Σ_j attn[i, j] v_j``, and ``gamma * out + x`` with a learnable scalar ``gamma`` initialised to 0.

CAM (self-attention over channels, no convolutions): ``energy = X Xᵀ`` (C x C) over the flattened positions,
``energy_new = rowmax(energy) − energy``, softmax over the last dimension, ``out = attn X``, and ``gamma * out + x``
with ``gamma`` initialised to 0.

Both modules start as the exact identity (``gamma = 0``), so ``init="paper"`` and ``init="identity"`` build the
same thing; submodule and parameter names match the official code, so its state dicts load unchanged.

Deviations:

* The reduced width is clamped to at least 1 (the official ``C // 8`` gives 0 below 8 channels); ``rd_ratio`` /
  ``rd_channels`` / ``rd_divisor`` change it (the default reproduces ``C // 8``).
* CAM takes the row maximum with ``amax`` instead of ``torch.max(...)[0]``: the same forward values; where a row
  has tied maxima the gradient is shared between them instead of going to one index.
* The paper's head wraps each module in 3x3 conv + BN + ReLU layers and sums the two branches; those belong to the
  placement (the network around the block), not to these blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import check_init, reduced_channels
from ._registry import register_block

__all__ = ["PositionAttention", "ChannelAttention"]


@register_block("danet_pam", aliases=("position_attention",),
                paper="DANet, CVPR 2019 (arXiv:1809.02983)", year=2019, params="1.25C² + 1.25C + 1",
                placement="the segmentation head on the last stage, behind a 3x3 conv + BN + ReLU", export="dynamic")
class PositionAttention(nn.Module):
    """DANet position attention module: every position attends to every other position.

    Cost grows with (H·W)² in time and memory, so it belongs on small, late feature maps.

    Args:
        channels: input and output channels.
        rd_ratio: width of query and key relative to ``channels`` (1/8 in the official code).
        rd_channels: width of query and key; overrides ``rd_ratio``.
        rd_divisor: round the query/key width to a multiple of this (1: truncate, as the official code).
        init: ``"paper"`` or ``"identity"``; both start with ``gamma = 0``, i.e. as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        init: str = "paper",
    ) -> None:
        super().__init__()
        check_init(init)
        qk_channels = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.query_conv = nn.Conv2d(channels, qk_channels, kernel_size=1, bias=True)
        self.key_conv = nn.Conv2d(channels, qk_channels, kernel_size=1, bias=True)
        self.value_conv = nn.Conv2d(channels, channels, kernel_size=1, bias=True)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.query_conv(x).flatten(2)  # (N, C', HW)
        key = self.key_conv(x).flatten(2)  # (N, C', HW)
        value = self.value_conv(x).flatten(2)  # (N, C, HW)
        energy = torch.matmul(query.transpose(1, 2), key)  # (N, HW queries, HW keys)
        attn = torch.softmax(energy, dim=-1)
        out = torch.matmul(value, attn.transpose(1, 2)).reshape(x.shape)
        return self.gamma * out + x


@register_block("danet_cam", aliases=("channel_self_attention",),
                paper="DANet, CVPR 2019 (arXiv:1809.02983)", year=2019, params="1",
                placement="the segmentation head on the last stage, behind a 3x3 conv + BN + ReLU", export="dynamic")
class ChannelAttention(nn.Module):
    """DANet channel attention module: every channel attends to every other channel; one parameter (``gamma``).

    Args:
        channels: input and output channels (the module has no convolutions; kept for the insert contract).
        init: ``"paper"`` or ``"identity"``; both start with ``gamma = 0``, i.e. as the identity.
    """

    def __init__(self, channels: int, *, init: str = "paper") -> None:
        super().__init__()
        check_init(init)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (N, C, HW)
        energy = torch.matmul(flat, flat.transpose(1, 2))  # (N, C, C)
        # max - energy: the official form; softmax-wise it is softmax(-energy), shifted to stay in range
        energy = energy.amax(dim=-1, keepdim=True) - energy
        attn = torch.softmax(energy, dim=-1)
        out = torch.matmul(attn, flat).reshape(x.shape)
        return self.gamma * out + x
