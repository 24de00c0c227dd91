"""Checkpoint layouts: where a file keeps its weights, and how a patched model is written back the same way.

Sources: a bare state_dict; a container holding one under ``state_dict``/``model``/``state_dict_ema``/``model_ema``/
``module`` (PyTorch Lightning ``.ckpt`` and timm training checkpoints are such containers); a ``.safetensors`` file;
or, only with ``trust_pickle``, a whole pickled module (``torch.save(model)``). A key prefix common to every tensor
(DDP's ``module.``, Lightning's ``model.``, ``torch.compile``'s ``_orig_mod.``) is found by fitting the keys to the
architecture, removed on load and restored on save. Without ``arch``, the architecture is detected from the keys
and shapes (:mod:`surgeon.detect`).

Saved files keep the input's layout (a bare state_dict stays bare; a container keeps its other entries, and EMA
copies of the weights get the same new keys). The recipe travels inside the state_dict's ``_metadata`` (the
mapping torch itself uses for per-module versions, which survives ``weights_only=True`` and is ignored by
``load_state_dict``), or in the safetensors header, so that :func:`surgeon.load` rebuilds from the file alone.
Writes are atomic and never overwrite without ``force``.

A framework registered by :mod:`surgeon.integrations` (:class:`~surgeon.frameworks.Framework`) reads and writes its
own model directories (a Hugging Face ``save_pretrained`` directory) and gives its models their native layout.

This module reads and writes; it never rewrites a model. Rebuilding a patched model from a file (build the base,
replay the recipe, load the weights) is :func:`surgeon.pipeline.load_model`, which calls the pieces here.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .arch import build_arch, is_spec, meta_model
from .detect import Detection, common_prefixes, detect_arch, fit_prefix
from .errors import CheckpointError, ModelLoadError
from .frameworks import BUILDERS, FRAMEWORKS, framework_layout, framework_of_directory, writes_directory
from .files import RECIPE_KEY, atomic_write, file_mode, read_checkpoint
from .recipe import Recipe, imported_blocks, recipe_of

__all__ = ["CONTAINER_KEYS", "FORMATS", "RECIPE_KEY", "Layout", "LoadedModel", "SaveResult", "choose_arch",
           "default_output", "load_weights", "pickled_model", "read_recipe", "save_model", "split_container",
           "stored_recipe",
           # kept importable from here, where they lived before the readers and writers became modules of their own
           "atomic_write", "build_arch", "file_mode", "is_spec", "read_checkpoint"]

CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")
FORMATS = ("pt", "safetensors")
_OPTIMIZER_KEYS = ("optimizer", "optimizers", "optimizer_state_dict", "optimizer_states", "opt", "scaler",
                   "lr_scheduler", "scheduler", "lr_schedulers")


@dataclass
class Layout:
    """How the input stored its weights, so the output stores them the same way.

    Attributes:
        kind: ``spec`` (built from a name), ``bare`` (the file was the weights) or ``container``.
        key: the container entry that held the weights.
        prefix: a key prefix common to every tensor (``module.``), removed on load and restored on save.
        extras: the container's other entries (or a safetensors header's metadata), written back unchanged.
        format: ``pt`` (``torch.save``) or ``safetensors``.
        pickled: the weights were a whole pickled module (``torch.save(model)``), written back the same way.
        siblings: other entries holding the same weights (EMA copies), by name, with their own key prefix; they get
            the new blocks' keys too.
        framework: the registered :class:`~surgeon.frameworks.Framework` whose native layout this is (written back
            in that layout).
        source: the framework's model directory the model came from (its other files are carried over on save).
    """

    kind: Literal["spec", "bare", "container"] = "spec"
    key: str | None = None
    prefix: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    format: Literal["pt", "safetensors"] = "pt"
    pickled: bool = False
    siblings: dict[str, str] = field(default_factory=dict)
    framework: str | None = None
    source: Path | None = None


@dataclass
class LoadedModel:
    """Result of :func:`load_model`; ``detection`` is set when the architecture was detected from the keys."""

    module: nn.Module
    spec: str | None
    arch_args: dict[str, Any] = field(default_factory=dict)
    layout: Layout = field(default_factory=Layout)
    path: Path | None = None
    recipe: Recipe | None = None
    detection: Detection | None = None


class SaveResult(list):
    """The container entries dropped as optimizer state (a list, as before), plus ``notes`` worth telling."""

    def __init__(self, dropped: list[str] | None = None, notes: list[str] | None = None) -> None:
        super().__init__(dropped or [])
        self.notes = notes or []


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _weights_of(value: Any) -> Mapping[str, torch.Tensor] | None:
    if _is_state_dict(value):
        return value
    return value.state_dict() if isinstance(value, nn.Module) else None


def split_container(obj: Any, path: Path) -> tuple[Any, Layout]:
    """The entry holding the weights (a state_dict, or a module when pickled) and the layout around it.

    Raises:
        CheckpointError: no state_dict anywhere in ``obj``.
    """
    if _is_state_dict(obj) or isinstance(obj, nn.Module):
        header = getattr(obj, "_surgeon_header", None)
        if header is not None:
            return obj, Layout("bare", extras=dict(header), format="safetensors")
        return obj, Layout("bare", pickled=isinstance(obj, nn.Module))
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if _weights_of(obj.get(key)) is not None:
                extras = {k: v for k, v in obj.items() if k != key}
                return obj[key], Layout("container", key=key, extras=extras, pickled=isinstance(obj[key], nn.Module))
    found = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path}: no state_dict found (looked for a mapping of tensors, or one under "
                          f"{', '.join(CONTAINER_KEYS)}; found {found})")


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> OrderedDict[str, torch.Tensor]:
    stripped = OrderedDict((key[len(prefix):], value) for key, value in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        stripped._metadata = OrderedDict(  # type: ignore[attr-defined]
            (key if key == RECIPE_KEY else "" if key == prefix[:-1] else key[len(prefix):], value)
            for key, value in metadata.items()
            if key == RECIPE_KEY or not prefix or key.startswith(prefix) or key == prefix[:-1])
    return stripped


def _with_prefix(state: OrderedDict[str, torch.Tensor], prefix: str) -> OrderedDict[str, torch.Tensor]:
    if not prefix:
        return state
    prefixed = OrderedDict((prefix + key, value) for key, value in state.items())
    prefixed._metadata = OrderedDict(  # type: ignore[attr-defined]
        (RECIPE_KEY if key == RECIPE_KEY else (prefix + key if key else prefix[:-1]), value)
        for key, value in getattr(state, "_metadata", {}).items())
    return prefixed


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> str:
    """Load ``state`` strictly after removing the common prefix that makes it fit; return that prefix."""
    own = model.state_dict()
    prefix = fit_prefix(state, own)
    if prefix is None:  # report against the prefix that explains the most keys
        prefix = max(common_prefixes(state), key=lambda p: sum(k[len(p):] in own for k in state))
    stripped = _strip(state, prefix)
    missing = [k for k in own if k not in stripped]
    unexpected = [prefix + k for k in stripped if k not in own]
    mismatched = [k for k in own if k in stripped and own[k].shape != stripped[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("with other shapes", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise CheckpointError(f"the checkpoint's tensors do not fit {what}: {'; '.join(parts)}")
    model.load_state_dict(stripped, strict=True)
    return prefix


def find_siblings(layout: Layout, keys: set[str]) -> dict[str, str]:
    """Container entries holding another copy of the same weights (EMA), with the prefix that fits each."""
    siblings = {}
    for name, value in layout.extras.items():
        weights = _weights_of(value)
        prefix = fit_prefix(weights, keys) if weights else None
        if prefix is not None:
            siblings[name] = prefix
    return siblings


def _timm_hint(obj: Any) -> str | None:
    """timm's training checkpoints name their model under ``arch``."""
    arch = obj.get("arch") if isinstance(obj, Mapping) else None
    if not isinstance(arch, str):
        return None
    import timm

    return f"timm:{arch}" if timm.is_model(arch) else None


def pickled_model(module: nn.Module, layout: Layout, path: Path, arch: str | None,
                  arch_args: dict[str, Any]) -> LoadedModel:
    """A whole pickled module: used as it is; its spec comes from its recipe, ``arch``, or detection by class."""
    recipe = recipe_of(module)
    spec, detection = arch or (recipe.base if recipe else None), None
    if spec is None and type(module).__module__.split(".")[0] in ("torchvision", "timm"):
        try:
            found = detect_arch(module.state_dict(), arch_args=arch_args, where=str(path))
            if type(meta_model(found.spec, found.arch_args)) is type(module):
                spec, detection, arch_args = found.spec, found, {**found.arch_args, **arch_args}
        except ModelLoadError:
            pass  # the spec only names the base in the recipe; the module itself is complete
    layout.siblings = find_siblings(layout, set(module.state_dict()))
    return LoadedModel(module, spec, arch_args, layout, path, recipe, detection)


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


def stored_recipe(weights: Mapping[str, torch.Tensor]) -> Recipe | None:
    """The recipe a state_dict carries in its ``_metadata`` (written by :func:`save_model`), or ``None``."""
    raw = getattr(weights, "_metadata", {}).get(RECIPE_KEY)
    return Recipe.from_dict(raw) if raw is not None else None


def _trusted(recipe: Recipe, path: str | os.PathLike[str], trust_code: bool) -> Recipe:
    recipe.origin = str(path)
    imported = imported_blocks(recipe)
    if imported and not trust_code:  # a file must never import code the user did not name
        raise CheckpointError(f"{path}: its recipe inserts {', '.join(imported)}, which imports and runs "
                              "code; pass --trust-code if you trust it")
    return recipe


def read_recipe(path: str | os.PathLike[str], *, trust_code: bool = False) -> Recipe:
    """The recipe stored in a checkpoint written by attn-surgeon (read with ``weights_only=True``).

    Args:
        path: the checkpoint.
        trust_code: allow a recipe that inserts ``package.module:Class`` blocks (replaying it imports them).

    Raises:
        CheckpointError: unreadable file, a checkpoint without a recipe, or one that would import code without
            ``trust_code``.
    """
    framework = framework_of_directory(path)
    if framework is not None:
        recipe = framework.read_recipe(Path(path))
        if recipe is None:
            raise CheckpointError(f"{path}: records no attn-surgeon recipe; only model directories written from a "
                                  "patched model do")
        return _trusted(recipe, path, trust_code)
    data = read_checkpoint(path)
    candidates = [data, *(data.get(key) for key in CONTAINER_KEYS)] if isinstance(data, Mapping) else [data]
    for candidate in candidates:
        metadata = getattr(candidate, "_metadata", None)
        if isinstance(metadata, Mapping) and RECIPE_KEY in metadata:
            return _trusted(Recipe.from_dict(metadata[RECIPE_KEY]), path, trust_code)
    raise CheckpointError(f"{path}: holds no attn-surgeon recipe; only checkpoints written by attn-surgeon do")


def choose_arch(obj: Any, weights: Mapping[str, torch.Tensor], recipe: Recipe | None, path: Path, arch: str | None,
                arch_args: dict[str, Any], trust_code: bool) -> tuple[str, dict[str, Any], Detection | None]:
    """The architecture to build for a file's weights: ``arch``, else the recipe's base, else the detected one.

    Returns:
        The spec, its factory arguments (the caller's override the recorded or detected ones), and the detection
        when there was one.

    Raises:
        ModelLoadError: a recipe without a named base, or one that would import code without ``trust_code``; no
            architecture fits the weights.
    """
    detection = None
    if recipe is not None and arch is None:
        arch, arch_args = recipe.base, {**recipe.arch_args, **arch_args}
        if arch is None:
            raise ModelLoadError(f"{path}: patched from a model without a named architecture; pass --arch SPEC")
        if arch.split(":", 1)[0] not in ("torchvision", "timm", *BUILDERS) and not trust_code:
            raise ModelLoadError(f"{path}: its recipe builds {arch!r}, which imports and runs code; pass "
                                 "--trust-code if you trust it, or --arch SPEC")
    elif arch is None:
        detection = detect_arch(weights, arch_args=arch_args, hint=_timm_hint(obj), where=str(path))
        arch, arch_args = detection.spec, {**detection.arch_args, **arch_args}
    imported = imported_blocks(recipe) if recipe is not None else []
    if imported and not trust_code:
        raise ModelLoadError(f"{path}: its recipe inserts {', '.join(imported)}, which imports and runs code; pass "
                             "--trust-code if you trust it")
    return arch, arch_args, detection


def _sibling_state(value: Any, prefix: str, patched: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """An EMA copy with the patched model's keys: its own tensors where they still fit, the new blocks' otherwise."""
    own = _strip(_weights_of(value), prefix)
    merged = OrderedDict((key, own[key] if key in own and own[key].shape == tensor.shape else tensor)
                         for key, tensor in patched.items())
    merged._metadata = getattr(patched, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    return _with_prefix(merged, prefix)


def _sibling_module(value: nn.Module, model: nn.Module, patch: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """A pickled EMA module, patched like ``model``: its own weights, the new blocks' from ``model``."""
    own = value.state_dict()
    patch(value)
    value.load_state_dict({k: v for k, v in model.state_dict().items() if k not in own}, strict=False)
    return value


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


def save_model(model: nn.Module, path: str | os.PathLike[str], recipe: Recipe, layout: Layout | None = None,
               force: bool = False, protect: tuple[str | os.PathLike[str], ...] = (), fmt: str | None = None,
               patch_sibling: Callable[[nn.Module], nn.Module] | None = None) -> SaveResult:
    """Write ``model``'s weights with ``recipe``, in ``layout``; return the container entries dropped.

    Optimizer and scheduler state is dropped (it refers to parameters by position and cannot match the new
    parameter list); the caller warns about it, and about the result's ``notes``.

    Args:
        fmt: ``pt`` or ``safetensors``; by default ``safetensors`` for a ``.safetensors`` path or a safetensors
            input, else ``pt``. A safetensors file holds tensors only, so other container entries are dropped.
        patch_sibling: gives a pickled EMA module beside the weights the same blocks (the pipeline passes its
            replay of ``recipe``); without it such a sibling is written as it was.
    """
    layout = layout or framework_layout(model) or Layout()
    if layout.framework in FRAMEWORKS:
        if fmt is not None:
            raise CheckpointError(f"a {layout.framework} model is saved in its framework's own layout; --format "
                                  f"{fmt} does not apply")
        return FRAMEWORKS[layout.framework].save(model, path, recipe, layout, force=force, protect=protect)
    path = Path(path)
    fmt = fmt or ("safetensors" if path.suffix == ".safetensors" or layout.format == "safetensors" else "pt")
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown format {fmt!r}; choose {' or '.join(FORMATS)}")
    state = model.state_dict()
    state._metadata[RECIPE_KEY] = recipe.to_dict()  # type: ignore[attr-defined]
    result = SaveResult()
    if fmt == "safetensors":
        header = {k: str(v) for k, v in layout.extras.items()} if layout.format == "safetensors" else {}
        header.update({"format": "pt", RECIPE_KEY: json.dumps(recipe.to_dict(), default=str)})
        if layout.kind == "container" and layout.extras:
            result.notes.append(f"safetensors holds tensors only: left out {', '.join(layout.extras)}")
        payload = _safetensors_bytes(_with_prefix(state, layout.prefix), header)
        atomic_write(path, lambda file: file.write(payload), force=force, protect=protect)
        return result
    entry: Any = model if layout.pickled else _with_prefix(state, layout.prefix)
    if layout.pickled:
        result.notes.append("the output pickles the whole model, as the input did: it loads only with "
                            "torch.load(weights_only=False) / --trust-pickle, and needs attn-surgeon installed")
    payload: Any = entry
    if layout.kind == "container":
        payload = {}
        for key, value in layout.extras.items():
            if key in _OPTIMIZER_KEYS:
                result.append(key)
            elif key in layout.siblings:
                if isinstance(value, nn.Module):
                    payload[key] = _sibling_module(value, model, patch_sibling) if patch_sibling else value
                else:
                    payload[key] = _sibling_state(value, layout.siblings[key], state)
                result.notes.append(f"{key}: holds the same weights (EMA), given the new blocks' keys too")
            else:
                payload[key] = _plain(value)
        payload[layout.key or "state_dict"] = entry
    atomic_write(path, lambda file: torch.save(payload, file), force=force, protect=protect)
    return result
