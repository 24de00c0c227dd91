"""Criss-Cross Attention (CCNet) and its recurrent form (RCCA).

Paper: Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation", ICCV 2019,
https://arxiv.org/abs/1811.11721
Official code: https://github.com/speedinghzl/CCNet (``cc_attention/functions.py``: ``CrissCrossAttention``, a CUDA
extension on master and plain PyTorch on the ``pure-python`` branch; ``networks/ccnet.py``: ``RCCAModule``).

Query and key 1x1 convolutions C → C/8 (bias), value 1x1 convolution C → C (bias). Each position attends to the
H + W − 1 positions of its own column and row: the column energies ``q(h, w) · k(h', w)`` and the row energies
``q(h, w) · k(h, w')`` are concatenated and go through one joint softmax, the column branch's diagonal
(``h' = h``, the position itself, which the row branch holds already) being masked to −inf. The output is
``gamma * (out_col + out_row) + x`` with a learnable scalar ``gamma`` initialised to 0. RCCA applies the same module
(shared weights) ``recurrence`` times so that every position reaches every other one; the official scripts run
``R = 2``.

Both init modes build the same block (``gamma = 0``: the exact identity at creation); submodule and parameter
names match the official ``CrissCrossAttention``, so its state dicts load unchanged.

Deviations:

* The diagonal mask is a boolean ``arange == arange`` comparison built on the input's device and applied with
  ``masked_fill`` (``Range``/``Equal``/``Where`` in ONNX, unlike a boolean ``EyeLike`` that onnxruntime lacks); the
  official pure-PyTorch ``INF()`` adds a ``-inf`` diagonal created with ``.cuda()`` (GPU only). Same result.
* The recurrence lives inside the block (``recurrence``, default 2); officially the head's forward loops over
  the module with a run-time ``recurrence`` argument (``train.py`` default 1, the published runs 2).
* The reduced width is clamped to at least 1 (``C // 8`` is 0 below 8 channels); ``rd_ratio`` / ``rd_channels`` /
  ``rd_divisor`` change it (the default reproduces ``C // 8``).
* The paper's head wraps RCCA in 3x3 conv + BN layers and a concatenation with the input; those belong to the
  placement, not to this block.
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import check_init, reduced_channels
from ._registry import register_block

__all__ = ["CrissCrossAttention"]


@register_block("ccnet", aliases=("criss_cross", "rcca"), paper="CCNet, ICCV 2019 (arXiv:1811.11721)", year=2019,
                params="1.25C² + 1.25C + 1", placement="the segmentation head on the last stage", export="dynamic")
class CrissCrossAttention(nn.Module):
    """Criss-cross attention over each position's row and column, applied ``recurrence`` times with shared weights.

    Cost per pass grows with H·W·(H + W), far below the (H·W)² of full position attention.

    Args:
        channels: input and output channels.
        rd_ratio: width of query and key relative to ``channels`` (1/8 in the official code).
        rd_channels: width of query and key; overrides ``rd_ratio``.
        rd_divisor: round the query/key width to a multiple of this (1: truncate, as the official code).
        recurrence: number of passes through the shared module (RCCA's R; 1 is plain criss-cross attention).
        init: ``"paper"`` or ``"identity"``; both start with ``gamma = 0``, i.e. as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        recurrence: int = 2,
        init: str = "paper",
    ) -> None:
        super().__init__()
        check_init(init)
        if recurrence < 1:
            raise ValueError(f"recurrence must be >= 1, got {recurrence}")
        qk_channels = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.recurrence = int(recurrence)
        self.query_conv = nn.Conv2d(channels, qk_channels, kernel_size=1, bias=True)
        self.key_conv = nn.Conv2d(channels, qk_channels, kernel_size=1, bias=True)
        self.value_conv = nn.Conv2d(channels, channels, kernel_size=1, bias=True)
        self.gamma = nn.Parameter(torch.zeros(1))

    def criss_cross(self, x: torch.Tensor) -> torch.Tensor:
        """One pass of criss-cross attention (no recurrence)."""
        height, width = x.shape[-2], x.shape[-1]
        query, key, value = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        # energy_col[n, h, w, g] = q(h, w) . k(g, w);  energy_row[n, h, w, v] = q(h, w) . k(h, v)
        energy_col = torch.einsum("nchw,ncgw->nhwg", query, key)
        energy_row = torch.einsum("nchw,nchv->nhwv", query, key)
        # the position itself is counted once, in the row branch
        rows = torch.arange(height, device=x.device)
        self_in_col = rows.view(-1, 1, 1) == rows.view(1, 1, -1)  # (H, 1, H) over (h, w, g): g == h
        energy_col = energy_col.masked_fill(self_in_col, float("-inf"))
        attn = torch.softmax(torch.cat((energy_col, energy_row), dim=-1), dim=-1)
        attn_col, attn_row = torch.split(attn, [height, width], dim=-1)
        out = torch.einsum("nhwg,ncgw->nchw", attn_col, value) + torch.einsum("nhwv,nchv->nchw", attn_row, value)
        # x first: the result takes x's memory layout, not the einsum's permuted one, so gamma = 0 is the identity
        # to the bit for what follows (a pooling over a permuted layout sums in another order)
        return x + self.gamma * out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):  # a constant count: unrolled by fx, dynamo and ONNX export
            x = self.criss_cross(x)
        return x

    def extra_repr(self) -> str:
        return f"recurrence={self.recurrence}"
