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


def places(model: nn.Module) -> dict[str, str]:
    """The places people put attention in a YOLO, by site name: backbone C2f/C3k2, SPPF, P3/P4/P5 head inputs."""
    layers = getattr(model, "model", None)
    cfg = getattr(model, "yaml", None)
    if not is_ultralytics_model(model) or not isinstance(layers, nn.Sequential) or not isinstance(cfg, dict):
        return {}
    backbone = len(cfg.get("backbone", ()))
    found: dict[str, str] = {}
    for index, layer in enumerate(layers):
        kind = type(layer).__name__  # a patched layer's class keeps its original name
        if index < backbone and kind in ("C2f", "C3k2"):
            found[f"model.{index}"] = f"backbone {kind}"
        elif kind == "SPPF":
            found[f"model.{index}"] = "SPPF"
    sources = getattr(layers[-1], "f", None)
    if isinstance(sources, list) and len(sources) == 3:  # a detection-style head reads P3, P4, P5, finest first
        for level, source in enumerate(sources):
            found[f"model.{source % len(layers)}"] = f"P{3 + level} head input"
    return found
