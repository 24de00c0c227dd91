"""Our blocks next to timm's implementation of the same block, configured to compute the same function.

Each :class:`Pair` builds our block and timm's with matching widths and options and copies timm's weights into
ours, so a benchmark can check that both give the same output before timing them. Where our paper defaults differ
from timm's defaults, the pair states the options that align them (``note``), and the aligned configuration is what
gets timed. Most only change which numbers are computed (pool order, biases, eps, scale); the Non-local pair also
changes the work (no key pooling, timm's narrower width), so it times that configuration, not our default:

* SE: timm rounds the width up to a multiple of 8; ``rd_divisor=1`` gives ours (``C // 16``) for every width.
* CBAM: the official code pools ``[max, mean]`` for the spatial gate, timm ``[mean, max]`` (ours with
  ``spatial_pool_order="mean_max"``); the official channel MLP has biases, timm's has none by default (timm with
  ``mlp_bias=True``).
* GC: timm's defaults are ``channel_mul`` at ratio 1/8, the official ones ``channel_add`` at 1/16 (timm with
  ``fuse_add=True, fuse_scale=False, rd_ratio=1/16``); timm's LayerNorm eps is 1e-6, ours PyTorch's 1e-5 (timm's
  set to ours). ``gc_mul`` compares timm's default GC with ours configured like it.
* Non-local: timm scales by ``C^-0.5`` and has no key pooling; ours takes timm's width (``rd_ratio=1/8``; timm's
  ``rd_divisor=1`` so that narrow test widths agree too), ``use_pool=False``, and timm's scale is set to ours,
  ``inner^-0.5``.
* Coordinate attention: timm's width is ``make_divisible(C / 16 * 2 / 3, 8)`` without conv biases; the official
  one ``max(8, C // 32)`` with biases (timm given ours).
* SK: timm's ``SelectiveKernel`` with ``split_input=False`` and ``rd_channels = max(C // 16, 32)`` (ours).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from timm.layers import EcaModule, GlobalContext, NonLocalAttn, SelectiveKernel, SEModule
from timm.layers.cbam import CbamModule
from timm.layers.coord_attn import CoordAttn
from torch import nn

from surgeon.blocks import create_block

__all__ = ["PAIRS", "Pair", "max_relative_diff", "randomize_"]


def _load(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    module.load_state_dict(tensors, strict=True)


def _copy_se(ours: nn.Module, theirs: nn.Module) -> None:
    _load(ours, {k: v for k, v in theirs.state_dict().items() if k.startswith(("fc1.", "fc2."))})


def _copy_eca(ours: nn.Module, theirs: nn.Module) -> None:
    _load(ours, {"conv.weight": theirs.conv.weight})


def _copy_cbam(ours: nn.Module, theirs: nn.Module) -> None:
    tensors = {f"channel_gate.{fc}.{kind}": getattr(getattr(theirs.channel, fc), kind).flatten(1 if kind == "weight"
                                                                                               else 0)
               for fc in ("fc1", "fc2") for kind in ("weight", "bias")}
    tensors["spatial_gate.conv.weight"] = theirs.spatial.conv.conv.weight
    tensors.update({f"spatial_gate.bn.{k}": v for k, v in theirs.spatial.conv.bn.state_dict().items()})
    _load(ours, tensors)


def _copy_mlp(prefix: str, mlp: nn.Module, ln_eps: float) -> dict[str, torch.Tensor]:
    mlp.norm.eps = ln_eps  # timm's LayerNorm2d uses 1e-6, the official LayerNorm PyTorch's 1e-5: align timm to ours
    return {
        f"{prefix}.0.weight": mlp.fc1.weight, f"{prefix}.0.bias": mlp.fc1.bias,
        f"{prefix}.1.weight": mlp.norm.weight.view(-1, 1, 1), f"{prefix}.1.bias": mlp.norm.bias.view(-1, 1, 1),
        f"{prefix}.3.weight": mlp.fc2.weight, f"{prefix}.3.bias": mlp.fc2.bias,
    }


def _copy_gc(ours: nn.Module, theirs: nn.Module) -> None:
    tensors = {"conv_mask.weight": theirs.conv_attn.weight, "conv_mask.bias": theirs.conv_attn.bias}
    for our_name, their_mlp in (("channel_add_conv", theirs.mlp_add), ("channel_mul_conv", theirs.mlp_scale)):
        if their_mlp is not None:
            tensors.update(_copy_mlp(our_name, their_mlp, getattr(ours, our_name)[1].eps))
    _load(ours, tensors)


def _copy_nonlocal(ours: nn.Module, theirs: nn.Module) -> None:
    theirs.scale = ours.scale  # timm: C^-0.5, official: inner^-0.5 (a constant; the same work)
    tensors = {}
    for our_name, their_name in (("theta", "t"), ("phi", "p"), ("g", "g"), ("out", "z"), ("bn", "norm")):
        for key, value in getattr(theirs, their_name).state_dict().items():
            tensors[f"{our_name}.{key}"] = value.flatten(2) if (our_name, key) == ("out", "weight") else value
    _load(ours, tensors)


def _copy_ca(ours: nn.Module, theirs: nn.Module) -> None:
    _load(ours, theirs.state_dict())


def _copy_sk(ours: nn.Module, theirs: nn.Module) -> None:
    sd = theirs.state_dict()
    paths = range(len(theirs.paths))
    tensors = {f"convs.{m}.weight": sd[f"paths.{m}.conv.weight"] for m in paths}
    for key in ("weight", "bias", "running_mean", "running_var"):
        tensors[f"bn.{key}"] = torch.cat([sd[f"paths.{m}.bn.{key}"] for m in paths])
    tensors["bn.num_batches_tracked"] = sd["paths.0.bn.num_batches_tracked"]
    tensors.update({f"fc_bn.{k}": v for k, v in theirs.attn.bn.state_dict().items()})
    tensors["fc_reduce.weight"] = sd["attn.fc_reduce.weight"]
    tensors["fc_select.weight"] = sd["attn.fc_select.weight"]
    _load(ours, tensors)


def _timm_sk(in_channels: int, out_channels: int | None = None, stride: int = 1, groups: int = 32,
             **kwargs: Any) -> nn.Module:
    out_channels = out_channels or in_channels
    return SelectiveKernel(in_channels, out_channels, kernel_size=[3, 5], stride=stride, groups=groups,
                           keep_3x3=True, split_input=False, rd_channels=max(out_channels // 16, 32), **kwargs)


@dataclass(frozen=True)
class Pair:
    """Our block and timm's, aligned.

    Attributes:
        name: row label.
        block: our registry name.
        our_args: options of our block (beside ``init="paper"``) that align it with timm's.
        timm_block: builds timm's block for a channel count; usable as timm's ``attn_layer``.
        copy: copies timm's weights (and, where a constant differs, timm's setting) into ours.
        note: what was aligned.
        swap: a conv-unit replacement (SK) rather than an inserted block.
    """

    name: str
    block: str
    our_args: dict[str, Any]
    timm_block: Callable[..., nn.Module]
    copy: Callable[[nn.Module, nn.Module], None]
    note: str = ""
    swap: bool = False

    def build(self, channels: int, groups: int = 32) -> tuple[nn.Module, nn.Module]:
        """``(ours, theirs)`` for ``channels`` with timm's weights copied into ours; both in eval mode."""
        if self.swap:
            ours = create_block(self.block, channels, channels, 1, groups=groups, **self.our_args)
            theirs = self.timm_block(channels, channels, groups=groups)
        else:
            ours = create_block(self.block, channels, init="paper", **self.our_args)
            theirs = self.timm_block(channels)
        randomize_(theirs)
        self.copy(ours, theirs)
        return ours.eval(), theirs.eval()


PAIRS: dict[str, Pair] = {pair.name: pair for pair in (
    Pair("se", "se", {}, partial(SEModule, rd_divisor=1), _copy_se,
         "timm rd_divisor=1 (same width as ours wherever C/16 is a multiple of 8, e.g. all of ResNet-50)"),
    Pair("eca", "eca", {}, EcaModule, _copy_eca, "same adaptive kernel size"),
    Pair("cbam", "cbam", {"spatial_pool_order": "mean_max"}, partial(CbamModule, mlp_bias=True), _copy_cbam,
         "ours spatial_pool_order=mean_max, timm mlp_bias=True"),
    Pair("gc", "gc", {}, partial(GlobalContext, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16), _copy_gc,
         "timm fuse_add=True, fuse_scale=False, rd_ratio=1/16 (official defaults); timm LN eps set to 1e-5"),
    Pair("gc_mul", "gc", {"fusion": "channel_mul", "rd_ratio": 1 / 8}, GlobalContext, _copy_gc,
         "timm defaults; ours fusion=channel_mul, rd_ratio=1/8; timm LN eps set to 1e-5"),
    Pair("nonlocal", "nonlocal", {"rd_ratio": 1 / 8, "use_pool": False}, partial(NonLocalAttn, rd_divisor=1),
         _copy_nonlocal, "ours rd_ratio=1/8, use_pool=False (timm's width, no pooling); timm rd_divisor=1, scale "
         "set to ours"),
    Pair("ca", "ca", {}, lambda c: CoordAttn(c, rd_channels=max(8, c // 32), bias=True), _copy_ca,
         "timm rd_channels=max(8, C//32), bias=True (official width and biases)"),
    Pair("sk", "sk", {}, _timm_sk, _copy_sk, "timm split_input=False, rd_channels=max(C//16, 32)", swap=True),
)}


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and normalisation statistic non-trivial values, in place.

    Zero-initialised layers (GC's last conv, Non-local's output BN, timm's ``zero_init_last``) would make an
    equality check pass whatever the block computes. Scales stay near 1 so a 50-layer network stays finite.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                tensor.copy_(torch.empty_like(tensor).uniform_(0.5, 1.5, generator=generator))
            elif leaf == "running_mean" or (leaf == "bias" and tensor.dim() == 1):
                tensor.copy_(torch.empty_like(tensor).normal_(0, 0.1, generator=generator))
            elif tensor.dim() == 1:  # norm weights
                tensor.copy_(torch.empty_like(tensor).uniform_(0.5, 1.5, generator=generator))
            elif tensor.abs().max() == 0:
                tensor.copy_(torch.empty_like(tensor).normal_(0, 0.02, generator=generator))
    return module


def max_relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()
