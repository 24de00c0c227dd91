"""BoTNet multi-head self-attention (MHSA) with 2-D relative position logits.

Paper: Srinivas et al., "Bottleneck Transformers for Visual Recognition", CVPR 2021, https://arxiv.org/abs/2101.11605
Reference code: the authors' TensorFlow gist linked from the paper
(https://gist.github.com/aravindsrinivas/56359b79f0ce4449bcb04ab4b56a57a2: ``MHSA``, ``relpos_self_attention``,
``relative_logits``); checked against timm's ``BottleneckAttn`` (``timm/layers/bottleneck_attn.py``).

q, k, v: 1x1 projections C → C without bias (one conv C → 3C here, same parameters), split into ``num_heads``
heads of ``C / num_heads`` channels (4 heads). The query is scaled by ``dim_head ** -0.5`` *before* both the
content logits ``q·k`` and the relative logits, so both are scaled, as in the gist. The relative logit of query
(h, w) and key (h', w') is ``q·(r_height[h' - h + H - 1] + r_width[w' - w + W - 1])`` with tables of shape
(2H - 1, dim_head) and (2W - 1, dim_head) shared by all heads. Softmax over the H·W keys, weighted sum of v, heads
folded back to C channels. Weight init as in the gist: projections N(0, 0.01²), tables N(0, 1 / dim_head).

Insertion: in BoTNet this layer *replaces* the 3x3 conv of the c5 bottlenecks and is followed by BN → ReLU. As an
insert block, ``init="paper"`` returns exactly that layer's output, ``attn(x)``, which discards the features the
pretrained network had at the site. ``init="identity"`` adds an output projection (1x1 conv C → C, no bias,
zero-initialised) and a residual, ``x + proj(attn(x))``: exactly ``x`` at creation, so a patched pretrained network
keeps its function and learns to use the attention.

Deviations:
    * Any input size works. The tables are built for ``feat_size`` (14 when not given) and, when the input's H or W
      differs, linearly resized (``align_corners=False``, which keeps the zero offset at the centre) to 2H - 1 /
      2W - 1 rows: the offsets are stretched, not extended. The gist and timm require H, W == feat_size. The resize
      is written out (:func:`resize_rows`) rather than a call of ``F.interpolate``, whose output size an ONNX export
      would fix: it equals ``F.interpolate`` within float32 rounding, and leaves a table of the right length as is.
    * ``num_heads`` must divide C: it is lowered to the largest divisor of C that is <= ``num_heads``.
    * Tables start at std dim_head ** -0.5; the gist passes that value as the mean by mistake (its comment says so).
    * timm's ``BottleneckAttn`` scales only ``q·k`` by default; it equals this block with ``scale_pos_embed=True``.
    * The ``stride=2`` average pool of BoTNet's first c5 block is left out: insert blocks keep the shape.
    * ``init="identity"`` adds the output projection (C² parameters) and the residual; ``init="paper"`` adds none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._helpers import check_init
from ._registry import register_block

__all__ = ["BottleneckMHSA", "DEFAULT_FEAT_SIZE", "relative_position_table", "resize_rows"]

DEFAULT_FEAT_SIZE = 14  # BoTNet-50's c5 attention runs on 14x14 maps at 224x224 input


def resize_rows(table: torch.Tensor, rows: int) -> torch.Tensor:
    """The table linearly resized to ``rows`` rows: ``F.interpolate(mode="linear", align_corners=False)`` written out.

    Written with index arithmetic and gathers so that ``rows`` may stay symbolic when exported (``F.interpolate``'s
    output size is fixed in an ONNX graph); the same formula as PyTorch's kernel, and the table itself, exactly, when
    ``rows`` is its own length (every weight of the next row is then 0). Otherwise within the float32 rounding of
    the sampling positions, which ``F.interpolate``'s kernel computes in another order (1e-5 relative at most).
    """
    length = table.shape[0]
    positions = torch.arange(rows, device=table.device, dtype=torch.float32)
    source = ((positions + 0.5) * (length / rows) - 0.5).clamp(min=0)
    low = source.long()  # floor: source >= 0
    high = (low + 1).clamp(max=length - 1)
    weight = (source - low).unsqueeze(1).to(table.dtype)
    return table[low] * (1 - weight) + table[high] * weight


@torch.fx.wrap
def relative_position_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Expand a (2L - 1, dim) table of offset embeddings into the (size, size, dim) embeddings of every pair.

    Entry ``[i, j]`` holds the embedding of the offset ``j - i`` (key minus query), stored at row ``j - i + L - 1``.
    A table built for another length is linearly resized to ``2 * size - 1`` rows first (:func:`resize_rows`, which
    leaves a table of the right length as it is, without a branch on the size that an export would freeze). Wrapped
    for torch.fx (a leaf call); dynamo and ONNX trace through it.
    """
    table = resize_rows(table, 2 * size - 1)
    pos = torch.arange(size, device=table.device)
    return table[pos.unsqueeze(0) - pos.unsqueeze(1) + (size - 1)]


def _largest_divisor_at_most(channels: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(limit, channels)) + 1) if channels % d == 0)


@register_block("mhsa", aliases=("botnet",), site_args=("feat_size",),
                paper="Bottleneck Transformers for Visual Recognition, CVPR 2021 (arXiv:2101.11605)", year=2021,
                params="3C² + 13.5C (4 heads, 14x14 tables; 3C² + (H + W - 1)C/2 for H x W)",
                placement="replaces the 3x3 conv in the last stage's bottlenecks", export="dynamic")
class BottleneckMHSA(nn.Module):
    """BoTNet multi-head self-attention over all H·W positions with 2-D relative position logits.

    Args:
        channels: input and output channels.
        num_heads: attention heads (4 in the paper); lowered to the largest divisor of ``channels`` not above it.
        feat_size: (H, W) or one int the relative tables are built for; 14 when None. Other sizes still work.
        qkv_bias: add a bias to the q, k, v projections (the gist and timm have none).
        init: ``"paper"`` returns the attention output itself (BoTNet's layer); ``"identity"`` returns
            ``x + proj(attn(x))`` with a zero-initialised projection, exactly ``x`` at creation.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        feat_size: int | tuple[int, int] | None = None,
        qkv_bias: bool = False,
        init: str = "paper",
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if feat_size is None:
            feat_size = DEFAULT_FEAT_SIZE
        height, width = (feat_size, feat_size) if isinstance(feat_size, int) else tuple(feat_size)
        if height < 1 or width < 1:
            raise ValueError(f"feat_size must be >= 1, got {feat_size!r}")
        self.feat_size = (int(height), int(width))
        self.num_heads = _largest_divisor_at_most(channels, num_heads)
        self.dim_head = channels // self.num_heads
        self.scale = self.dim_head ** -0.5

        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1, bias=qkv_bias)
        self.rel_height = nn.Parameter(torch.empty(2 * self.feat_size[0] - 1, self.dim_head))
        self.rel_width = nn.Parameter(torch.empty(2 * self.feat_size[1] - 1, self.dim_head))
        self.proj = nn.Conv2d(channels, channels, kernel_size=1, bias=False) if check_init(init) == "identity" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.qkv.weight, std=0.01)
        if self.qkv.bias is not None:
            nn.init.zeros_(self.qkv.bias)
        nn.init.normal_(self.rel_height, std=self.scale)
        nn.init.normal_(self.rel_width, std=self.scale)
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)

    def relative_logits(self, q: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Relative position logits (N, heads, H·W, H·W) of (already scaled) queries q (N, heads, H·W, dim_head)."""
        q = q.reshape(q.shape[0], q.shape[1], height, width, q.shape[-1])
        # contracting against the per-pair tables costs H (or W) per query, half of the gist's pad-and-shift trick
        logits_h = torch.einsum("bnhwd,hkd->bnhwk", q, relative_position_table(self.rel_height, height))
        logits_w = torch.einsum("bnhwd,wkd->bnhwk", q, relative_position_table(self.rel_width, width))
        logits = logits_h.unsqueeze(-1) + logits_w.unsqueeze(-2)  # (N, heads, H, W, H', W')
        return logits.reshape(q.shape[0], q.shape[1], height * width, height * width)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """BoTNet's MHSA layer: (N, C, H, W) → (N, C, H, W)."""
        batch, channels, height, width = x.shape
        qkv = self.qkv(x).reshape(batch, 3, self.num_heads, self.dim_head, height * width)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (N, heads, H·W, dim_head)
        q = q * self.scale
        bias = self.relative_logits(q, height, width).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        return out.transpose(-1, -2).reshape(batch, channels, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attention(x)
        if self.proj is not None:
            out = x + self.proj(out)
        return out
