"""Ultralytics YOLO: model yaml specs, native checkpoints, and inserted blocks kept through Ultralytics' training.

Specs ``ultralytics:yolov8n.yaml`` (any model yaml Ultralytics ships: ``yolo11s-seg.yaml``, ``yolov8n-cls.yaml``)
build with random weights and download nothing (:mod:`.models`). A checkpoint file as Ultralytics writes it pickles
the model under ``model``/``ema``; it is read only with ``trust_pickle`` (refused otherwise with a message that names
it as an Ultralytics checkpoint), through Ultralytics' own restricted loader (``torch_safe_load(...,
safe_only=True)``) where that accepts the file. A patched model is written back in the same layout, pickled whole,
so ``YOLO("out.pt")`` and the ``yolo`` command load it as they load any checkpoint.

Ultralytics' trainer rebuilds every model from its ``model.yaml``: the recipe travels there, and a hook on
Ultralytics' model construction, in one documented place (:mod:`.training`), replays it, checked against the
Ultralytics version, failing loudly rather than training a patched model without its blocks. The pipeline installs it
when ``surgeon`` is imported (at once if Ultralytics is, else when Ultralytics is imported) and when it loads a
patched checkpoint; unpickling a patched model's yaml installs it too.

The package has the skeleton every integration has: :mod:`.adapter` (the :class:`UltralyticsAdapter`, registered
in :mod:`surgeon.io.registry`), :mod:`.models` (specs, recognising its models), :mod:`.files` (its checkpoints),
:mod:`.training` (the hook), :mod:`.reporting`; ``attn-surgeon ablate`` trains through Ultralytics' own trainer.

For reports (:mod:`.reporting`): the places people put attention in a YOLO, by name (``attn-surgeon sites``), and the
GFLOPs ``model.info()`` reports, stated beside attn-surgeon's count by the profile.
"""

from __future__ import annotations

from ...io import adapter_named
from ...io import register as register_adapter
from .adapter import UltralyticsAdapter
from .models import build, is_ultralytics_model
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

__all__ = ["CHECKED_VERSIONS", "MODEL_CLASSES", "YAML_KEY", "UltralyticsAdapter", "UltralyticsHookError", "YamlRecipe",
           "build", "info_gflops", "install", "install_when_used", "is_ultralytics_model", "places", "reference_flops",
           "register"]


def register() -> None:
    """Register the Ultralytics adapter in :mod:`surgeon.io.registry` (idempotent); the pipeline installs its hook."""
    if not isinstance(adapter_named(UltralyticsAdapter.name), UltralyticsAdapter):
        register_adapter(UltralyticsAdapter(), replace=True)
