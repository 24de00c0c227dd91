"""Channel Prior Convolutional Attention (CPCA).

Paper: Huang et al., "Channel prior convolutional attention for medical image segmentation", Computers in Biology
and Medicine 2024, https://arxiv.org/abs/2306.05196
Official code: https://github.com/Cuthbert-Huang/CPCANet (``nnunet/network_architecture/CPCANet.py``, class
``RepBlock`` with its ``ChannelAttention``).

One 1x1 conv ``W`` (C → C, bias) is used three times. ``u = GELU(W x)``; channel prior: a shared MLP of 1x1 convs
(C → C/r → C, bias, ReLU between) on the average- and on the max-pooled ``u``, a sigmoid on each, summed (so the
prior lies in (0, 2)), ``u ← prior · u``; spatial attention: ``d0 = DW5x5(u)`` and
``d = Σ_{k ∈ 7, 11, 21} DWk×1(DW1×k(d0)) + d0``; output ``W(W(d) · u)``, which replaces the features (no skip
inside; CPCANet adds one around it: ``x + DropPath(RepBlock(BN(x)))``). r = 4. Every conv has a bias.
Parameters: ``(1 + 2/r)·C² + (112 + 1/r)·C`` (r 4, C a multiple of 4: ``1.5C² + 112.25C``). PyTorch's default
initialisation, as the official class. Submodule names are the official ones, so official CPCANet weights load with
``load_state_dict``.

The max pool: in training mode with indices, as the official ``adaptive_max_pool2d``, so the gradient goes to one
maximal element; in eval mode ``amax``, the same values without the cost of indices (see :func:`max_pool`).

Deviations:
    * The hidden width of the channel MLP is ``max(1, int(C / r))``: the official ``C // r``, clamped so that
      C < r still builds.
    * ``init="identity"`` returns ``x + γ · (CPCA(x) − x)`` with a learnable scalar ``γ`` initialised to 0: the block
      replaces the features and shares ``W`` between its input and output, so no last layer can be zeroed into an
      identity; ``γ = 1`` is the published block. One extra parameter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._helpers import LayerType, check_init, get_act_layer, max_pool, mean_pool, reduced_channels
from ._registry import register_block

__all__ = ["ChannelPrior", "ChannelPriorConvAttention"]

_STRIP_KERNELS = (7, 11, 21)


class ChannelPrior(nn.Module):
    """CPCA's channel prior (the official ``ChannelAttention``): returns the (N, C, 1, 1) prior, in (0, 2)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def _gate(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = mean_pool(x, (2, 3), keepdim=True)
        peak = max_pool(x, (2, 3), keepdim=True, with_indices=self.training)
        return self._gate(avg) + self._gate(peak)


def _depthwise(channels: int, kernel: tuple[int, int]) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2), groups=channels)


@register_block("cpca", aliases=("channel_prior_conv_attention",),
                paper="CPCA: Channel Prior Convolutional Attention, CIBM 2024 (arXiv:2306.05196)", year=2024,
                params="1.5C² + 112.25C (r 4; (1 + 2/r)C² + (112 + 1/r)C)",
                placement="CPCANet encoder blocks: x + DropPath(CPCA(BN(x))), before the FFN", export="dynamic")
class ChannelPriorConvAttention(nn.Module):
    """Channel prior convolutional attention: a channel prior, then multi-scale strip convolutions as spatial attention.

    Args:
        channels: input and output channels.
        rd_ratio: hidden width of the channel MLP relative to ``channels`` (1/4: the official
            ``channelAttention_reduce=4``).
        rd_channels: hidden width of the channel MLP; overrides ``rd_ratio``.
        act_layer: activation after the input projection (GELU officially).
        init: ``"paper"`` for the published block, ``"identity"`` to start as the identity function.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 4, rd_channels: int | None = None,
                 act_layer: LayerType = "gelu", init: str = "paper") -> None:
        super().__init__()
        self.ca = ChannelPrior(channels, reduced_channels(channels, rd_ratio, rd_channels))
        self.dconv5_5 = _depthwise(channels, (5, 5))
        for k in _STRIP_KERNELS:
            setattr(self, f"dconv1_{k}", _depthwise(channels, (1, k)))
            setattr(self, f"dconv{k}_1", _depthwise(channels, (k, 1)))
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.act = get_act_layer(act_layer)()
        self.gamma = nn.Parameter(torch.zeros(1)) if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.act(self.conv(x))
        u = self.ca(u) * u
        d0 = self.dconv5_5(u)
        d = self.dconv7_1(self.dconv1_7(d0)) + self.dconv11_1(self.dconv1_11(d0)) + self.dconv21_1(self.dconv1_21(d0))
        out = self.conv(self.conv(d + d0) * u)
        if self.gamma is None:
            return out
        return x + self.gamma * (out - x)
