"""Triplet Attention.

Paper: Misra et al., "Rotate to Attend: Convolutional Triplet Attention Module", WACV 2021,
https://arxiv.org/abs/2010.03045
Official code: https://github.com/landskape-ai/triplet-attention (``MODELS/triplet_attention.py``; the
root ``triplet_attention.py`` is the same module with shorter names: ``cw``, ``hc``, ``hw``).

Three branches, each a CBAM-style spatial gate on a different plane of the (C, H, W) tensor: Z-pool (channel
pool into a 2-channel map ordered **[max, mean]**) → 7x7 conv (2 → 1, no bias) → BatchNorm (eps 1e-5, momentum
0.01) → sigmoid.

* ``cw``: the tensor rotated to (N, H, C, W), pooled across H: a gate over the (C, W) plane.
* ``hc``: the tensor rotated to (N, W, H, C), pooled across W: a gate over the (H, C) plane.
* ``hw``: the plain spatial gate, pooled across C: a gate over the (H, W) plane (left out with ``no_spatial``).

The three gated tensors are averaged (1/3 each, or 1/2 with ``no_spatial``). The paper inserts the module in the
residual branch after the last BN, before the identity addition (official ``MODELS/resnet.py``).

Deviations:

* The official code gates the rotated tensor in each branch, rotates it back (``permute().contiguous()`` copies)
  and averages three full-size products. Here only the small gates are rotated (views, no copies) and the output is
  ``x * mean(gates)``, broadcast from (N, C, 1, W), (N, C, H, 1) and (N, 1, H, W); mathematically the same, equal
  up to float rounding. Every gate convolution sees its plane in the official orientation, so official weights
  map one to one (``cw.conv.conv.weight`` → ``cw.conv.weight``, ``cw.conv.bn.*`` → ``cw.bn.*``, likewise ``hc``
  and ``hw``).
* ``init="identity"`` adds one scalar shared by the three gates (see :class:`IdentityGate`); each gate is blended
  towards 1, which is the same as blending their average.
* The Z-pool's max is ``torch.max(x, 1)[0]`` in training mode, as the official code, and ``amax`` in eval mode
  (the same values without computing indices; a gradient taken in eval mode is split over exact ties).
* In train mode a branch whose plane is 1x1 with a batch of 1 fails in BatchNorm, as the official module does.
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, check_init
from ._registry import register_block
from .cbam import SpatialGate

__all__ = ["TripletAttention"]


@register_block("triplet", aliases=("triplet_attention",), paper="Rotate to Attend (Triplet Attention), WACV 2021 "
                "(arXiv:2010.03045)", year=2021, params="300",
                placement="residual branch after the last BN, before the identity addition", export="dynamic")
class TripletAttention(nn.Module):
    """Triplet Attention: cross-dimension gates over the (C, W), (H, C) and (H, W) planes, averaged.

    Args:
        channels: input and output channels (the block's size does not depend on it).
        kernel_size: kernel of each branch's convolution (7 in the paper).
        pool_order: order of the Z-pool channels, ``"max_mean"`` (official) or ``"mean_max"``.
        no_spatial: leave out the (H, W) branch and average the other two (official ``no_spatial``).
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        pool_order: str = "max_mean",
        no_spatial: bool = False,
        init: str = "paper",
    ) -> None:
        super().__init__()
        self.cw = SpatialGate(kernel_size, pool_order)
        self.hc = SpatialGate(kernel_size, pool_order)
        self.hw = None if no_spatial else SpatialGate(kernel_size, pool_order)
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def _blend(self, gate: torch.Tensor) -> torch.Tensor:
        return gate if self.identity_gate is None else self.identity_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_cw = self._blend(self.cw(x.transpose(1, 2))).transpose(1, 2)  # (N, 1, C, W) -> (N, C, 1, W)
        gate_hc = self._blend(self.hc(x.permute(0, 3, 2, 1))).permute(0, 3, 2, 1)  # (N, 1, H, C) -> (N, C, H, 1)
        if self.hw is None:
            return x * ((gate_cw + gate_hc) / 2)
        gate_hw = self._blend(self.hw(x))  # (N, 1, H, W)
        return x * ((gate_cw + gate_hc + gate_hw) / 3)
