"""Efficient Channel Attention (ECA).

Paper: Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", CVPR 2020,
https://arxiv.org/abs/1910.03151
Official code: https://github.com/BangguWu/ECANet (``models/eca_module.py``).

Global average pool → Conv1d(1, 1, k, no bias) across the channel vector → sigmoid → channel-wise scale.
The kernel size is the paper's adaptive rule ``k = |log2(C)/γ + b/γ|_odd`` with γ = 2, b = 1, computed as
``t = int(|(log2 C + b) / γ|)``, ``k = t`` if odd else ``t + 1``; ``k_size`` overrides it.

Deviations: the official ResNet code does not use the adaptive rule (it passes ``k_size=[3, 3, 3, 3]``, and the
released ECA-Net50 weights use 3, 5, 5, 7 per stage); pass ``k_size`` to reproduce those (preset
``eca_resnet_k3557``). ``init="identity"`` adds one scalar (see :class:`IdentityGate`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._helpers import IdentityGate, LayerType, check_init, get_act_layer, mean_pool
from ._registry import register_block

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """The paper's adaptive 1-D kernel size for ``channels`` (always odd, at least 1)."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


@register_block("eca", paper="ECA-Net, CVPR 2020 (arXiv:1910.03151)", year=2020,
                params="k (the adaptive kernel size: 3 at C = 64, 5 at C = 256)",
                placement="residual branch after bn3, before the addition", export="dynamic")
class EfficientChannelAttention(nn.Module):
    """Efficient Channel Attention: a 1-D convolution across pooled channels instead of SE's MLP.

    Args:
        channels: input and output channels.
        k_size: odd kernel size of the 1-D convolution; ``None`` uses the adaptive rule.
        gamma: γ of the adaptive rule.
        beta: b of the adaptive rule.
        gate_layer: gate activation.
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(
        self,
        channels: int,
        k_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
        gate_layer: LayerType = "sigmoid",
        init: str = "paper",
    ) -> None:
        super().__init__()
        if k_size is None:
            k_size = eca_kernel_size(channels, gamma, beta)
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"k_size must be a positive odd integer, got {k_size}")
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.gate = get_act_layer(gate_layer)()
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = mean_pool(x, (2, 3)).unsqueeze(1)  # (N, 1, C): channels as the 1-D sequence
        gate = self.gate(self.conv(pooled)).transpose(1, 2).unsqueeze(-1)  # (N, C, 1, 1)
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        return x * gate
