"""Self-Calibrated Convolution (SCConv) and the SCNet bottleneck stem.

Paper: Liu et al., "Improving Convolutional Networks with Self-Calibrated Convolutions", CVPR 2020,
https://mftp.mmcheng.net/Papers/20cvprSCNet.pdf (no arXiv version; project page https://mmcheng.net/scconv/).
Official code: https://github.com/MCG-NKU/SCNet (``scnet.py``: ``SCConv``, ``SCBottleneck``). Not the CVPR 2023
"ScConv" (spatial and channel reconstruction convolution).

SCConv: ``k4(k3(x) * sigmoid(x + up(k2(avgpool_r(x)))))``; k2, k3, k4 are 3x3 conv → BatchNorm, only k4 carries
the stride; r = 4; ``up`` is ``F.interpolate`` to x's size. It ends with BN (the unit's activation still follows).
Module names k2/k3/k4 (``k2.0`` the pool) match the official ``SCConv``, so its state dict loads as is.

SCBottleneckStem: the SCBottleneck up to its 1x1 expansion, i.e. what replaces a bottleneck's conv1 and conv2
units: 1x1 (in → w/2) → BN → ReLU twice (``conv1_a``, ``conv1_b``); branch a a 3x3 conv → BN (``k1``, with the
stride), branch b an SCConv; ReLU on both; concatenated (w channels, activated). avd (off in SCNet-50): a 3x3
average pool with the stride after the ReLUs instead of strided convs. SCNet-50 = 25,564,584 parameters (25.56M).

Deviations:

* Average pooling clips its window to the input (as a kernel ``min(r, H)`` x ``min(r, W)``, stride r), so maps
  smaller than r don't crash; for H, W >= r it is exactly the official ``AvgPool2d(r, r)``. It is computed with a
  fixed kernel on the input cut to whole windows, so ONNX export keeps H, W dynamic. The pooling function is an
  fx leaf (``torch.fx.wrap``) because the cut reads the input's shape.
* ``upsample="nearest"`` (official code, default) or ``"bilinear"`` (the paper; ``align_corners=False``).
* SCConv accepts in != out channels: k2 and k3 keep the input width (the identity term ``x + up(...)`` needs
  it) and k4 maps in → out, as it carries the stride; with in == out this is the official layout.
* The stem fuses layers that see the same input: ``conv1_a``/``conv1_b`` are one 1x1 conv (``conv1``, output
  [a | b]) with one BN, and ``k1`` and SCConv's ``k4`` are one 3x3 conv with twice the groups (``conv2``, output
  [k1 | k4]) with one BN; same parameters and function, fewer kernel launches, and conv1/bn1/bn2 have the
  shapes of a torchvision Bottleneck's. SCConv's k2/k3 live in ``scconv``. avd is used only with stride > 1
  (the official one also runs at stride 1 in the first block of a dilated stage). BatchNorm only.
* The stem needs an even width ``out_channels`` (two halves), each half divisible by ``groups``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._helpers import LayerType, clipped_avg_pool, get_act_layer
from ._inherit import copy_conv, copy_norm
from ._registry import register_block

__all__ = ["SCBottleneckStem", "SCConv", "SelfCalibration"]

_PAPER = "Self-Calibrated Convolutions (SCNet), CVPR 2020 (no arXiv; mmcheng.net/scconv)"


torch.fx.wrap("clipped_avg_pool")  # a leaf here too: _ClippedAvgPool looks it up in this module


class _ClippedAvgPool(nn.Module):
    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clipped_avg_pool(x, self.r)


def _conv_bn(in_channels: int, out_channels: int, stride: int, dilation: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class SelfCalibration(nn.Module):
    """``k3(x) * sigmoid(x + up(k2(avgpool_r(x))))``: SCConv without its output conv k4 (width kept)."""

    def __init__(self, channels: int, *, groups: int = 1, dilation: int = 1, pooling_r: int = 4,
                 upsample: str = "nearest") -> None:
        super().__init__()
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        if pooling_r < 1 or dilation < 1:
            raise ValueError(f"pooling_r and dilation must be >= 1, got {pooling_r} and {dilation}")
        if channels % groups:
            raise ValueError(f"groups={groups} must divide the channels ({channels})")
        self.upsample = upsample
        self.k2 = nn.Sequential(_ClippedAvgPool(pooling_r), *_conv_bn(channels, channels, 1, dilation, groups))
        self.k3 = _conv_bn(channels, channels, 1, dilation, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = F.interpolate(self.k2(x), size=x.shape[-2:], mode=self.upsample)
        return self.k3(x) * torch.sigmoid(x + context)


@register_block("scconv", kind="swap", site_args=("groups",), paper=_PAPER, year=2020, params="27C² + 6C",
                placement="replaces the 3x3 conv of each bottleneck (SCNet-50)", export="dynamic")
class SCConv(SelfCalibration):
    """Self-calibrated convolution; ends with BN, so the replaced unit's activation still follows.

    Args:
        in_channels: input channels.
        out_channels: output channels (k4 maps in → out).
        stride: stride of k4.
        groups: groups of k2, k3, k4 (must divide both widths).
        dilation: dilation (= padding) of k2, k3, k4.
        pooling_r: down-sampling rate of the calibration branch (4 in the paper).
        upsample: ``"nearest"`` (official code) or ``"bilinear"`` (the paper).
    """

    units = 1
    replaces_activation = False

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, groups: int = 1,
                 dilation: int = 1, pooling_r: int = 4, upsample: str = "nearest") -> None:
        super().__init__(in_channels, groups=groups, dilation=dilation, pooling_r=pooling_r, upsample=upsample)
        if out_channels % groups or stride < 1:
            raise ValueError(f"need stride >= 1 and groups dividing out_channels, got {stride} and {groups}")
        self.k4 = _conv_bn(in_channels, out_channels, stride, dilation, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(super().forward(x))

    def inherit_conv_weights(self, conv: nn.Conv2d, norm: nn.Module | None) -> list[str]:
        """Copy the replaced 3x3 conv (and its BN) into k4, the conv that maps to the unit's output.

        k4 always has the replaced conv's shape and stride; k2/k3 keep their initialisation.
        """
        if not copy_conv(self.k4[0], conv):
            return []
        return ["k4.0.weight"] + [f"k4.1.{name}" for name in copy_norm(self.k4[1], norm)]


@register_block("scbottleneck", kind="swap", site_args=("groups",), paper=_PAPER, year=2020, params="10C² + 6C",
                placement="replaces each bottleneck's conv1 and conv2 units (SCNet-50)", export="dynamic")
class SCBottleneckStem(nn.Module):
    """SCBottleneck's two branches (1x1 → plain 3x3 | 1x1 → SCConv), concatenated and activated.

    Args:
        in_channels: the bottleneck's input channels.
        out_channels: the bottleneck width w (even; each branch has w/2).
        stride: stride of the 3x3 stage.
        groups: cardinality of the 3x3 convs of each branch (must divide w/2).
        dilation: dilation (= padding) of the 3x3 convs.
        pooling_r: down-sampling rate of SCConv's calibration branch.
        upsample: ``"nearest"`` (official code) or ``"bilinear"`` (the paper).
        avd: average-pool (3x3, the stride) after the branches instead of strided convs (SCNet-v1d).
        act_layer: activation after each stage (ReLU in the paper).
    """

    replaces_activation = True
    units = 2  # replaces two consecutive conv units: the bottleneck's conv1 (1x1) and conv2 (3x3) stages

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, groups: int = 1,
                 dilation: int = 1, pooling_r: int = 4, upsample: str = "nearest", avd: bool = False,
                 act_layer: LayerType = "relu") -> None:
        super().__init__()
        half = out_channels // 2
        if out_channels < 2 or out_channels % 2 or half % groups or stride < 1:
            raise ValueError(
                f"scbottleneck needs an even out_channels whose half is divisible by groups and stride >= 1, "
                f"got out_channels={out_channels}, groups={groups}, stride={stride}"
            )
        conv_stride = 1 if avd else stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)  # [conv1_a | conv1_b]
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act = get_act_layer(act_layer)()
        self.scconv = SelfCalibration(half, groups=groups, dilation=dilation, pooling_r=pooling_r,
                                      upsample=upsample)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, conv_stride, padding=dilation, dilation=dilation,
                               groups=2 * groups, bias=False)  # [k1 | scconv.k4]
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.avd = nn.AvgPool2d(3, stride, padding=1) if avd and stride > 1 else nn.Identity()
        self.half = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        branch_a, branch_b = out[:, : self.half], out[:, self.half :]
        out = torch.cat((branch_a, self.scconv(branch_b)), dim=1)
        return self.avd(self.act(self.bn2(self.conv2(out))))

    def inherit_conv_weights(self, conv: nn.Conv2d, norm: nn.Module | None) -> list[str]:
        """Copy a torchvision Bottleneck's conv1 (1x1, in → w) or conv2 (3x3, w → w) unit; call once for each.

        conv1/bn1 are copied whole (both branches' 1x1 convs together are exactly conv1). conv2 is restricted to
        its two diagonal blocks (a → a for k1, b → b for SCConv's k4); bn2 is copied whole.
        """
        for prefix, dst_conv, dst_norm in (("conv1", self.conv1, self.bn1), ("conv2", self.conv2, self.bn2)):
            if copy_conv(dst_conv, conv):
                norm_prefix = "bn" + prefix[-1]
                return [f"{prefix}.weight"] + [f"{norm_prefix}.{name}" for name in copy_norm(dst_norm, norm)]
        return []
