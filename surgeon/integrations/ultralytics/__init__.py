"""Ultralytics YOLO: model yaml specs, native checkpoints, and inserted blocks kept through Ultralytics' training.

Specs ``ultralytics:yolov8n.yaml`` (any model yaml Ultralytics ships: ``yolo11s-seg.yaml``, ``yolov8n-cls.yaml``)
build with random weights and download nothing (:mod:`.models`). A checkpoint file as Ultralytics writes it pickles
the model under ``model``/``ema``; it is read only with ``trust_pickle`` (refused otherwise with a message that names
it as an Ultralytics checkpoint), through Ultralytics' own restricted loader (``torch_safe_load(...,
safe_only=True)``) where that accepts the file. A patched model is written back in the same layout, pickled whole,
so ``YOLO("out.pt")`` and the ``yolo`` command load it as they load any checkpoint.

Ultralytics' trainer rebuilds every model from its ``model.yaml``: the recipe travels there, and a hook on
Ultralytics' model construction, in one documented place (:mod:`.training`), replays it, checked against the
Ultralytics version, failing loudly rather than training a patched model without its blocks. It is installed when
``surgeon`` is imported (at once if Ultralytics is, else when Ultralytics is imported) and whenever a patched
model's yaml is unpickled.

For reports (:mod:`.reporting`): the places people put attention in a YOLO, by name (``attn-surgeon sites``), and the
GFLOPs ``model.info()`` reports, stated beside attn-surgeon's count by the profile.
"""

from __future__ import annotations

from ...frameworks import BUILDERS, FRAMEWORKS, Framework
from .models import NAME, adopt, build, is_ultralytics_model, native_layout, owns, restricted_load, save
from .reporting import info_gflops, places, reference_flops
from .training import (
    CHECKED_VERSIONS,
    MODEL_CLASSES,
    YAML_KEY,
    UltralyticsHookError,
    YamlRecipe,
    install,
    install_when_used,
)

__all__ = ["CHECKED_VERSIONS", "MODEL_CLASSES", "YAML_KEY", "UltralyticsHookError", "YamlRecipe", "build",
           "info_gflops", "install", "is_ultralytics_model", "places", "register"]


def register() -> None:
    """Register ``ultralytics:`` specs and Ultralytics checkpoint files, and install the hook where Ultralytics is in
    use (idempotent)."""
    BUILDERS[NAME] = build
    FRAMEWORKS[NAME] = Framework(
        name=NAME, layout=native_layout, save=save, title="an Ultralytics checkpoint", owns=owns,
        restricted_load=restricted_load, adopt=adopt, places=places, reference_flops=reference_flops)
    install_when_used()
