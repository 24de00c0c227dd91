"""The transformers adapter: what :mod:`surgeon.io` and the pipeline ask of Hugging Face transformers, each answered
by the module of this package that knows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...io import FrameworkAdapter, Layout, LoadedModel, LoadOptions, ReferenceFlops, SaveResult
from ...recipe import Recipe
from . import files, models, reporting, training

__all__ = ["TransformersAdapter"]


class TransformersAdapter(FrameworkAdapter):
    """Hugging Face transformers vision models: ``transformers:ClassName`` specs, ``save_pretrained`` directories,
    the recipe kept in ``config.json``."""

    name = "transformers"
    writes_directory = True

    def build(self, name: str, **arch_args: Any) -> nn.Module:
        return models.build(name, **arch_args)

    def owns(self, model: nn.Module) -> bool:
        return models.is_transformers_model(model)

    def is_model_directory(self, path: Path) -> bool:
        return files.is_model_directory(path)

    def read_directory(self, path: Path, options: LoadOptions) -> LoadedModel:
        return files.read_directory(path, options)

    def read_recipe(self, path: Path) -> Recipe | None:
        return files.read_recipe(path)

    def load_state(self, loaded: LoadedModel) -> None:
        files.load_state(loaded)

    def native_layout(self, model: nn.Module) -> Layout | None:
        return files.native_layout(model)

    def write(self, model: nn.Module, path: Path, recipe: Recipe, layout: Layout, *, force: bool = False,
              protect: tuple[Path, ...] = ()) -> SaveResult:
        return files.write_directory(model, path, recipe, layout, force=force, protect=protect)

    def check_model(self, model: nn.Module) -> None:
        training.check_blocks(model)

    def note_recipe(self, model: nn.Module, recipe: Recipe) -> None:
        training.note_recipe(model, recipe)

    def reference_flops(self, model: nn.Module) -> ReferenceFlops | None:
        return reporting.reference_flops(model)

    def places(self, model: nn.Module) -> dict[str, str]:
        return reporting.places(model)
