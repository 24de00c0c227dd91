"""Non-local block (embedded Gaussian), for 2-D feature maps.

Paper: Wang et al., "Non-local Neural Networks", CVPR 2018, https://arxiv.org/abs/1711.07971
Official code: https://github.com/facebookresearch/video-nonlocal-net (``lib/models/nonlocal_helper.py``,
defaults in ``lib/core/config.py``; the block is added after residual blocks in ``resnet_helper.py``).

``theta``, ``phi`` and ``g`` are 1x1 convs (C → C/2, bias); the affinity ``theta(x_i) · phi(x_j)`` is scaled by
``(C/2)^-0.5`` (``NONLOCAL.USE_SCALE = True``) and softmax-normalised over the positions j; the response
``y_i = Σ_j softmax_ij g(x_j)`` goes through a 1x1 conv (C/2 → C, bias) and BatchNorm whose γ starts at 0
(``BN_INIT_GAMMA = 0``), and is added to the input: ``z = x + BN(W(y))``. With ``use_pool`` (``USE_MAXPOOL =
True``) the input of ``phi`` and ``g`` is first max-pooled with kernel and stride 2, a quarter of the keys (the
code pools the block input before the two convs; the paper's text places the pooling after them). Official
initialisation: conv weights normal with std 0.01 (``CONV_INIT_STD``), conv biases 0, BN β 0; so the block is an
exact identity at creation in both init modes. The inner width is ``int(C / 2)`` as in ``resnet_helper.py``.

Deviations:
    * Adapted from 3-D (T, H, W) to 2-D: the official pooling kernel (1, 2, 2) pools only space, so it becomes a
      2x2 max pool here; the official repository has no 2-D image model, so ``use_pool=True`` is the config default
      carried over (pass ``use_pool=False`` for full-resolution keys, as in timm's ``NonLocalAttn``).
    * The pooling uses ``ceil_mode=True``: on even sizes (all of them in the paper's networks) it equals the
      official floor-mode pooling; on odd sizes the last row/column is kept as a 1-wide window instead of being
      dropped, and a 1-pixel-high or -wide map pools to 1 instead of 0 (which would crash). One static op, so
      fx, ``torch.compile`` and ONNX see no shape-dependent branch.
    * The scale is applied to ``theta`` before the product, not to the (HW x HW') affinity after it (same values,
      fewer multiplications). BatchNorm uses PyTorch's eps 1e-5 and momentum 0.1 (official: 1.0000001e-5 and
      Caffe2 momentum 0.9, the same running-average rate).
    * The inner width is clamped to at least 1.
    * The output 1x1 conv is an ``nn.Conv1d`` over the flattened positions (weight shape (C, P, 1) instead of
      (C, P, 1, 1); same parameters and values), which keeps ``torch.compile`` working with dynamic shapes.
    * timm's ``NonLocalAttn`` scales by ``C^-0.5`` instead of ``(C/2)^-0.5``, uses inner width
      ``make_divisible(C / 8, 8)``, no pooling, and kaiming (fan_out) conv init.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._helpers import check_init, reduced_channels
from ._registry import register_block

__all__ = ["NonLocalBlock"]


@register_block("nonlocal", aliases=("non_local", "nl"),
                paper="Non-local Neural Networks, CVPR 2018 (arXiv:1711.07971)", year=2018, params="2C² + 4.5C",
                placement="after a residual block: every other block of res3 (2) and res4 (3)", export="dynamic")
class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block: every position attends to all (pooled) positions; residual, zero-init BN.

    Args:
        channels: input and output channels.
        rd_ratio: inner width ratio (1/2 in the paper).
        rd_channels: inner width; overrides ``rd_ratio``.
        rd_divisor: round the inner width to a multiple of this (1: truncate, as the official code).
        use_scale: scale the affinities by ``inner^-0.5`` before the softmax (official default: on).
        use_pool: 2x2 max-pool the keys and values (the input of ``phi`` and ``g``; official default: on).
        init: ``"paper"`` or ``"identity"``; the official zero-γ BatchNorm makes both the identity at creation.
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 2,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        use_scale: bool = True,
        use_pool: bool = True,
        init: str = "paper",
    ) -> None:
        super().__init__()
        check_init(init)
        inner = reduced_channels(channels, rd_ratio, rd_channels, rd_divisor)
        self.scale = inner ** -0.5 if use_scale else 1.0
        self.use_pool = use_pool
        self.theta = nn.Conv2d(channels, inner, kernel_size=1, bias=True)
        self.phi = nn.Conv2d(channels, inner, kernel_size=1, bias=True)
        self.g = nn.Conv2d(channels, inner, kernel_size=1, bias=True)
        # a 1x1 Conv1d on the (N, P, H*W) response: the same weights as the official 1x1 conv, and it sidesteps an
        # Inductor failure on a Conv2d fed by a reshaped matmul under dynamic shapes (pytorch/pytorch#185510)
        self.out = nn.Conv1d(inner, channels, kernel_size=1, bias=True)
        self.bn = nn.BatchNorm2d(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: N(0, 0.01) conv weights, zero biases, BatchNorm γ = β = 0."""
        for conv in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, use_pool={self.use_pool}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        keys_in = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True) if self.use_pool else x
        query = self.theta(x).flatten(2)  # (N, P, HW)
        key = self.phi(keys_in).flatten(2)  # (N, P, HW')
        value = self.g(keys_in).flatten(2)  # (N, P, HW')
        if self.scale != 1.0:
            query = query * self.scale
        affinity = torch.matmul(query.transpose(1, 2), key).softmax(dim=-1)  # (N, HW, HW'), rows sum to 1
        # (N, HW, HW') @ (N, HW', P): the large affinity is the left operand, read row by row as BLAS likes it; the
        # (N, P, HW) order (value @ affinity^T) makes CPU training twice as slow at 56x56 (benchmarks/blocks.py)
        y = torch.matmul(affinity, value.transpose(1, 2)).transpose(1, 2)  # (N, P, HW)
        return x + self.bn(self.out(y).reshape(n, -1, h, w))
