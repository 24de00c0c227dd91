"""Copying a replaced conv unit's weights into the parts of a swap block whose shapes fit.

A swap block (``kind="swap"``) replaces a conv → norm → activation unit; ``inherit_conv_weights`` on the block
uses these helpers so that the swap keeps as much of the pretrained function as possible. Nothing here changes
the replaced modules.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["copy_conv", "copy_norm"]


def _grouped_weight(src: nn.Conv2d, dst: nn.Conv2d) -> torch.Tensor | None:
    """``src``'s weight restricted to ``dst``'s groups, or None where the two convs don't correspond.

    With as many groups in ``dst`` as in ``src`` this is the weight itself. With more (a multiple), each output
    channel keeps only the taps from the input channels of its new, narrower group: ``dst`` computes the
    block-diagonal part of ``src`` (exact when the dropped cross-group taps are zero).
    """
    if (src.in_channels, src.out_channels, src.kernel_size) != (dst.in_channels, dst.out_channels, dst.kernel_size):
        return None
    if dst.groups % src.groups:
        return None
    weight = src.weight.detach()
    if dst.groups == src.groups:
        return weight
    out_channels, src_group_in = src.out_channels, src.in_channels // src.groups
    dst_group_in = dst.in_channels // dst.groups
    out_index = torch.arange(out_channels, device=weight.device)
    dst_group = out_index // (out_channels // dst.groups)
    src_group = out_index // (out_channels // src.groups)
    # where each output channel's new group starts, counted inside its old group's slice of input channels
    start = dst_group * dst_group_in - src_group * src_group_in
    index = start[:, None] + torch.arange(dst_group_in, device=weight.device)
    return weight.gather(1, index[:, :, None, None].expand(-1, -1, *weight.shape[2:]))


@torch.no_grad()
def copy_conv(dst: nn.Conv2d, src: nn.Module) -> bool:
    """Copy ``src``'s weight into ``dst`` (same channels and kernel; ``dst`` may have a multiple of the groups).

    Stride, dilation and padding are the caller's business; a bias of ``src`` is not copied (the blocks'
    convs have none, the norm that follows carries the shift).

    Returns:
        Whether ``dst.weight`` was set.
    """
    if not isinstance(src, nn.Conv2d):
        return False
    weight = _grouped_weight(src, dst)
    if weight is None:
        return False
    dst.weight.copy_(weight)
    return True


@torch.no_grad()
def copy_norm(dst: nn.modules.batchnorm._BatchNorm, src: nn.Module | None, start: int = 0) -> list[str]:
    """Copy a batch norm's affine parameters, running statistics and eps into ``dst[start:start + C]``.

    Returns:
        The names (relative to ``dst``) of the parameters that were set; empty when ``src`` is not a batch norm
        or does not fit.
    """
    if not isinstance(src, nn.modules.batchnorm._BatchNorm) or start + src.num_features > dst.num_features:
        return []
    rows = slice(start, start + src.num_features)
    set_names = []
    if src.affine and dst.affine:
        dst.weight[rows] = src.weight
        dst.bias[rows] = src.bias
        set_names = ["weight", "bias"]
    if src.running_mean is not None and dst.running_mean is not None:
        dst.running_mean[rows] = src.running_mean
        dst.running_var[rows] = src.running_var
    dst.eps = src.eps
    return set_names
