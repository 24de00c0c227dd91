"""Selective Kernel convolution (SK).

Paper: Li et al., "Selective Kernel Networks", CVPR 2019, https://arxiv.org/abs/1903.06586
Official code: https://github.com/implus/SKNet (Caffe, ``models/sknet50.prototxt``).

M = 2 paths over the full input: a 3x3 conv and a 3x3 conv with dilation 2 (the paper's 5x5), both grouped
(32 groups in SKNet-50) and strided, each → BatchNorm → ReLU. Fuse: sum of the paths → global average pool →
fc (C → d, no bias) → BN → ReLU → fc (d → M·C, no bias) → softmax across the paths → sum of the paths weighted
per channel. ``d = max(C // r, L)``, r = 16, L = 32. The output is activated (it replaces conv → BN → ReLU).

Implementation notes: the paths' BatchNorms are one ``BatchNorm2d(M·C)`` over the concatenated path outputs
(the same parameters as M separate ones; rows ``m·C:(m+1)·C`` belong to path m), then one activation, one
pool and one softmax for all paths; only the convs run per path, since each has its own dilation. In training
and under ``torch.compile`` that BatchNorm is applied to each path's rows before the paths are stacked (same
values and statistics; see ``_paths``). The fcs are 1x1 convs as in the official prototxt. ``num_paths=M`` gives
path m dilation ``(m + 1) · dilation`` (the paper's 3x3, 5x5, 7x7, ... as dilated 3x3s).

Deviations:

* ``groups`` (default 32) is clamped to the largest divisor of ``gcd(in_channels, out_channels)`` that is
  ``<= groups``, so any widths work (e.g. 48 channels → 24 groups, 3 → 3, 1 → 1); SKNet-50's widths
  (128 ... 1024) keep 32. timm clamps to ``min(out_channels, groups)`` instead, which fails on such widths.
* In training mode the attention BN sees one value per channel per sample, so it needs a batch of at least 2
  (as in the official network and in timm); eval mode works with batch 1.

timm's ``SelectiveKernel`` matches this block exactly with ``split_input=False``, ``kernel_size=[3, 5]``,
``keep_3x3=True`` and ``rd_channels=max(C // 16, 32)``. Its defaults differ: ``split_input=True`` (each path
sees half the input channels) and ``d = make_divisible(C / 16, 8)`` with no L = 32 floor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._helpers import LayerType, get_act_layer, mean_pool, reduced_channels
from ._inherit import copy_conv, copy_norm
from ._registry import register_block

__all__ = ["SelectiveKernel", "clamp_groups"]


def clamp_groups(in_channels: int, out_channels: int, groups: int) -> int:
    """The largest divisor of both widths that is at most ``groups`` (at least 1)."""
    common = math.gcd(in_channels, out_channels)
    return max(g for g in range(1, max(1, min(groups, common)) + 1) if common % g == 0)


def _in_place(act: Callable[..., nn.Module]) -> nn.Module:
    try:
        return act(inplace=True)
    except TypeError:  # an activation without an in-place variant (GELU)
        return act()


@register_block("sk", aliases=("selective_kernel",), kind="swap", site_args=("groups",),
                paper="Selective Kernel Networks, CVPR 2019 (arXiv:1903.06586)", year=2019,
                params="9C²/16 + 4C + 3Ca + 2a, a = max(C/16, 32) (32 groups)",
                placement="replaces the 3x3 conv of each bottleneck (ResNeXt-50 base)", export="dynamic")
class SelectiveKernel(nn.Module):
    """Selective Kernel convolution: M dilated 3x3 paths mixed by a per-channel softmax attention.

    Args:
        in_channels: input channels.
        out_channels: output channels C.
        stride: stride of every path.
        groups: groups of the path convs (32 in SKNet-50), clamped to a divisor of both widths.
        dilation: dilation of the first path; path m has ``(m + 1) * dilation``.
        num_paths: number of paths M (2 in SKNet-50).
        rd_ratio: ``1 / r`` of the attention width ``d = max(C * rd_ratio, min_channels)`` (r = 16).
        rd_channels: attention width d; overrides ``rd_ratio`` and ``min_channels``.
        rd_divisor: round ``C * rd_ratio`` to a multiple of this (1: truncate, as the official widths).
        min_channels: floor L of the attention width (32 in the paper).
        act_layer: activation of the paths and of the attention's hidden layer (ReLU in the paper).
    """

    units = 1
    replaces_activation = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        groups: int = 32,
        dilation: int = 1,
        num_paths: int = 2,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        min_channels: int = 32,
        act_layer: LayerType = "relu",
    ) -> None:
        super().__init__()
        if num_paths < 1 or stride < 1 or dilation < 1 or groups < 1:
            raise ValueError(f"num_paths, stride, dilation and groups must be >= 1, got "
                             f"{num_paths}, {stride}, {dilation} and {groups}")
        self.num_paths = num_paths
        self.groups = clamp_groups(in_channels, out_channels, groups)
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, 3, stride, padding=(m + 1) * dilation,
                      dilation=(m + 1) * dilation, groups=self.groups, bias=False)
            for m in range(num_paths)
        )
        self.bn = nn.BatchNorm2d(num_paths * out_channels)  # the paths' BNs, rows m*C:(m+1)*C for path m
        act = get_act_layer(act_layer)
        # in place on the fresh BatchNorm output, as timm's ConvNormAct: one (N, M*C, H, W) tensor fewer per call
        # (eval at 8x256x56x56: 1.12-1.15x timm's time out of place, 0.89-0.97x in place; benchmarks/blocks.py)
        self.act = _in_place(act)
        if rd_channels is None:
            attn_channels = max(reduced_channels(out_channels, rd_ratio, None, rd_divisor), min_channels)
        else:
            attn_channels = reduced_channels(out_channels, rd_ratio, rd_channels)
        self.fc_reduce = nn.Conv2d(out_channels, attn_channels, 1, bias=False)
        self.fc_bn = nn.BatchNorm2d(attn_channels)
        self.fc_act = act()
        self.fc_select = nn.Conv2d(attn_channels, num_paths * out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the split form calls F.batch_norm itself: only for a plain BatchNorm2d, not for one a user converted
        # (SyncBatchNorm must synchronise its statistics, FrozenBatchNorm2d has its own forward)
        split = (self.training or torch.compiler.is_compiling()) and type(self.bn) is nn.BatchNorm2d
        feats = self._paths([conv(x) for conv in self.convs], split=split)
        # the pooled sum of the paths is the sum of the pooled paths: pool before summing
        pooled = mean_pool(feats, (3, 4), keepdim=True).sum(1)  # (N, C, 1, 1)
        logits = self.fc_select(self.fc_act(self.fc_bn(self.fc_reduce(pooled))))  # (N, M*C, 1, 1)
        attn = logits.unflatten(1, (self.num_paths, -1)).softmax(dim=1)  # (N, M, C, 1, 1)
        return (feats * attn).sum(1)

    def _paths(self, outs: list[torch.Tensor], split: bool) -> torch.Tensor:
        """The conv outputs through their rows of ``self.bn`` and the activation, stacked: (N, M, C, H, W).

        ``split`` normalises each path on its own and stacks the results: in training the backward then needs
        no slicing of a concatenated gradient and runs BatchNorm's backward on C rows at a time (0.95-0.97x
        timm's step time instead of 0.98-1.01x), and under ``torch.compile`` each path's BatchNorm and activation
        fuse into the kernel that writes the stack (skresnext50 at batch 8: 1.00x timm's time instead of 1.06x).
        Otherwise one BatchNorm and one in-place activation run over the concatenated paths, the cheaper form
        for eager inference. Both give the same values and the same statistics updates.
        """
        if split:
            return torch.stack([self.act(normed) for normed in self._path_norms(outs)], dim=1)
        return self.act(self.bn(torch.cat(outs, dim=1))).unflatten(1, (self.num_paths, -1))

    def _path_norms(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``self.bn`` applied to each path's rows separately: what ``nn.BatchNorm2d.forward`` does, statistics
        updates included (the running statistics are updated through views of their rows)."""
        bn = self.bn
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        batch_stats = bn.training or bn.running_mean is None
        track = not bn.training or bn.track_running_stats

        def rows(t: torch.Tensor | None, m: int, width: int) -> torch.Tensor | None:
            return None if t is None else t[m * width:(m + 1) * width]

        normed = []
        for m, out in enumerate(outs):
            c = out.shape[1]
            normed.append(F.batch_norm(out, rows(bn.running_mean, m, c) if track else None,
                                       rows(bn.running_var, m, c) if track else None, rows(bn.weight, m, c),
                                       rows(bn.bias, m, c), batch_stats, factor, bn.eps))
        return normed

    def inherit_conv_weights(self, conv: nn.Conv2d, norm: nn.Module | None, *,
                             include_dilated: bool = True) -> list[str]:
        """Copy the replaced 3x3 conv (and its BN) into the path with its dilation and, optionally, the others.

        The replaced conv has path 0's dilation, so path 0 reproduces the unit exactly (a grouped path takes
        the replaced conv's diagonal group blocks). With ``include_dilated`` the same taps also start the
        dilated paths (the same filter spread wider: a correlated start rather than a random one). The
        attention keeps its initialisation.
        """
        if isinstance(conv, nn.Conv2d) and conv.dilation != self.convs[0].dilation:
            return []
        set_names: list[str] = []
        out_channels = self.convs[0].out_channels
        for m, path_conv in enumerate(self.convs if include_dilated else self.convs[:1]):
            if not copy_conv(path_conv, conv):
                break
            set_names.append(f"convs.{m}.weight")
            norm_names = copy_norm(self.bn, norm, start=m * out_channels)
            set_names += [f"bn.{name}" for name in norm_names if f"bn.{name}" not in set_names]
        return set_names
