"""Ultralytics models: ``ultralytics:NAME.yaml`` specs, and recognising Ultralytics' models and classes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import ModelLoadError

__all__ = ["NAME", "build", "is_rtdetr", "is_ultralytics_model", "owns"]

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


def owns(global_name: str) -> bool:
    """Whether a class a pickle refers to is Ultralytics' (which makes the file an Ultralytics checkpoint)."""
    return global_name.startswith("ultralytics.")
