"""Squeeze-and-Excitation (SE).

Paper: Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507
Official code: https://github.com/hujie-frank/SENet (``SE-ResNet-50.prototxt``).

Global average pool → FC (C → C/r, bias) → ReLU → FC (C/r → C, bias) → sigmoid → channel-wise scale, with
r = 16. The two fully connected layers are 1x1 convolutions here (same parameters, no reshapes); the
reduced width is ``C // r`` as in the official networks, clamped to at least 1.

Deviations: none with ``init="paper"``. ``init="identity"`` adds one scalar (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, LayerType, check_init, get_act_layer, mean_pool, reduced_channels
from ._registry import register_block

__all__ = ["SqueezeExcite"]


@register_block("se", paper="Squeeze-and-Excitation Networks, CVPR 2018 (arXiv:1709.01507)", year=2018,
                params="2Ch + h + C, h = C/16",
                placement="residual branch after the last BN, before the identity addition", export="dynamic")
class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation channel attention.

    Args:
        channels: input and output channels.
        rd_ratio: reduction ratio of the hidden layer (1/16 in the paper).
        rd_channels: hidden width; overrides ``rd_ratio``.
        rd_divisor: round the hidden width to a multiple of this (1: truncate, as the official code).
        act_layer: hidden activation.
        gate_layer: gate activation.
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        act_layer: LayerType = "relu",
        gate_layer: LayerType = "sigmoid",
        init: str = "paper",
    ) -> None:
        super().__init__()
        hidden = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.act = get_act_layer(act_layer)()
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)
        self.gate = get_act_layer(gate_layer)()
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = mean_pool(x, (2, 3), keepdim=True)
        gate = self.gate(self.fc2(self.act(self.fc1(squeezed))))
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        return x * gate
