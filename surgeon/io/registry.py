"""The framework registry: one :class:`~surgeon.io.adapter.FrameworkAdapter` per framework, by name, and the lookups
that choose one — for a spec, a model directory, a class a pickle refers to, a model.

torchvision and timm are registered here; :mod:`surgeon.integrations` registers Ultralytics and transformers when
``surgeon`` is imported. A spec whose prefix names no adapter is a ``package.module:factory``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from .adapter import FrameworkAdapter, ReferenceFlops
from .builtin import TimmAdapter, TorchvisionAdapter
from .layouts import Layout
from .specs import build_factory

__all__ = ["adapter_named", "adapter_of_directory", "adapter_of_global", "adapter_of_model", "adapters",
           "build_arch", "model_places", "native_layout", "reference_flops", "register", "registered", "unregister"]

_ADAPTERS: dict[str, FrameworkAdapter] = {adapter.name: adapter for adapter in (TorchvisionAdapter(), TimmAdapter())}


def register(adapter: FrameworkAdapter, *, replace: bool = False) -> FrameworkAdapter:
    """Register ``adapter`` under its name; return it.

    Raises:
        TypeError: ``adapter`` is not a :class:`FrameworkAdapter` instance.
        ValueError: its name is empty, or taken by another adapter and ``replace`` is false.
    """
    if not isinstance(adapter, FrameworkAdapter):
        raise TypeError(f"the framework registry holds FrameworkAdapter instances, not {type(adapter).__name__}")
    if not adapter.name or ":" in adapter.name:
        raise ValueError(f"{type(adapter).__name__}.name must be a spec prefix (no ':'), not {adapter.name!r}")
    if adapter.name in _ADAPTERS and not replace:
        raise ValueError(f"a framework named {adapter.name!r} is registered already "
                         f"({type(_ADAPTERS[adapter.name]).__name__}); pass replace=True to replace it")
    _ADAPTERS[adapter.name] = adapter
    return adapter


def unregister(name: str) -> FrameworkAdapter:
    """Remove the adapter registered as ``name`` and return it.

    Raises:
        KeyError: no adapter has that name.
    """
    return _ADAPTERS.pop(name)


@contextmanager
def registered(adapter: FrameworkAdapter) -> Iterator[FrameworkAdapter]:
    """Register ``adapter`` for the duration of a ``with`` block (whatever had its name before comes back after)."""
    previous = _ADAPTERS.get(adapter.name)
    register(adapter, replace=True)
    try:
        yield adapter
    finally:
        if previous is None:
            _ADAPTERS.pop(adapter.name, None)
        else:
            _ADAPTERS[adapter.name] = previous


def adapters() -> tuple[FrameworkAdapter, ...]:
    """Every registered adapter, in registration order."""
    return tuple(_ADAPTERS.values())


def adapter_named(name: str | None) -> FrameworkAdapter | None:
    """The adapter registered as ``name`` (a spec prefix, or a ``Layout.framework``), or ``None``."""
    return _ADAPTERS.get(name) if name else None


def build_arch(spec: str, **arch_args: Any) -> nn.Module:
    """Build a spec with random weights: ``NAME:MODEL`` by the adapter registered as ``NAME``, anything else as
    ``package.module:factory``.

    Raises:
        ModelLoadError: unknown library or model name (with the closest names), or a factory that fails.
    """
    library, _, name = spec.partition(":")
    adapter = _ADAPTERS.get(library)
    return adapter.build(name, **arch_args) if adapter is not None else build_factory(spec, **arch_args)


def adapter_of_directory(path: str | os.PathLike[str]) -> FrameworkAdapter | None:
    """The adapter whose model directory ``path`` is, or ``None`` (not a directory, or no one's)."""
    path = Path(path)
    if not path.is_dir():
        return None
    return next((adapter for adapter in _ADAPTERS.values() if adapter.is_model_directory(path)), None)


def adapter_of_global(name: str) -> FrameworkAdapter | None:
    """The adapter a pickled global (``ultralytics.nn.tasks.DetectionModel``) belongs to, or ``None``."""
    return next((adapter for adapter in _ADAPTERS.values() if adapter.owns_global(name)), None)


def adapter_of_model(model: nn.Module) -> FrameworkAdapter | None:
    """The adapter whose model ``model`` is, or ``None``."""
    return next((adapter for adapter in _ADAPTERS.values() if adapter.owns(model)), None)


def native_layout(model: nn.Module) -> Layout | None:
    """The native layout of a framework's model, or ``None`` for a model saved as a plain checkpoint."""
    return next((layout for adapter in _ADAPTERS.values() if (layout := adapter.native_layout(model)) is not None),
                None)


def model_places(model: nn.Module) -> dict[str, str]:
    """The places people put attention in a framework's model, by site name (empty for any other model)."""
    return next((found for adapter in _ADAPTERS.values() if (found := adapter.places(model))), {})


def reference_flops(model: nn.Module) -> tuple[str, ReferenceFlops] | None:
    """The framework whose model this is and the GFLOPs it reports for it, or ``None``."""
    return next(((adapter.name, found) for adapter in _ADAPTERS.values()
                 if (found := adapter.reference_flops(model)) is not None), None)
