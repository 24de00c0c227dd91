"""What attn-surgeon reports about a YOLO in Ultralytics' terms: the places people put attention, by name, and the
GFLOPs ``model.info()`` prints."""

from __future__ import annotations

from torch import nn

from ...io import ReferenceFlops
from ...tensors import ULTRALYTICS_IMGSZ
from .models import is_ultralytics_model

__all__ = ["info_gflops", "places", "reference_flops"]


def info_gflops(model: nn.Module, imgsz: int = ULTRALYTICS_IMGSZ) -> float | None:
    """GFLOPs as ``model.info()`` reports them (Ultralytics' ``get_flops``: thop MACs x 2, at 640 unless told), or
    ``None`` where Ultralytics cannot count them (thop missing)."""
    from ultralytics.utils.torch_utils import get_flops

    flops = get_flops(model, imgsz)
    return float(flops) if flops else None


def reference_flops(model: nn.Module) -> ReferenceFlops | None:
    """For an Ultralytics model, the GFLOPs ``model.info()`` reports at Ultralytics' default image size; else
    ``None``."""
    if not is_ultralytics_model(model):
        return None
    channels = model.yaml.get("channels", model.yaml.get("ch", 3))
    return ReferenceFlops(counter="model.info()", method="thop: 2 x conv/linear MACs",
                          image_shape=(int(channels), ULTRALYTICS_IMGSZ, ULTRALYTICS_IMGSZ),
                          input_label=f"Ultralytics' default imgsz={ULTRALYTICS_IMGSZ}",
                          gflops=info_gflops(model, ULTRALYTICS_IMGSZ))


# The layers each generation stacks in its backbone, between the strided convolutions (YOLOv3's Darknet stages and
# YOLOv6's RepVGG stages are plain Sequentials, left out: a Sequential says nothing about what it holds).
BACKBONE_STAGES = ("C3", "C2f", "C3k2", "RepNCSPELAN4", "ELAN1", "A2C2f", "HGBlock", "ResNetLayer")
# The pyramid pooling that closes a backbone, and the attention layers the newer generations put after it (or in
# the neck): their own attention, which `swap --module` can replace from the inside.
POOLING = ("SPP", "SPPF", "SPPELAN")
ATTENTION = ("PSA", "C2PSA", "AIFI")
INNER_ATTENTION = ("Attention", "AAttn")


def places(model: nn.Module) -> dict[str, str]:
    """The places people put attention in a YOLO or RT-DETR, by site name: the backbone's stages (C3, C2f, C3k2,
    RepNCSPELAN4, A2C2f, HGBlock), its pyramid pooling (SPP, SPPF, SPPELAN), the model's own attention layers (PSA,
    C2PSA, AIFI) and the attention modules inside them and A2C2f (Attention, AAttn), and the P3/P4/P5 head
    inputs."""
    layers = getattr(model, "model", None)
    cfg = getattr(model, "yaml", None)
    if not is_ultralytics_model(model) or not isinstance(layers, nn.Sequential) or not isinstance(cfg, dict):
        return {}
    backbone = len(cfg.get("backbone", ()))
    found: dict[str, str] = {}
    for index, layer in enumerate(layers):
        kind = type(layer).__name__  # a patched layer's class keeps its original name
        if index < backbone and kind in BACKBONE_STAGES:
            found[f"model.{index}"] = f"backbone {kind}"
        elif kind in POOLING:
            found[f"model.{index}"] = kind
        elif kind in ATTENTION:
            found[f"model.{index}"] = f"{kind} attention"
        for name, inner in layer.named_modules(prefix=f"model.{index}"):
            if type(inner).__name__ in INNER_ATTENTION:  # what `swap --module Attention` (or AAttn) replaces
                found[name] = f"{type(inner).__name__} in {kind}"
    sources = getattr(layers[-1], "f", None)
    if isinstance(sources, list) and len(sources) == 3:  # a detection-style head reads P3, P4, P5, finest first
        for level, source in enumerate(sources):
            found[f"model.{source % len(layers)}"] = f"P{3 + level} head input"
    return found
