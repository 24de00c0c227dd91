"""The Ultralytics adapter: what :mod:`surgeon.io` and the pipeline ask of Ultralytics, each answered by the module
of this package that knows it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ...io import FrameworkAdapter, Layout, ReferenceFlops, Replay, SaveResult
from ...recipe import Recipe
from . import files, models, reporting, training

__all__ = ["UltralyticsAdapter"]


class UltralyticsAdapter(FrameworkAdapter):
    """Ultralytics YOLO: ``ultralytics:NAME.yaml`` specs, its pickled checkpoints, its trainer's rebuilds."""

    name = models.NAME
    title = "an Ultralytics checkpoint"

    def build(self, name: str, **arch_args: Any) -> nn.Module:
        return models.build(name, **arch_args)

    def owns(self, model: nn.Module) -> bool:
        return models.is_ultralytics_model(model)

    def owns_global(self, global_name: str) -> bool:
        return models.owns(global_name)

    def restricted_load(self, path: Path) -> Any:
        return files.restricted_load(path)

    def adopt(self, model: nn.Module) -> nn.Module:
        return files.adopt(model)

    def native_layout(self, model: nn.Module) -> Layout | None:
        return files.native_layout(model)

    def write(self, model: nn.Module, path: Path, recipe: Recipe, layout: Layout, *, force: bool = False,
              protect: tuple[Path, ...] = ()) -> SaveResult:
        return files.write(model, path, recipe, layout, force=force, protect=protect)

    def install_training_hooks(self, replay: Replay) -> None:
        """Wrap Ultralytics' model construction, now if Ultralytics is imported, else right after it is."""
        training.install_when_used(replay)

    def reference_flops(self, model: nn.Module) -> ReferenceFlops | None:
        return reporting.reference_flops(model)

    def places(self, model: nn.Module) -> dict[str, str]:
        return reporting.places(model)

    def train(self, model: nn.Module, *, seed: int, workdir: Path, args: Mapping[str, Any],
              metric: str) -> dict[str, float]:
        """Train with Ultralytics' own trainer (``YOLO.train``), which keeps the blocks through the training hook."""
        from .trainer import train  # imports Ultralytics' training machinery only when a trial runs

        return train(model, seed=seed, workdir=workdir, args=args, metric=metric)
