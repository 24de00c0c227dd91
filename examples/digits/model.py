"""A small ResNet for 16x16 grey-scale digits, written as ordinary PyTorch code.

Nothing here knows about attn-surgeon: it is the kind of model a training repository already has, with residual
units in the style of torchvision's ``BasicBlock`` (two 3x3 convolutions, a skip addition, a 1x1 projection when
the shape changes). ``build`` is the factory that ``--arch examples.digits.model:build`` names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["INPUT_SIZE", "BasicBlock", "DigitsResNet", "build"]

INPUT_SIZE = 16  # the 8x8 scans are upsampled 2x (nearest) so the last stage still sees 4x4 maps


class BasicBlock(nn.Module):
    """conv3x3 → BN → ReLU → conv3x3 → BN, added to the (projected) input, then ReLU.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: stride of the first convolution (and of the projection).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DigitsResNet(nn.Module):
    """Stem, three stages of residual units (16x16 → 8x8 → 4x4), global pooling and a linear classifier.

    Args:
        widths: output channels of the stem and of each stage.
        num_classes: number of classes.
        in_channels: channels of the input images.
    """

    def __init__(self, widths: Sequence[int] = (16, 24, 32), num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages = []
        previous = widths[0]
        for i, width in enumerate(widths):
            stages.append(BasicBlock(previous, width, stride=1 if i == 0 else 2))
            previous = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def build(num_classes: int = 10) -> DigitsResNet:
    """The architecture of the shipped checkpoint ``digits_resnet.pt`` (random weights)."""
    return DigitsResNet(num_classes=num_classes)
