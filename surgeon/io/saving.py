"""Writing a patched model: in its framework's native layout, or as a plain checkpoint in the input's layout.

Saving writes; it never patches. A container's other entries are kept, optimizer state is dropped, EMA copies get
the new blocks' keys; the recipe goes into the state_dict's ``_metadata`` (or the safetensors header), so that
:func:`surgeon.load` rebuilds the model from the file alone. Writes are atomic and never overwrite without ``force``.
Where a patched model goes when the user names no output is decided here too (:func:`default_output`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..recipe import Recipe
from .files import atomic_write
from .layouts import CHECKPOINT_FORMATS, OPTIMIZER_KEYS, RECIPE_KEY, Layout, SaveResult, sibling_state, with_prefix
from .registry import adapter_named, adapter_of_directory, native_layout
from .specs import is_spec

__all__ = ["default_output", "save_model", "write_checkpoint", "writes_directory"]


def writes_directory(source: str) -> bool:
    """Whether a patched model of ``source`` (a spec or a path) is written as a directory: a spec or model directory
    of a framework that saves directories (transformers)."""
    library, sep, _ = source.partition(":")
    if sep and not os.path.exists(source):
        framework = adapter_named(library)
    else:
        framework = adapter_of_directory(source)
    return framework is not None and framework.writes_directory


def default_output(source: str, suffix: str, fmt: str | None = None) -> Path:
    """Where a patched checkpoint goes by default: ``resnet50_eca.pt`` for ``torchvision:resnet50``, ``ckpt_eca.pt``
    beside ``ckpt.pt`` (``.safetensors`` for ``fmt="safetensors"``); a directory for a framework whose models are
    saved as directories (``DIR_eca`` beside a model directory ``DIR``, ``ResNetForImageClassification_eca`` for a
    transformers spec)."""
    if writes_directory(source):
        path = Path(source.rsplit(":", 1)[-1] if is_spec(source) else source)
        return path.with_name(f"{path.name}_{suffix}")
    if is_spec(source):
        output = Path(f"{source.rsplit(':', 1)[-1]}_{suffix}.pt")
    else:
        path = Path(source)
        output = path.with_name(f"{path.stem}_{suffix}{path.suffix or '.pt'}")
    return output.with_suffix(".safetensors") if fmt == "safetensors" else output


def _plain(value: Any) -> Any:
    return vars(value).copy() if isinstance(value, argparse.Namespace) else value


def _safetensors_bytes(state: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    seen: set[int] = set()
    tensors = {}
    for key, tensor in state.items():
        tensor = tensor.detach().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():  # safetensors refuses tensors sharing memory (tied weights)
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return save(tensors, metadata)


def save_model(model: nn.Module, path: str | os.PathLike[str], recipe: Recipe, layout: Layout | None = None, *,
               force: bool = False, protect: tuple[str | os.PathLike[str], ...] = (),
               fmt: str | None = None) -> SaveResult:
    """Write ``model`` with ``recipe`` in ``layout``: its framework's native layout by that framework's adapter, else
    a plain checkpoint (:func:`write_checkpoint`). Writes only: a pickled EMA copy beside the weights is written as it
    is (the pipeline gave it the blocks after surgery).

    Args:
        model: the patched model.
        path: the file (or, for a framework that saves directories, the directory) to write.
        recipe: the recipe written with the weights.
        layout: the input's layout [default: the model's framework's native layout, else a bare state_dict].
        force: overwrite an existing output.
        protect: paths never overwritten (the inputs).
        fmt: ``pt`` or ``safetensors`` (see :func:`write_checkpoint`); not for a framework's native layout.

    Returns:
        The container entries dropped as optimizer state, and notes worth telling the user.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false, or ``path`` is one of ``protect``.
        CheckpointError: ``fmt`` for a native layout, an unknown ``fmt``, or a write that failed.
    """
    layout = layout or native_layout(model) or Layout()
    framework = adapter_named(layout.framework)
    if framework is None:
        return write_checkpoint(model, path, recipe, layout, force=force, protect=protect, fmt=fmt)
    if fmt is not None:
        raise CheckpointError(f"a model of {layout.framework} is saved in that framework's own layout; --format "
                              f"{fmt} does not apply")
    return framework.write(model, Path(path), recipe, layout, force=force,
                           protect=tuple(Path(other) for other in protect))


def write_checkpoint(model: nn.Module, path: str | os.PathLike[str], recipe: Recipe, layout: Layout, *,
                     force: bool = False, protect: tuple[str | os.PathLike[str], ...] = (), fmt: str | None = None,
                     pickle_note: bool = True) -> SaveResult:
    """Write ``model``'s weights with ``recipe`` as a plain checkpoint in ``layout``; return the entries dropped.

    Optimizer and scheduler state is dropped (it refers to parameters by position and cannot match the new
    parameter list); the caller warns about it, and about the result's ``notes``. EMA copies of the weights get the
    new blocks' keys (a state_dict gets the new blocks' tensors; a pickled module is written as it is).

    Args:
        fmt: ``pt`` or ``safetensors``; by default ``safetensors`` for a ``.safetensors`` path or a safetensors
            input, else ``pt``. A safetensors file holds tensors only, so other container entries are dropped.
        pickle_note: note how a pickled output loads (off where a framework's own writer says it its own way).
    """
    path = Path(path)
    fmt = fmt or ("safetensors" if path.suffix == ".safetensors" or layout.format == "safetensors" else "pt")
    if fmt not in CHECKPOINT_FORMATS:
        raise CheckpointError(f"unknown format {fmt!r}; choose {' or '.join(CHECKPOINT_FORMATS)}")
    state = model.state_dict()
    state._metadata[RECIPE_KEY] = recipe.to_dict()  # type: ignore[attr-defined]
    result = SaveResult()
    if fmt == "safetensors":
        header = {k: str(v) for k, v in layout.extras.items()} if layout.format == "safetensors" else {}
        header.update({"format": "pt", RECIPE_KEY: json.dumps(recipe.to_dict(), default=str)})
        if layout.kind == "container" and layout.extras:
            result.notes.append(f"safetensors holds tensors only: left out {', '.join(layout.extras)}")
        payload = _safetensors_bytes(with_prefix(state, layout.prefix), header)
        atomic_write(path, lambda file: file.write(payload), force=force, protect=protect)
        return result
    entry: Any = model if layout.pickled else with_prefix(state, layout.prefix)
    if layout.pickled and pickle_note:
        result.notes.append("the output pickles the whole model, as the input did: it loads only with "
                            "torch.load(weights_only=False) / --trust-pickle, and needs attn-surgeon installed")
    payload: Any = entry
    if layout.kind == "container":
        payload = {}
        for key, value in layout.extras.items():
            if key in OPTIMIZER_KEYS:
                result.append(key)
            elif key in layout.siblings:
                is_module = isinstance(value, nn.Module)  # a pickled copy got the blocks from the pipeline
                payload[key] = value if is_module else sibling_state(value, layout.siblings[key], state)
                result.notes.append(f"{key}: holds the same weights (EMA), given the new blocks' keys too")
            else:
                payload[key] = _plain(value)
        payload[layout.key or "state_dict"] = entry
    atomic_write(path, lambda file: torch.save(payload, file), force=force, protect=protect)
    return result
