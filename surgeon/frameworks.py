"""Other frameworks' specs, model directories and native layouts, registered by :mod:`surgeon.integrations`.

A leaf: it imports nothing of attn-surgeon, so the modules that read and write models (:mod:`surgeon.checkpoint`)
consult it without knowing any framework, and each registered callable imports its framework only when called.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["BUILDERS", "FRAMEWORKS", "Framework", "framework_layout", "framework_of_directory", "writes_directory"]

BUILDERS: dict[str, Callable[..., nn.Module]] = {}
"""Spec builders by spec prefix (``transformers`` for ``transformers:ResNetForImageClassification``):
``(name, **arch_args) -> module``, random weights, nothing downloaded."""


@dataclass(frozen=True)
class Framework:
    """A framework whose model directories and models are read and written in its own layout.

    The callables deal in :mod:`surgeon.checkpoint`'s ``Layout``, ``LoadedModel`` and ``SaveResult`` and in
    recipes, which this leaf does not import (they are typed ``Any`` here).

    Attributes:
        name: the spec prefix of its models, and the ``Layout.framework`` of its layout.
        layout: ``module -> Layout | None``: the native layout a model of the framework is saved in; ``None`` for a
            model that is not one of the framework's.
        is_directory: ``path -> bool``: whether a directory is one of the framework's model directories (by content).
        load_directory: ``(path, arch, arch_args, trust_code) -> LoadedModel``: the model of such a directory, with
            its blocks (a recipe that imports code is refused without ``trust_code``).
        read_recipe: ``path -> Recipe | None``: the recipe a model directory records.
        save: ``(model, path, recipe, layout, force, protect) -> SaveResult``: write the native layout.
        writes_directory: whether that layout is a directory (the default output name then has no file suffix).
    """

    name: str
    layout: Callable[[nn.Module], Any]
    is_directory: Callable[[Path], bool]
    load_directory: Callable[[Path, str | None, dict[str, Any], bool], Any]
    read_recipe: Callable[[Path], Any]
    save: Callable[..., Any]
    writes_directory: bool = False


FRAMEWORKS: dict[str, Framework] = {}


def framework_of_directory(path: str | os.PathLike[str]) -> Framework | None:
    """The registered framework whose model directory ``path`` is, or ``None`` (not a directory, or no one's)."""
    path = Path(path)
    if not path.is_dir():
        return None
    return next((framework for framework in FRAMEWORKS.values() if framework.is_directory(path)), None)


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
