"""SimAM: a simple, parameter-free attention module.

Paper: Yang et al., "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks", ICML 2021,
https://proceedings.mlr.press/v139/yang21o.html
Official code: https://github.com/ZjjConan/SimAM (``networks/attentions/simam_module.py``; the same module is in
``mmdetection/mmdet/models/backbones/attentions/simam_module.py``).

Each activation gets an inverse energy from how far it stands out of its channel's spatial distribution::

    d = (x - mean_hw(x))^2
    y = d / (4 * (sum_hw(d) / n + lambda)) + 0.5,   n = H * W - 1
    out = x * sigmoid(y)

with lambda = 1e-4. There are no learnable parameters. The official ResNets put SimAM right after the 3x3 conv
of each block (before its BatchNorm).

Deviations:

* At H = W = 1 the official ``n = H * W - 1`` is 0 and ``0 / 0`` makes the output NaN. Here ``n`` is clamped to
  at least 1; at 1x1 the deviation ``d`` is 0, so the gate is ``sigmoid(0.5)``, the same gate the official
  formula gives any constant map. Identical to the official formula for H * W >= 2.
* ``init="identity"`` adds one scalar, the block's only parameter (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, check_init, mean_pool
from ._registry import register_block

__all__ = ["SimAM", "simam_denominator_count"]


def simam_denominator_count(height: int, width: int) -> int | torch.Tensor:
    """The official ``n = H * W - 1``, clamped to at least 1 so that a 1x1 map does not divide by zero.

    ``torch.sym_max`` instead of ``max`` keeps the clamp symbolic under torch.fx, dynamo and ``torch.export``
    (no branch on a shape); the TorchScript ONNX exporter traces sizes as tensors, which get a tensor clamp.
    """
    n = height * width - 1
    if isinstance(n, torch.Tensor):
        return n.clamp_min(1)
    return torch.sym_max(n, 1)


@register_block("simam", paper="SimAM, ICML 2021 (PMLR v139 yang21o)", year=2021, params="0",
                placement="right after the 3x3 conv of each ResNet block, before its BN", export="dynamic")
class SimAM(nn.Module):
    """SimAM: parameter-free 3-D attention from an energy function of each activation.

    Args:
        channels: input and output channels (unused: the block has no weights; kept for the common contract).
        e_lambda: the regulariser lambda of the energy function (1e-4 in the paper).
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(self, channels: int, e_lambda: float = 1e-4, init: str = "paper") -> None:
        super().__init__()
        if e_lambda <= 0:
            raise ValueError(f"e_lambda must be > 0, got {e_lambda}")
        self.channels = channels
        self.e_lambda = e_lambda
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = simam_denominator_count(x.shape[2], x.shape[3])
        deviation = (x - mean_pool(x, (2, 3), keepdim=True)).pow(2)
        variance = deviation.sum((2, 3), keepdim=True) / n
        gate = torch.sigmoid(deviation / (4 * (variance + self.e_lambda)) + 0.5)
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        return x * gate
