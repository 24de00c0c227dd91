"""Ultralytics models and files: ``ultralytics:NAME.yaml`` specs, and checkpoints in Ultralytics' own layout."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import logging
import os
import pickle
from pathlib import Path
from typing import Any

from torch import nn

from ...checkpoint import Layout, SaveResult
from ...errors import ModelLoadError
from ...pipeline import recipe_of, save_model
from ...recipe import Recipe
from .training import install, record_recipe

__all__ = ["NAME", "adopt", "build", "is_rtdetr", "is_ultralytics_model", "native_layout", "owns", "restricted_load", "save"]

NAME = "ultralytics"
"""The spec prefix (``ultralytics:yolov8n.yaml``) and the ``Layout.framework`` of Ultralytics' checkpoints."""


def build(name: str, **arch_args: Any) -> nn.Module:
    """``ultralytics:NAME.yaml``: the model Ultralytics builds from that yaml, random weights, nothing downloaded.

    ``arch_args``: ``nc`` (number of classes) and ``ch`` (input channels), as Ultralytics' model classes take them.
    """
    if not name.endswith((".yaml", ".yml")):
        raise ModelLoadError(f"ultralytics:{name}: give a model yaml (ultralytics:yolov8n.yaml, yolo11s-seg.yaml); "
                             "for trained weights pass the .pt file itself, with --trust-pickle")
    unknown = set(arch_args) - {"nc", "ch"}
    if unknown:
        raise ModelLoadError(f"ultralytics:{name}: unknown argument {sorted(unknown)[0]!r}; valid: nc, ch")
    from ultralytics import RTDETR, YOLO
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # ClassificationModel prints its summary even with verbose=False
    try:
        model = (RTDETR(name) if is_rtdetr(name) else YOLO(name, verbose=False)).model
        if arch_args:
            rebuilt = type(model)(model.yaml, verbose=False, **arch_args)
            rebuilt.args, rebuilt.task = model.args, model.task
            model = rebuilt
    except FileNotFoundError:
        raise ModelLoadError(f"ultralytics:{name}: Ultralytics has no model yaml by that name "
                             "(e.g. yolov8n.yaml, yolo11n.yaml, yolov8n-seg.yaml, yolo11n-cls.yaml)") from None
    finally:
        LOGGER.setLevel(level)
    return model


def is_rtdetr(name: str) -> bool:
    """Whether Ultralytics builds a yaml or checkpoint with ``RTDETR`` (its own trainer, loss and validator) rather
    than ``YOLO``: by the file's name, as the ``yolo`` command decides."""
    return "rtdetr" in Path(name).stem.lower()


def is_ultralytics_model(model: nn.Module) -> bool:
    """A model of Ultralytics' ``nn.tasks`` (YOLO detection, segmentation, classification, ...)."""
    return any(cls.__module__.startswith("ultralytics.nn.") for cls in type(model).__mro__[:-1]) and hasattr(
        model, "yaml")


def native_layout(model: nn.Module) -> Layout | None:
    """The layout of ``YOLO(...).save(path)`` for an Ultralytics model: the model pickled whole under ``model``, with
    its metadata; ``None`` for any other model."""
    if not is_ultralytics_model(model):
        return None
    import ultralytics

    extras = {"ema": None, "date": datetime.datetime.now().astimezone().isoformat(), "version": ultralytics.__version__,
              "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com"}
    return Layout("container", key="model", extras=extras, pickled=True, framework=NAME)


def owns(global_name: str) -> bool:
    """Whether a class a pickle refers to is Ultralytics' (which makes the file an Ultralytics checkpoint)."""
    return global_name.startswith("ultralytics.")


def restricted_load(path: Path) -> Any:
    """Ultralytics' own weights-only loader, or ``None`` where it refuses the file (a patched model's classes).

    As Ultralytics documents, the classes a restricted load allows stay allowed for ``torch.load(weights_only=True)``
    in this process.
    """
    from ultralytics.nn.tasks import torch_safe_load

    if path.suffix.lower() != ".pt":
        return None
    try:
        checkpoint = torch_safe_load(str(path), safe_only=True)[0]
    except (TypeError, pickle.UnpicklingError, ModuleNotFoundError, AttributeError, RuntimeError):
        return None
    # Ultralytics 8.3's safe_only stands placeholders in for the classes it does not rebuild: only a real model counts
    model = (checkpoint.get("ema") or checkpoint.get("model")) if isinstance(checkpoint, dict) else None
    return checkpoint if isinstance(model, nn.Module) else None


def adopt(model: nn.Module) -> nn.Module:
    """As Ultralytics' ``load_checkpoint`` does: checkpoints store half precision, models run in float."""
    if is_ultralytics_model(model) and recipe_of(model) is not None:
        install()  # a patched model from a file: it must not reach a trainer without the hook
    return model.float()


def save(model: nn.Module, path: str | os.PathLike[str], recipe: Recipe, layout: Layout, *, force: bool = False,
         protect: tuple[str | os.PathLike[str], ...] = ()) -> SaveResult:
    """Write an Ultralytics checkpoint as ``YOLO.save()`` does: a half-precision copy of the model pickled whole, in
    the container ``layout`` describes (its other entries kept, optimizer state dropped, an EMA copy patched too).

    The recipe goes into ``model.yaml`` (of the caller's model too), which every trainer rebuilds from.
    """
    record_recipe(model, recipe)
    pickled = copy.deepcopy(model).half()
    result = save_model(pickled, path, recipe, dataclasses.replace(layout, framework=None, pickled=True), force=force,
                        protect=protect, pickle_note=False)
    result.notes.append("the output is an Ultralytics checkpoint in its own layout, the model pickled whole: "
                        "YOLO(path) and the yolo command load it (here: --trust-pickle) wherever attn-surgeon is "
                        "installed")
    return result
