"""Mixed Local Channel Attention (MLCA).

Paper: Wan et al., "Mixed local channel attention for object detection", Engineering Applications of Artificial
Intelligence 123 (2023), https://doi.org/10.1016/j.engappai.2023.106442 (no arXiv version).
Official code: https://github.com/wandahangFY/MLCA (``MLCA.py``, with the global branch as fixed in December 2023).

Adaptive average pool to an s x s grid (s = ``local_size`` = 5) and the mean of that grid. Local branch: the grid
as one sequence of s²·C values, position-major (the C channels of cell 0, then of cell 1, ...), through a
Conv1d(1, 1, k, no bias); global branch: the C means through another Conv1d(1, 1, k, no bias). k is ECA's adaptive
rule for C (γ 2, b 1; see :func:`eca_kernel_size`). Both gates are sigmoids, blended as
``(1 - w) · global + w · local`` with w = ``local_weight`` = 0.5, adaptively average-pooled from s x s back to H x W,
and multiplied with ``x``. Parameters: 2k (C=64: 6; C=256: 10). The paper replaces the SE modules of
MobileNetV3-small (the YOLOv5 backbone) with it.

Deviations: none in the numbers with ``init="paper"``. ``nn.AdaptiveAvgPool2d`` to 5 x 5 and back to H x W does not
export to ONNX for sizes not divisible by the output; both pools are written as products with the matrices of
adaptive average pooling (row i averages input positions ⌊i·n/m⌋ to ⌈(i+1)·n/m⌉ - 1), built from the input's size in
the forward pass, so the same numbers come out at any H, W, in eager mode and in an exported graph. The global branch
is the fixed one (each sample's gate stays its own); copies from before the fix transpose the global gate to
(C, N, 1) and adaptively pool that along the batch axis into the 5 x 5 grid, mixing samples. ``init="identity"``
adds one scalar that blends the final gate towards 1 (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, check_init, mean_pool
from ._registry import register_block
from .eca import eca_kernel_size

__all__ = ["MixedLocalChannelAttention", "adaptive_pool_matrix"]


def adaptive_pool_matrix(in_size: int, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """The (out_size, in_size) matrix of 1-D adaptive average pooling, in ``like``'s dtype and on its device.

    ``in_size`` or ``out_size`` may be a traced size: the matrix is built from tensor ops, not Python loops.
    """
    rows = torch.arange(out_size, device=like.device).unsqueeze(1)
    cols = torch.arange(in_size, device=like.device).unsqueeze(0)
    start = torch.div(rows * in_size, out_size, rounding_mode="floor")
    end = torch.div((rows + 1) * in_size + out_size - 1, out_size, rounding_mode="floor")
    inside = (cols >= start) & (cols < end)
    return inside.to(like.dtype) / (end - start).to(like.dtype)


@register_block("mlca", paper="MLCA, EAAI 2023 (doi:10.1016/j.engappai.2023.106442)", year=2023,
                params="2k (k the adaptive kernel size: 6 at C = 64, 10 at C = 256)",
                placement="in place of the SE modules of MobileNetV3-small (a YOLOv5 backbone)", export="dynamic")
class MixedLocalChannelAttention(nn.Module):
    """Mixed Local Channel Attention: ECA-style 1-D convolutions over a coarse grid of local and global channel means.

    Args:
        channels: input and output channels.
        local_size: side of the pooled grid (5 in the official code).
        local_weight: weight of the local gate in the blend (0.5 in the official code).
        k_size: odd kernel of both Conv1d; ``None`` uses ECA's adaptive rule.
        gamma: γ of the adaptive rule.
        beta: b of the adaptive rule.
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(
        self,
        channels: int,
        local_size: int = 5,
        local_weight: float = 0.5,
        k_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
        init: str = "paper",
    ) -> None:
        super().__init__()
        if k_size is None:
            k_size = eca_kernel_size(channels, gamma, beta)
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"k_size must be a positive odd integer, got {k_size}")
        if local_size < 1:
            raise ValueError(f"local_size must be >= 1, got {local_size}")
        self.local_size = local_size
        self.local_weight = local_weight
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)  # global branch
        self.conv_local = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        size = self.local_size
        pool_h, pool_w = adaptive_pool_matrix(height, size, x), adaptive_pool_matrix(width, size, x)
        local = torch.matmul(torch.matmul(pool_h, x), pool_w.transpose(0, 1))  # (N, C, s, s)
        global_mean = mean_pool(local, (2, 3)).unsqueeze(1)  # (N, 1, C): the grid's mean, per sample
        sequence = local.flatten(2).transpose(1, 2).reshape(batch, 1, size * size * channels)  # position-major
        local_gate = self.conv_local(sequence).view(batch, size * size, channels).transpose(1, 2)
        local_gate = local_gate.reshape(batch, channels, size, size).sigmoid()
        global_gate = self.conv(global_mean).view(batch, channels, 1, 1).sigmoid()
        gate = global_gate * (1 - self.local_weight) + local_gate * self.local_weight
        unpool_h, unpool_w = adaptive_pool_matrix(size, height, x), adaptive_pool_matrix(size, width, x)
        gate = torch.matmul(torch.matmul(unpool_h, gate), unpool_w.transpose(0, 1))  # (N, C, H, W)
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        return x * gate
