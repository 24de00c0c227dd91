"""Model sources in, patched checkpoints out.

Sources: ``torchvision:NAME`` and ``timm:NAME`` (random init, nothing downloaded), ``package.module:factory``,
or a checkpoint file: a bare state_dict, or a container holding one under ``state_dict``/``model``/
``state_dict_ema``/``model_ema``/``module``, with or without DDP's ``module.`` prefix. Every file is read with
``torch.load(weights_only=True)``: nothing in it can run code.

Saved files keep the input's layout (a bare state_dict stays bare; a container keeps its other entries and key
prefix). The recipe travels inside the state_dict's ``_metadata`` (the mapping torch itself uses for per-module
versions, which survives ``weights_only=True`` and is ignored by ``load_state_dict``), so even a bare file
rebuilds with :func:`load`. Writes are atomic and never overwrite without ``force``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import io
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .errors import CheckpointError, ModelLoadError, OutputExistsError
from .recipe import Recipe

__all__ = [
    "Layout",
    "LoadedModel",
    "RECIPE_KEY",
    "CONTAINER_KEYS",
    "build_arch",
    "is_spec",
    "load_model",
    "read_checkpoint",
    "save_model",
    "atomic_write",
]

RECIPE_KEY = "__surgeon__"
CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")
_OPTIMIZER_KEYS = ("optimizer", "optimizers", "optimizer_state_dict", "optimizer_states", "opt", "scaler",
                   "lr_scheduler", "scheduler", "lr_schedulers")


@dataclass
class Layout:
    """How the input stored its weights, so the output stores them the same way.

    Attributes:
        kind: ``spec`` (built from a name), ``bare`` (the file was a state_dict) or ``container``.
        key: the container entry that held the state_dict.
        prefix: a key prefix common to every tensor (``module.``), removed on load and restored on save.
        extras: the container's other entries, written back unchanged.
    """

    kind: Literal["spec", "bare", "container"] = "spec"
    key: str | None = None
    prefix: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """Result of :func:`load_model`."""

    module: nn.Module
    spec: str | None
    arch_args: dict[str, Any] = field(default_factory=dict)
    layout: Layout = field(default_factory=Layout)
    path: Path | None = None
    recipe: Recipe | None = None


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


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True)`` with every failure turned into one clear :class:`CheckpointError`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: not readable (permission denied)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0]
        if "Weights only load failed" in reason or "weights_only" in str(exc):
            raise CheckpointError(
                f"{path}: refusing to unpickle code; the file holds more than tensors and plain data, and loading "
                "it would run code it contains. Save a state_dict instead, or pass --trust-pickle if you trust "
                "this file") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or truncated ({reason})") from None


def _split_container(obj: Any, path: Path) -> tuple[Mapping[str, torch.Tensor], Layout]:
    if _is_state_dict(obj):
        return obj, Layout("bare")
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if _is_state_dict(obj.get(key)):
                extras = {k: v for k, v in obj.items() if k != key}
                return obj[key], Layout("container", key=key, extras=extras)
    found = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path}: no state_dict found (looked for a mapping of tensors, or one under "
                          f"{', '.join(CONTAINER_KEYS)}; found {found})")


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> tuple[OrderedDict[str, torch.Tensor], str]:
    prefix = "module." if all(key.startswith("module.") for key in state) else ""
    stripped = OrderedDict((key[len(prefix):], value) for key, value in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        stripped._metadata = OrderedDict(  # type: ignore[attr-defined]
            (key[len(prefix):] if key.startswith(prefix) else ("" if key == prefix[:-1] else key), value)
            for key, value in metadata.items())
    return stripped, prefix


def _load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("with other shapes", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise CheckpointError(f"the checkpoint's tensors do not fit {what}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_model(source: str | os.PathLike[str], arch: str | None = None, arch_args: dict[str, Any] | None = None,
               trust_code: bool = False) -> LoadedModel:
    """Turn a spec or a checkpoint file into a model with its weights.

    A checkpoint written by attn-surgeon is rebuilt from its recipe (base architecture + the same surgery) and
    then loaded with ``strict=True``.

    Args:
        source: a spec (``torchvision:resnet50``) or a file path.
        arch: architecture spec for a file that holds only weights.
        arch_args: keyword arguments for the architecture's factory.
        trust_code: allow a recipe whose base is a ``package.module:factory`` (imports and runs that factory).

    Raises:
        ModelLoadError, CheckpointError: with one line that says what is wrong and what to do.
    """
    arch_args = dict(arch_args or {})
    source = str(source)
    if is_spec(source):
        return LoadedModel(build_arch(source, **arch_args), source, arch_args)
    path = Path(source)
    state, layout = _split_container(read_checkpoint(path), path)
    state, layout.prefix = _strip_prefix(state)
    raw_recipe = getattr(state, "_metadata", {}).get(RECIPE_KEY)
    recipe = Recipe.from_dict(raw_recipe) if raw_recipe is not None else None
    if recipe is not None and arch is None:
        arch, arch_args = recipe.base, {**recipe.arch_args, **arch_args}
        if arch is None:
            raise ModelLoadError(f"{path}: patched from a model without a named architecture; pass --arch SPEC")
        if arch.split(":", 1)[0] not in ("torchvision", "timm") and not trust_code:
            raise ModelLoadError(f"{path}: its recipe builds {arch!r}, which imports and runs code; pass "
                                 "--trust-code if you trust it, or --arch SPEC")
    if arch is None:
        raise ModelLoadError(f"{path}: the file holds only weights; pass --arch SPEC "
                             "(e.g. --arch torchvision:resnet50)")
    model = build_arch(arch, **arch_args)
    if recipe is not None:
        from .pipeline import replay

        replay(model, recipe)
    _load_weights(model, state, f"--arch {arch}" if recipe is None else f"{arch} patched by its recipe")
    return LoadedModel(model, arch, arch_args, layout, path, recipe)


def atomic_write(path: str | os.PathLike[str], write: Any, force: bool = False,
                 protect: tuple[str | os.PathLike[str], ...] = ()) -> Path:
    """Call ``write(fileobj)`` into a temporary file beside ``path``, then rename it into place.

    A failure leaves no partial file. ``protect`` lists paths (the inputs) that are never overwritten.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false, or ``path`` is one of ``protect``.
        CheckpointError: the directory is missing or not writable, or the write failed (e.g. disk full).
    """
    path = Path(path)
    for other in protect:
        if Path(other).exists() and path.exists() and path.resolve() == Path(other).resolve():
            raise OutputExistsError(f"{path}: is the input file; choose another output path")
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: exists; pass --force to overwrite it")
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a directory; give a file path")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CheckpointError(f"{path}: directory {directory} does not exist")
    try:
        handle, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write in {directory} ({exc.strerror})") from None
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointError(f"{path}: write failed ({exc.strerror or exc}); nothing was written") from None
        raise
    return path


def _with_prefix(state: OrderedDict[str, torch.Tensor], prefix: str) -> OrderedDict[str, torch.Tensor]:
    if not prefix:
        return state
    prefixed = OrderedDict((prefix + key, value) for key, value in state.items())
    prefixed._metadata = OrderedDict(  # type: ignore[attr-defined]
        (RECIPE_KEY if key == RECIPE_KEY else (prefix + key if key else prefix[:-1]), value)
        for key, value in state._metadata.items())  # type: ignore[attr-defined]
    return prefixed


def save_model(model: nn.Module, path: str | os.PathLike[str], recipe: Recipe, layout: Layout | None = None,
               force: bool = False, protect: tuple[str | os.PathLike[str], ...] = ()) -> list[str]:
    """Write ``model``'s state_dict with ``recipe``, in ``layout``; return the container entries dropped.

    Optimizer and scheduler state is dropped (it refers to parameters by position and cannot match the new
    parameter list); the caller warns about it.
    """
    layout = layout or Layout()
    state = model.state_dict()
    state._metadata[RECIPE_KEY] = recipe.to_dict()  # type: ignore[attr-defined]
    state = _with_prefix(state, layout.prefix)
    dropped: list[str] = []
    payload: Any = state
    if layout.kind == "container":
        payload = {}
        for key, value in layout.extras.items():
            if key in _OPTIMIZER_KEYS:
                dropped.append(key)
            else:
                payload[key] = value
        payload[layout.key or "state_dict"] = state

    def write(file: io.BufferedWriter) -> None:
        torch.save(payload, file)

    atomic_write(path, write, force=force, protect=protect)
    return dropped
