"""Other frameworks' specs, model directories, checkpoint files and native layouts, registered by
:mod:`surgeon.integrations`.

A leaf: it imports nothing of attn-surgeon, so the modules that read and write models (:mod:`surgeon.files`,
:mod:`surgeon.checkpoint`), the profiler and the CLI consult it without knowing any framework, and each registered
callable imports its framework only when called.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["BUILDERS", "FRAMEWORKS", "Framework", "ReferenceFlops", "framework_layout", "framework_of_directory",
           "framework_of_global", "framework_of_module", "model_places", "reference_flops", "writes_directory"]

BUILDERS: dict[str, Callable[..., nn.Module]] = {}
"""Spec builders by spec prefix (``transformers`` for ``transformers:ResNetForImageClassification``):
``(name, **arch_args) -> module``, random weights, nothing downloaded."""


@dataclass(frozen=True)
class ReferenceFlops:
    """The GFLOPs a framework itself reports for one of its models, to be stated beside attn-surgeon's count.

    Attributes:
        counter: what the user runs to see the number (``model.info()``).
        method: how that counter counts (``thop: 2 x conv/linear MACs``).
        image_shape: the ``(C, H, W)`` input it counts at (the framework's default image size).
        input_label: that input in the framework's words (``Ultralytics' default imgsz=640``).
        gflops: its number, or ``None`` where the framework cannot count here (a counter it needs is missing).
    """

    counter: str
    method: str
    image_shape: tuple[int, ...]
    input_label: str
    gflops: float | None


@dataclass(frozen=True)
class Framework:
    """A framework whose models, model directories or checkpoint files are read and written in its own layout.

    The callables deal in :mod:`surgeon.checkpoint`'s ``Layout``, ``LoadedModel`` and ``SaveResult`` and in
    recipes, which this leaf does not import (they are typed ``Any`` here). A framework fills in what it has: model
    directories (Hugging Face's ``save_pretrained``), or pickled checkpoint files (Ultralytics' ``YOLO.save``).

    Attributes:
        name: the spec prefix of its models, and the ``Layout.framework`` of its layout.
        layout: ``module -> Layout | None``: the native layout a model of the framework is saved in; ``None`` for a
            model that is not one of the framework's.
        save: ``(model, path, recipe, layout, force, protect) -> SaveResult``: write the native layout.
        is_directory: ``path -> bool``: whether a directory is one of the framework's model directories (by content).
        load_directory: ``(path, arch, arch_args, trust_code) -> LoadedModel``: the model of such a directory, with
            its blocks (a recipe that imports code is refused without ``trust_code``).
        read_recipe: ``path -> Recipe | None``: the recipe a model directory records.
        writes_directory: whether that layout is a directory (the default output name then has no file suffix).
        title: what messages call its checkpoint files (``an Ultralytics checkpoint``).
        owns: ``global_name -> bool``: whether a class a pickle refers to (``ultralytics.nn.tasks.DetectionModel``)
            is one of the framework's, which names the file as the framework's.
        restricted_load: ``path -> object | None``: the framework's own weights-only loader, tried on a file of its
            own that the user trusts before anything is fully unpickled; ``None`` where it refuses the file.
        adopt: ``module -> module``, applied to one of its modules unpickled from a file (as its own loader does).
        places: ``module -> {site name: place}``: the places people put attention in its models, by name.
        reference_flops: ``module -> ReferenceFlops | None``: the GFLOPs the framework reports for one of its models.
    """

    name: str
    layout: Callable[[nn.Module], Any]
    save: Callable[..., Any]
    is_directory: Callable[[Path], bool] | None = None
    load_directory: Callable[[Path, str | None, dict[str, Any], bool], Any] | None = None
    read_recipe: Callable[[Path], Any] | None = None
    writes_directory: bool = False
    title: str | None = None
    owns: Callable[[str], bool] | None = None
    restricted_load: Callable[[Path], Any] | None = None
    adopt: Callable[[nn.Module], nn.Module] | None = None
    places: Callable[[nn.Module], dict[str, str]] | None = None
    reference_flops: Callable[[nn.Module], ReferenceFlops | None] | None = None


FRAMEWORKS: dict[str, Framework] = {}


def framework_of_directory(path: str | os.PathLike[str]) -> Framework | None:
    """The registered framework whose model directory ``path`` is, or ``None`` (not a directory, or no one's)."""
    path = Path(path)
    if not path.is_dir():
        return None
    return next((framework for framework in FRAMEWORKS.values()
                 if framework.is_directory is not None and framework.is_directory(path)), None)


def framework_layout(model: nn.Module) -> Any:
    """The native ``Layout`` of a model of a registered framework, or ``None``."""
    return next((layout for framework in FRAMEWORKS.values() if (layout := framework.layout(model)) is not None),
                None)


def writes_directory(source: str) -> bool:
    """Whether a patched model of ``source`` (a spec or a path) is written as a directory: a transformers spec or
    model directory."""
    library, sep, _ = source.partition(":")
    if sep and not os.path.exists(source):
        return library in FRAMEWORKS and FRAMEWORKS[library].writes_directory
    framework = framework_of_directory(source)
    return framework is not None and framework.writes_directory


def framework_of_global(name: str) -> Framework | None:
    """The registered framework a pickled global (``ultralytics.nn.tasks.DetectionModel``) belongs to, or ``None``."""
    return next((framework for framework in FRAMEWORKS.values()
                 if framework.owns is not None and framework.owns(name)), None)


def framework_of_module(module: nn.Module) -> Framework | None:
    """The registered framework whose class ``module`` is an instance of (by the class's import path), or ``None``."""
    return framework_of_global(f"{type(module).__module__}.{type(module).__qualname__}")


def model_places(model: nn.Module) -> dict[str, str]:
    """The places people put attention in a framework's model, by site name (empty for any other model)."""
    for framework in FRAMEWORKS.values():
        found = framework.places(model) if framework.places is not None else {}
        if found:
            return found
    return {}


def reference_flops(model: nn.Module) -> tuple[str, ReferenceFlops] | None:
    """The framework whose model this is and the GFLOPs it reports for it, or ``None``."""
    for framework in FRAMEWORKS.values():
        found = framework.reference_flops(model) if framework.reference_flops is not None else None
        if found is not None:
            return framework.name, found
    return None
