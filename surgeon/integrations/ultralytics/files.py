"""Ultralytics checkpoints: read through Ultralytics' own restricted loader, written in Ultralytics' own layout."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import pickle
from pathlib import Path
from typing import Any

from torch import nn

from ...io import Layout, SaveResult
from ...io.saving import write_checkpoint
from ...recipe import Recipe
from .models import NAME, is_ultralytics_model
from .training import record_recipe

__all__ = ["adopt", "native_layout", "restricted_load", "write"]


def native_layout(model: nn.Module) -> Layout | None:
    """The layout of ``YOLO(...).save(path)`` for an Ultralytics model: the model pickled whole under ``model``, with
    its metadata; ``None`` for any other model."""
    if not is_ultralytics_model(model):
        return None
    import ultralytics

    extras = {"ema": None, "date": datetime.datetime.now().astimezone().isoformat(), "version": ultralytics.__version__,
              "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com"}
    return Layout("container", key="model", extras=extras, pickled=True, framework=NAME)


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
    return model.float()


def write(model: nn.Module, path: str | os.PathLike[str], recipe: Recipe, layout: Layout, *, force: bool = False,
          protect: tuple[str | os.PathLike[str], ...] = ()) -> SaveResult:
    """Write an Ultralytics checkpoint as ``YOLO.save()`` does: a half-precision copy of the model pickled whole, in
    the container ``layout`` describes (its other entries kept, optimizer state dropped, an EMA copy written as the
    pipeline patched it).

    The recipe goes into ``model.yaml`` (of the caller's model too), which every trainer rebuilds from.
    """
    record_recipe(model, recipe)
    pickled = copy.deepcopy(model).half()
    result = write_checkpoint(pickled, path, recipe, dataclasses.replace(layout, framework=None, pickled=True),
                              force=force, protect=protect, pickle_note=False)
    result.notes.append("the output is an Ultralytics checkpoint in its own layout, the model pickled whole: "
                        "YOLO(path) and the yolo command load it (here: --trust-pickle) wherever attn-surgeon is "
                        "installed")
    return result
