"""Architecture specs: ``LIBRARY:NAME`` (``torchvision:resnet50``, ``timm:resnet50d``, a framework's
``ultralytics:yolov8n.yaml``) or ``package.module:factory``, built with random weights, nothing downloaded.

This module builds the libraries attn-surgeon knows without a framework adapter: torchvision, timm and a Python
factory. A spec of a registered framework is built by its adapter (:func:`surgeon.io.registry.build_arch` chooses).
:func:`meta_model` builds one on the ``meta`` device with weight initialisation skipped (no memory, no random
numbers), which is how architecture detection reads a candidate's keys and shapes in milliseconds.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ModelLoadError

__all__ = ["build_builtin", "build_factory", "build_timm", "build_torchvision", "is_spec", "meta_model"]

# In-place ops that change a tensor's shape or identity must still run while init is skipped.
_SHAPING_OPS = {"resize_", "resize_as_", "set_", "as_strided_", "requires_grad_", "share_memory_", "retain_grad"}


def is_spec(source: str) -> bool:
    """``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory`` (not an existing file)."""
    if os.path.exists(source):
        return False
    head, sep, tail = source.partition(":")
    return bool(sep and tail and head.replace(".", "").replace("_", "").isalnum())


def _suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def build_torchvision(name: str, **kwargs: Any) -> nn.Module:
    """``torchvision:NAME`` with random weights (``weights=None``, and ``weights_backbone=None`` where it has one).

    Raises:
        ModelLoadError: no such torchvision model (with the closest names), or a factory that fails.
    """
    import torchvision

    if name not in torchvision.models.list_models():
        raise ModelLoadError(f"unknown torchvision model {name!r}{_suggest(name, torchvision.models.list_models())}")
    builder = torchvision.models.get_model_builder(name)
    params = inspect.signature(builder).parameters
    defaults = {"weights": None, **({"weights_backbone": None} if "weights_backbone" in params else {})}
    return _call(f"torchvision:{name}", builder, **{**defaults, **kwargs})


def build_timm(name: str, **kwargs: Any) -> nn.Module:
    """``timm:NAME`` with random weights (``pretrained=False``).

    Raises:
        ModelLoadError: no such timm model (with the closest names), or a factory that fails.
    """
    import timm

    if not timm.is_model(name):
        raise ModelLoadError(f"unknown timm model {name!r}{_suggest(name, timm.list_models())}")
    return _call(f"timm:{name}", timm.create_model, name, pretrained=False, **kwargs)


def build_factory(spec: str, **kwargs: Any) -> nn.Module:
    """``package.module:factory``: import the module and call the factory (this runs the user's code).

    Raises:
        ModelLoadError: the module or the factory cannot be imported, or the factory fails.
    """
    library, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(library), name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import {spec!r}: {exc}; use torchvision:NAME, timm:NAME or "
                             "package.module:factory") from None
    return _call(spec, factory, **kwargs)


def build_builtin(spec: str, **kwargs: Any) -> nn.Module:
    """Build ``spec`` of torchvision, timm or a Python factory, with random weights."""
    library, _, name = spec.partition(":")
    if library == "torchvision":
        return build_torchvision(name, **kwargs)
    if library == "timm":
        return build_timm(name, **kwargs)
    return build_factory(spec, **kwargs)


def _call(spec: str, factory: Any, *args: Any, **kwargs: Any) -> nn.Module:
    try:
        model = factory(*args, **kwargs)
    except TypeError as exc:
        raise ModelLoadError(f"cannot build {spec!r}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


class _SkipInit(TorchFunctionMode):
    """Skips in-place ops on meta tensors: weight init has no values to write there, and it dominates build time."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if (name.endswith("_") and not name.endswith("__") and name not in _SHAPING_OPS and args
                and isinstance(args[0], torch.Tensor) and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


def meta_model(spec: str, arch_args: Mapping[str, Any] | None = None) -> nn.Module:
    """Build ``spec`` (torchvision, timm or a factory: what detection proposes) on the meta device without running
    weight initialisation."""
    with warnings.catch_warnings(), torch.device("meta"), _SkipInit():
        warnings.simplefilter("ignore")
        return build_builtin(spec, **dict(arch_args or {}))
