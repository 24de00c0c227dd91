"""Spatial and Channel Synergistic Attention (SCSA).

Paper: Si et al., "SCSA: Exploring the Synergistic Effects Between Spatial and Channel Attention", 2024,
https://arxiv.org/abs/2407.05128
Official code: https://github.com/HZAI-ZJNU/SCSA (``mmpretrain/models/attentions/SCSA.py``, class ``SCSA``).

Shareable multi-semantic spatial attention: average over W (an H-long strip per channel) and over H (a W-long
strip); each strip split into 4 groups of C/4 channels, one depthwise Conv1d per group with kernels 3, 5, 7, 9 (bias,
shared by both strips); a GroupNorm(4, C) per strip, sigmoid, ``x · a_h · a_w``. Progressive channel self-attention
on the gated features: 7x7 average pool with stride 7, GroupNorm(1, C), depthwise 1x1 q, k, v (no bias), per head
``softmax(q kᵀ / √(C/heads)) v`` over the pooled positions (a (C/heads)² map), its spatial mean, sigmoid, and the
channel gate. ``head_num`` 1 in the official configurations. Parameters: 16C (C=64: 1,024). The paper puts it in
the ResNet Bottleneck after conv2/BN/ReLU, before conv3 (ResNet-50: +60,416).

Deviations: none in the numbers with ``init="paper"`` and the official defaults (``avg_pool`` down-sampling,
attention dropout 0, sigmoid gates). The official einops ``rearrange`` with ``h=int(h_)`` bakes the pooled size into
an exported graph; here the heads are split with ``reshape`` and -1, so ONNX export keeps H, W dynamic. The official
``window_size=-1`` (a global pool) is kept; its ``recombination``/``max_pool`` modes and softmax gates are not offered.
The official code asserts C // 4 (not C % 4) and fails later on other C; C % 4 ≠ 0, C % ``head_num`` ≠ 0 and a
1-long strip with C = 4 (GroupNorm over single values) are declared misfits (:func:`scsa_fits`), answered before any
model is touched, with the option that fits where one does. The official ``AvgPool2d(7, 7)`` fails on maps smaller
than 7x7 (a ResNet-50 fed 96x128 has 3x4 at layer4); here the window is clipped to the map (as SCConv's pool), so such
a map pools to one position per axis it is short on; from 7x7 up the values are the official ones, bit for bit.
``init="identity"`` adds one scalar shared by the three gates (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import ClippedAvgPool, IdentityGate, check_init, mean_pool
from ._registry import Misfit, register_block

__all__ = ["SCSA", "scsa_fits"]

GROUP_KERNEL_SIZES = (3, 5, 7, 9)


def scsa_fits(channels: int, feat_size: tuple[int, int] | None = None, *, head_num: int = 1, window_size: int = 7,
              **_: object) -> Misfit | None:
    """SCSA splits C into 4 groups and ``head_num`` heads (its pooling window is clipped to smaller maps)."""
    if channels % 4:
        return Misfit(f"{channels} channels are not divisible by 4 (SCSA's four kernel groups)")
    if head_num < 1 or channels % head_num:
        fit = max(d for d in range(1, min(max(head_num, 1), channels) + 1) if channels % d == 0)
        return Misfit(f"{channels} channels are not divisible by head_num={head_num}", {"head_num": fit})
    if feat_size is not None and channels // 4 * min(feat_size) == 1:
        return Misfit(f"a {feat_size[0]}x{feat_size[1]} site gives a 1-long strip: GroupNorm(4, {channels}) would "
                      "normalise single values")
    if window_size != -1 and window_size < 1:
        return Misfit(f"window_size must be -1 (global pool) or >= 1, got {window_size}", {"window_size": -1})
    return None


@register_block("scsa", paper="SCSA, 2024 (arXiv:2407.05128)", fits=scsa_fits, year=2024, params="16C",
                placement="ResNet bottleneck after conv2/BN/ReLU, before conv3 (ResNet-50: +60,416)", export="dynamic")
class SCSA(nn.Module):
    """Spatial and Channel Synergistic Attention: multi-kernel strip gates, then a channel gate from self-attention.

    Args:
        channels: input and output channels; a multiple of 4 and of ``head_num``.
        head_num: attention heads of the channel self-attention (1 in the official configurations).
        window_size: kernel and stride of the average pool before the self-attention (7), clipped to smaller maps;
            -1: a global pool.
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(self, channels: int, head_num: int = 1, window_size: int = 7, init: str = "paper") -> None:
        super().__init__()
        misfit = scsa_fits(channels, head_num=head_num, window_size=window_size)
        if misfit is not None:
            raise ValueError(f"{misfit.reason} ({misfit.hint()})")
        self.head_num = head_num
        self.scale = (channels // head_num) ** -0.5
        group = channels // 4
        self.local_dwc, self.global_dwc_s, self.global_dwc_m, self.global_dwc_l = (
            nn.Conv1d(group, group, k, padding=k // 2, groups=group) for k in GROUP_KERNEL_SIZES)
        self.norm_h = nn.GroupNorm(4, channels)
        self.norm_w = nn.GroupNorm(4, channels)
        self.pool = nn.AdaptiveAvgPool2d(1) if window_size == -1 else ClippedAvgPool(window_size)
        self.norm = nn.GroupNorm(1, channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1, groups=channels, bias=False) for _ in range(3))
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def _strip_gate(self, strip: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
        """(N, C, L) strip → (N, C, L) gate: a depthwise Conv1d per channel quarter, GroupNorm, sigmoid."""
        s0, s1, s2, s3 = strip.chunk(4, dim=1)
        convolved = torch.cat((self.local_dwc(s0), self.global_dwc_s(s1), self.global_dwc_m(s2),
                               self.global_dwc_l(s3)), dim=1)
        return torch.sigmoid(norm(convolved))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        a_h = self._strip_gate(mean_pool(x, (3,)), self.norm_h).unsqueeze(3)  # (N, C, H, 1)
        a_w = self._strip_gate(mean_pool(x, (2,)), self.norm_w).unsqueeze(2)  # (N, C, 1, W)
        if self.identity_gate is not None:
            a_h, a_w = self.identity_gate(a_h), self.identity_gate(a_w)
        x = x * a_h * a_w

        y = self.norm(self.pool(x))
        # (N, heads, C/heads, positions): reshape with -1, so no pooled size is baked into an exported graph
        shape = (batch, self.head_num, channels // self.head_num, -1)
        q, k, v = self.q(y).reshape(shape), self.k(y).reshape(shape), self.v(y).reshape(shape)
        attn = (torch.matmul(q, k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = torch.matmul(attn, v)  # (N, heads, C/heads, positions)
        gate = torch.sigmoid(out.mean(-1).reshape(batch, channels, 1, 1))
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        return x * gate
