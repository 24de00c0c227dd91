"""Architecture specs: ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory``, built with random weights.

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

from .errors import ModelLoadError
from .frameworks import BUILDERS

__all__ = ["build_arch", "is_spec", "meta_model"]

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


def build_arch(spec: str, **kwargs: Any) -> nn.Module:
    """Build an architecture with random weights from a spec.

    Raises:
        ModelLoadError: unknown library or model name (with the closest names), or a factory that fails.
    """
    library, _, name = spec.partition(":")
    if library in BUILDERS:
        return BUILDERS[library](name, **kwargs)
    if library == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise ModelLoadError(f"unknown torchvision model {name!r}"
                                 f"{_suggest(name, torchvision.models.list_models())}")
        builder = torchvision.models.get_model_builder(name)
        params = inspect.signature(builder).parameters
        defaults = {"weights": None, **({"weights_backbone": None} if "weights_backbone" in params else {})}
        return _call(spec, builder, **{**defaults, **kwargs})
    if library == "timm":
        import timm

        if not timm.is_model(name):
            raise ModelLoadError(f"unknown timm model {name!r}{_suggest(name, timm.list_models())}")
        return _call(spec, timm.create_model, name, pretrained=False, **kwargs)
    try:
        factory = getattr(importlib.import_module(library), name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import {spec!r}: {exc}; use torchvision:NAME, timm:NAME or "
                             "package.module:factory") from None
    return _call(spec, factory, **kwargs)


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
    """Build ``spec`` on the meta device without running weight initialisation."""
    with warnings.catch_warnings(), torch.device("meta"), _SkipInit():
        warnings.simplefilter("ignore")
        return build_arch(spec, **dict(arch_args or {}))
