"""Global Context block (GC).

Paper: Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", ICCV Workshops 2019,
https://arxiv.org/abs/1904.11492
Official code: https://github.com/xvjiarui/GCNet (``mmdet/ops/gcb/context_block.py``, ``ContextBlock``; the same
class lives on in mmdetection/mmcv).

Context modelling: ``att`` pooling — a 1x1 conv (C → 1, bias), softmax over the H·W positions, and the
softmax-weighted sum of the features — or plain average pooling (``avg``). Transform: 1x1 conv (C → P, bias) →
LayerNorm over (P, 1, 1) → ReLU → 1x1 conv (P → C, bias), with ``P = int(C * ratio)`` and ratio 1/16 (the paper's
r16; r4 is ``rd_ratio=1/4``). Fusion: ``channel_add`` (official default) adds the transformed context to every
position; ``channel_mul`` scales by its sigmoid; ``both`` applies mul, then add (the official order). Initialisation
as the official ``reset_parameters``: ``conv_mask`` kaiming-normal (fan_in, ReLU gain) with zero bias, the last conv
of each transform zero (weight and bias), everything else PyTorch's default. Submodule names and the
``nn.Sequential`` layout follow the official class, so official GC weights load with ``load_state_dict``.

Deviations:
    * The official ``fusion_types`` tuple is a single string option ``fusion`` (``"channel_add"``,
      ``"channel_mul"`` or ``"both"``) so it can be set from YAML or the command line.
    * ``P`` is clamped to at least 1 (the official ``int(C * ratio)`` gives 0 for C < 16 at r16).
    * With ``channel_add`` the official zero-init already makes the block an exact identity, in both init modes.
      With ``channel_mul`` it does not (``sigmoid(0) = 0.5`` halves the features), so ``init="identity"`` wraps the
      mul gate in :class:`IdentityGate` (one extra scalar), making every fusion an exact identity at creation.
    * timm's ``GlobalContext`` differs in its defaults (``channel_mul`` only, ratio 1/8, the width rounded rather
      than truncated), uses LayerNorm eps 1e-6 instead of PyTorch's 1e-5, and does not zero the last conv's bias.
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, LayerType, check_init, get_act_layer, mean_pool, reduced_channels
from ._registry import register_block

__all__ = ["GlobalContext"]

_FUSIONS = {"channel_add": (True, False), "channel_mul": (False, True), "both": (True, True)}


def _transform(channels: int, hidden: int, act_layer: LayerType) -> nn.Sequential:
    """The bottleneck transform; its index layout (0 conv, 1 norm, 2 act, 3 conv) is the official one."""
    last = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(channels, hidden, kernel_size=1, bias=True),
        nn.LayerNorm([hidden, 1, 1]),
        get_act_layer(act_layer)(),
        last,
    )


@register_block("gc", aliases=("global_context",),
                paper="GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond, ICCVW 2019 "
                      "(arXiv:1904.11492)", year=2019, params="2Ch + 3h + 2C + 1, h = C/16",
                placement="residual branch after conv3/norm3, before the addition, in stages c3-c5", export="dynamic")
class GlobalContext(nn.Module):
    """Global Context block: one query-independent attention map pools a global context added to every position.

    Args:
        channels: input and output channels.
        rd_ratio: width ratio of the transform bottleneck (1/16 in the paper's r16 models, 1/4 in r4).
        rd_channels: bottleneck width; overrides ``rd_ratio``.
        rd_divisor: round the bottleneck width to a multiple of this (1: truncate, as the official code).
        pooling_type: ``"att"`` (attention pooling, official default) or ``"avg"`` (global average pooling).
        fusion: ``"channel_add"`` (official default), ``"channel_mul"``, or ``"both"`` (mul, then add).
        act_layer: activation inside the transform.
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function (differs from
            ``"paper"`` only when ``fusion`` includes ``channel_mul``).
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        pooling_type: str = "att",
        fusion: str = "channel_add",
        act_layer: LayerType = "relu",
        init: str = "paper",
    ) -> None:
        super().__init__()
        if pooling_type not in ("att", "avg"):
            raise ValueError(f"pooling_type must be 'att' or 'avg', got {pooling_type!r}")
        if fusion not in _FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(_FUSIONS)}, got {fusion!r}")
        identity = check_init(init) == "identity"
        hidden = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        use_add, use_mul = _FUSIONS[fusion]

        self.pooling_type = pooling_type
        self.fusion = fusion
        if pooling_type == "att":
            self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1, bias=True)
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        else:
            self.conv_mask = None
        self.channel_add_conv = _transform(channels, hidden, act_layer) if use_add else None
        self.channel_mul_conv = _transform(channels, hidden, act_layer) if use_mul else None
        self.identity_gate = IdentityGate() if identity and use_mul else None

    def spatial_pool(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C, 1, 1) global context of ``x``."""
        if self.conv_mask is None:
            return mean_pool(x, (2, 3), keepdim=True)
        flat = x.flatten(2)  # (N, C, H*W)
        if type(self.conv_mask) is nn.Conv2d:
            # the 1x1 conv to one channel as a batched matrix product: the same values, and half the cost of the
            # convolution forward and backward on CPU (benchmarks/blocks.py)
            mask = self.conv_mask.weight.view(1, 1, -1).expand(x.shape[0], -1, -1)  # (N, 1, C)
            logits = torch.baddbmm(self.conv_mask.bias.view(1, 1, 1), mask, flat)  # (N, 1, H*W)
        else:  # a module the user swapped in (QAT, adapters): call it
            logits = self.conv_mask(x).flatten(2)
        weights = logits.softmax(dim=-1)  # sums to 1 over positions
        context = torch.bmm(flat, weights.transpose(1, 2))  # (N, C, 1)
        return context.unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.spatial_pool(x)
        out = x
        if self.channel_mul_conv is not None:
            gate = torch.sigmoid(self.channel_mul_conv(context))
            if self.identity_gate is not None:
                gate = self.identity_gate(gate)
            out = out * gate
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out
