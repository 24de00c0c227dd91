"""Global Attention Mechanism (GAM).

Paper: Liu, Shao and Hoffmann, "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial
Interactions", 2021, https://arxiv.org/abs/2112.05561
Official code: none was published; this follows the paper, and says below where each detail comes from.

CBAM's sequential layout without its pooling (the paper's equations: ``F2 = Mc(F1) ⊗ F1``, ``F3 = Ms(F2) ⊗ F2``):

* channel submodule (paper, Fig. 2 and Sec. 3): a 3-D permutation to (N, H, W, C), a two-layer MLP across channels at
  every position — an encoder-decoder with reduction ratio r "as in BAM" — the reverse permutation, and a sigmoid.
  The hidden activation is ReLU: the paper names none, and takes the MLP's structure from BAM, whose MLP uses ReLU.
  Linear layers have biases (the paper's MLP; BAM's too).
* spatial submodule (paper, Fig. 3 and Sec. 3): two 7x7 convolutions, C → C/r → C, with the same r, no pooling
  ("to further preserve the feature maps"); BatchNorm after each, ReLU between them, sigmoid at the end (Fig. 3).
  Convs have biases and padding 3 (PyTorch's default bias; the figure shows the spatial size kept).
* r = 4 (the paper's experiments). Parameters with these choices: ``25C² + 5C`` (C a multiple of 4).
* Placement: after each ResNet stage, in the paper's description of its ResNet and MobileNetV2 models; no
  network code pins it further.

PyTorch's default initialisation and BatchNorm settings (the paper gives none).

Deviations and choices:
    * For ResNet-50 the paper replaces the spatial convolutions by group convolutions with a channel shuffle to hold
      the parameter count down, without giving the group count or the shuffle's position; that variant is not
      offered (many copies use 4 groups and shuffle the gate — a guess).
    * Widely copied versions drop the channel sigmoid (they multiply by the raw MLP output); the paper's Fig. 2 has it,
      and so does this block.
    * The hidden width is ``max(1, int(C / r))``, so that C < r still builds.
    * ``init="identity"`` adds one scalar shared by both gates (see :class:`IdentityGate`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._helpers import IdentityGate, LayerType, check_init, get_act_layer, reduced_channels
from ._registry import register_block

__all__ = ["GlobalAttentionMechanism"]


@register_block("gam", aliases=("global_attention_mechanism",),
                paper="Global Attention Mechanism, 2021 (arXiv:2112.05561; no official code)", year=2021,
                params="25C² + 5C (r 4)",
                placement="after each ResNet stage (the paper's description; no network code)",
                export="dynamic")
class GlobalAttentionMechanism(nn.Module):
    """Global attention mechanism: a per-position channel MLP gate, then a pooling-free convolutional spatial gate.

    Args:
        channels: input and output channels.
        rd_ratio: reduction of both submodules (1/4 in the paper's experiments).
        rd_channels: hidden width of both submodules; overrides ``rd_ratio``.
        spatial_kernel_size: kernel of the two spatial convolutions (7 in the paper).
        act_layer: hidden activation of both submodules.
        init: ``"paper"`` for the block as published, ``"identity"`` to start as the identity function.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 4, rd_channels: int | None = None,
                 spatial_kernel_size: int = 7, act_layer: LayerType = "relu", init: str = "paper") -> None:
        super().__init__()
        if spatial_kernel_size < 1 or spatial_kernel_size % 2 == 0:
            raise ValueError(f"spatial_kernel_size must be a positive odd integer, got {spatial_kernel_size}")
        hidden = reduced_channels(channels, rd_ratio, rd_channels)
        act = get_act_layer(act_layer)
        padding = spatial_kernel_size // 2
        self.channel_attention = nn.Sequential(nn.Linear(channels, hidden), act(), nn.Linear(hidden, channels))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(channels, hidden, spatial_kernel_size, padding=padding),
            nn.BatchNorm2d(hidden),
            act(),
            nn.Conv2d(hidden, channels, spatial_kernel_size, padding=padding),
            nn.BatchNorm2d(channels),
        )
        self.identity_gate = IdentityGate() if check_init(init) == "identity" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the permutation to channels-last and back: the MLP mixes channels at every position
        gate = torch.sigmoid(self.channel_attention(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        x = x * gate
        gate = torch.sigmoid(self.spatial_attention(x))
        if self.identity_gate is not None:
            gate = self.identity_gate(gate)
        return x * gate
