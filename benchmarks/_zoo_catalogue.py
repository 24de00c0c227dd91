"""The zoo benchmark's catalogue (``benchmarks/zoo.py``): which models it runs, each as an :class:`Entry`.

Sources: ``torchvision`` (every classification model), ``detection`` (torchvision detection and segmentation
models, ``weights=None, weights_backbone=None``), ``timm`` (one model per family, the smallest by parameter count;
a family is the defining module plus the name's leading word, e.g. ``resnet/seresnext``; ``test_*`` models left
out), ``yolo`` (Ultralytics, built from ``yolov8n.yaml``, no weights) and ``transformers`` (every image
classification class that ships in Hugging Face transformers, as its ``AutoModelForImageClassification`` mapping
lists them, built from its default config; the family is the ``model_type``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

DETECTION = ("fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "maskrcnn_resnet50_fpn", "deeplabv3_resnet50",
             "fcn_resnet50", "lraspp_mobilenet_v3_large")
SOURCES = ("torchvision", "detection", "timm", "yolo", "transformers")
# Left out of the transformers source: a wrapper around timm models (the timm source covers those) and a
# vision-language safety classifier whose input is text and images together; so are classes whose input is not
# pixel_values (Perceiver's).
TRANSFORMERS_LEFT_OUT = ("timm_wrapper", "shieldgemma2")


@dataclass(frozen=True)
class Entry:
    """One surgery to run.

    Attributes:
        source, family, name: where the model comes from.
        build: makes the model (random init, nothing downloaded).
        sizes: square input sizes to try, in order; the first one the original model runs at is used.
        block: the block inserted.
        sites: site specs tried in order; the next one is tried only when a spec matches nothing.
        position: ``None`` for the default of each site kind.
        features: a function of (model, probe) whose outputs are compared as well (a detector's backbone).
        routing: attributes every layer of ``model.model`` must keep (Ultralytics routes by ``f`` and ``i``).
    """

    source: str
    family: str
    name: str
    build: Callable[[], nn.Module]
    sizes: tuple[int, ...] = (64, 224)
    block: str = "eca"
    sites: tuple[str, ...] = ("bottleneck", "conv3x3")
    position: str | None = None
    features: Callable[[nn.Module, torch.Tensor], Any] | None = None
    routing: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.source}:{self.name}:{self.block}"


def torchvision_entries() -> list[Entry]:
    import torchvision

    def build(name: str) -> Callable[[], nn.Module]:
        return lambda: torchvision.models.get_model(name, weights=None)

    return [Entry("torchvision", torchvision.models.get_model_builder(name).__module__.rsplit(".", 1)[-1], name,
                  build(name)) for name in torchvision.models.list_models(module=torchvision.models)]


def detection_entries() -> list[Entry]:
    from torchvision.models import detection, segmentation

    def build(name: str) -> Callable[[], nn.Module]:
        factory = getattr(detection, name, None) or getattr(segmentation, name)
        return lambda: factory(weights=None, weights_backbone=None)

    family = {name: "detection" if hasattr(detection, name) else "segmentation" for name in DETECTION}
    return [Entry("detection", family[name], name, build(name), sizes=(64,),
                  features=lambda model, x: model.backbone(x)) for name in DETECTION]


def timm_families() -> dict[str, list[str]]:
    """Family → model names: the defining module plus the name's leading word (``tf_``/``legacy_`` kept)."""
    import timm

    families: dict[str, list[str]] = {}
    for name in timm.list_models():
        if name.startswith("test_"):
            continue
        module = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
        parts = name.split("_")
        word = "_".join(parts[:2]) if parts[0] in ("tf", "legacy") and len(parts) > 1 else parts[0]
        families.setdefault(f"{module}/{re.sub(r'[0-9.]+.*$', '', word) or word}", []).append(name)
    return families


def timm_param_counts(names: Iterable[str]) -> dict[str, int]:
    """Parameter counts, built on the meta device (no memory, no init) and cached per timm version."""
    import timm

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "attn-surgeon"
    path = cache / f"timm-{timm.__version__}-params.json"
    counts: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in names if name not in counts]
    for name in missing:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            counts[name] = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(counts, indent=0, sort_keys=True))
    return counts


def timm_entries(family_globs: list[str]) -> list[Entry]:
    import timm

    families = {family: names for family, names in sorted(timm_families().items())
                if not family_globs or any(fnmatch.fnmatch(family, glob) for glob in family_globs)}
    counts = timm_param_counts(name for names in families.values() for name in names)
    entries = []
    for family, names in families.items():
        name = min(names, key=lambda n: (counts[n], n))
        cfg = timm.models.get_pretrained_cfg(name)
        size = cfg.input_size[-1] if cfg is not None else 224
        low = max(64, (cfg.min_input_size or (0, 0, 0))[-1]) if cfg is not None else 64
        sizes = (size,) if cfg is not None and cfg.fixed_input_size else tuple(dict.fromkeys((low, size)))
        entries.append(Entry("timm", family, name, lambda n=name: timm.create_model(n, pretrained=False), sizes))
    return entries


def yolo_entries() -> list[Entry]:
    def build() -> nn.Module:
        from ultralytics.nn.tasks import DetectionModel

        return DetectionModel("yolov8n.yaml", verbose=False)

    return [Entry("yolo", "yolov8", "yolov8n", build, sizes=(64,), block=block, sites=("C2f",), position="after",
                  routing=("f", "i")) for block in ("cbam", "ca")]


def transformers_entries() -> list[Entry]:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    def build(cls: type) -> Callable[[], nn.Module]:
        return lambda: cls(cls.config_class()).eval()

    entries = []
    for model_type, names in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items():
        for name in (names,) if isinstance(names, str) else names:
            cls = getattr(transformers, name, None)
            if model_type in TRANSFORMERS_LEFT_OUT or cls is None or cls.main_input_name != "pixel_values":
                continue
            size = getattr(cls.config_class(), "image_size", None)
            sizes = (size,) if isinstance(size, int) else (64, 224)
            entries.append(Entry("transformers", model_type, name, build(cls), sizes))
    return entries


def catalogue(sources: Iterable[str], family_globs: list[str]) -> list[Entry]:
    """Every entry of the chosen sources, filtered by family glob."""
    entries: list[Entry] = []
    for source in sources:
        if source == "timm":
            entries += timm_entries(family_globs)
            continue
        found = {"torchvision": torchvision_entries, "detection": detection_entries, "yolo": yolo_entries,
                 "transformers": transformers_entries}[source]()
        entries += [e for e in found if not family_globs or any(fnmatch.fnmatch(e.family, g) for g in family_globs)]
    return entries
