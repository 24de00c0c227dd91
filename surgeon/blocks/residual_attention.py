"""Residual Attention: the soft mask branch of the Residual Attention Network, as an insert block.

Paper: Wang et al., "Residual Attention Network for Image Classification", CVPR 2017,
https://arxiv.org/abs/1704.06904
Official code: https://github.com/fwang91/residual-attention-network (Caffe, ``imagenet_model/Attention-56-deploy
.prototxt``; ``mask/down_sample``, ``mask/skip``, ``mask/up_sample``, ``mask/linear_*`` layers).

An attention module of the paper is a trunk T(x) and a soft mask M(x) in [0, 1] with the output ``(1 + M) * T``
(attention residual learning). As an insert block the trunk is the existing network: the block takes the trunk's
features ``x`` and returns ``(1 + M(x)) * x``. The mask branch, per level of the official prototxt:

* bottom-up: max-pool (3x3, stride 2), then ``r`` pre-activation bottleneck units (BN → ReLU → 1x1 (C → C/4) →
  BN → ReLU → 3x3 → BN → ReLU → 1x1 (→ C), all convs without bias, plus the input); the innermost level has ``2r``;
* skip (every level but the innermost): one unit on that level's bottom-up output;
* top-down: bilinear upsampling of the deeper result to this level's exact size, plus the skip, then ``r`` units;
* head: upsample to the input's size → BN → ReLU → 1x1 (C → C, no bias) → BN → ReLU → 1x1 (C → C, no bias) →
  sigmoid.

``depth`` is the number of pooling levels. The paper's networks (Attention-56/92, r = 1) use depth 3, 2 and 1 in
stages 1, 2 and 3 (56x56, 28x28 and 14x14 maps, each pooled down to 7x7); the default here is 1, suited to insertion
at any stage and any resolution.

Deviations:

* The paper's module feeds the trunk and the mask branch from the same input, and wraps them in p = 1 pre- and
  post-processing units and t = 2 trunk units; here the trunk is ``x`` itself and the mask branch reads ``x``, and
  the pre/post/trunk units are not part of the block.
* Max-pooling uses padding 1 (floor mode), as the PyTorch ports do, instead of Caffe's unpadded ceil-mode pooling:
  the output size is the same ``ceil(H / 2)`` but works down to 1x1 inputs; window positions are shifted by one.
* Upsampling is ``F.interpolate(..., mode="bilinear", align_corners=True)`` to the exact target size, matching the
  Caffe ``Interp`` layer's corner-aligned sampling; ``align_corners=False`` is an option. Odd sizes and 1x1 work.
* The unit's bottleneck width ``C // 4`` is clamped to at least 1 for narrow layers.
* In train mode, BatchNorm needs more than one value per channel: a batch of 1 fails once a level is 1x1.
* ``init="identity"`` adds one scalar gating ``1 + M`` (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._helpers import IdentityGate, LayerType, check_init, get_act_layer, reduced_channels
from ._registry import register_block

__all__ = ["ResidualAttention", "PreActBottleneck"]


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck unit with an identity shortcut (the paper's residual unit)."""

    def __init__(self, channels: int, hidden: int, act_layer: LayerType = "relu") -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)
        self.act = get_act_layer(act_layer)()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.bn1(x)))
        out = self.conv2(self.act(self.bn2(out)))
        out = self.conv3(self.act(self.bn3(out)))
        return x + out


def _upsample_to(x: torch.Tensor, reference: torch.Tensor, align_corners: bool) -> torch.Tensor:
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=align_corners)


class MaskLevel(nn.Module):
    """One pooling level of the mask branch; holds the deeper levels, so the branch is a chain of these."""

    def __init__(
        self, channels: int, hidden: int, depth: int, num_units: int, act_layer: LayerType, align_corners: bool
    ) -> None:
        super().__init__()

        def units(count: int) -> nn.Sequential:
            return nn.Sequential(*(PreActBottleneck(channels, hidden, act_layer) for _ in range(count)))

        self.align_corners = align_corners
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        innermost = depth == 1
        self.down = units(2 * num_units if innermost else num_units)
        self.inner = None if innermost else MaskLevel(channels, hidden, depth - 1, num_units, act_layer, align_corners)
        self.skip = None if innermost else PreActBottleneck(channels, hidden, act_layer)
        self.up = None if innermost else units(num_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.down(self.pool(x))
        if self.inner is not None:
            deeper = _upsample_to(self.inner(out), out, self.align_corners)
            out = self.up(deeper + self.skip(out))
        return out


@register_block("residual_attention", aliases=("resatt",),
                paper="Residual Attention Network, CVPR 2017 (arXiv:1704.06904)", year=2017,
                params="4.125C² + 10C (depth 1, one unit per level)",
                placement="between stages: attention modules in stages 1-3 of Attention-56/92", export="dynamic")
class ResidualAttention(nn.Module):
    """Residual Attention soft mask branch: ``(1 + M(x)) * x`` with a bottom-up/top-down mask ``M``.

    Args:
        channels: input and output channels.
        depth: number of max-pooling levels of the mask branch (paper: 3, 2, 1 in stages 1-3).
        num_units: residual units per level, r (1 in the paper; the innermost level has 2r).
        rd_ratio: bottleneck ratio of the residual units (1/4 in the paper).
        rd_channels: bottleneck width of the residual units; overrides ``rd_ratio``.
        align_corners: corner-aligned bilinear upsampling (True: Caffe's ``Interp`` layer).
        act_layer: activation of the units and the head.
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(
        self,
        channels: int,
        depth: int = 1,
        num_units: int = 1,
        rd_ratio: float = 1 / 4,
        rd_channels: int | None = None,
        align_corners: bool = True,
        act_layer: LayerType = "relu",
        init: str = "paper",
    ) -> None:
        super().__init__()
        if depth < 1 or num_units < 1:
            raise ValueError(f"depth and num_units must be >= 1, got {depth} and {num_units}")
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        act = get_act_layer(act_layer)
        self.align_corners = align_corners
        self.mask = MaskLevel(channels, hidden, depth, num_units, act_layer, align_corners)
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels),
            act(),
            nn.Conv2d(channels, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
            act(),
            nn.Conv2d(channels, channels, kernel_size=1, bias=False),
        )
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.sigmoid(self.head(_upsample_to(self.mask(x), x, self.align_corners)))
        gate = 1 + mask
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        return x * gate
