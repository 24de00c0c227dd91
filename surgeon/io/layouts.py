"""Checkpoint layouts: where a file keeps its weights, and how a patched model's weights are put back the same way.

Sources: a bare state_dict; a container holding one under ``state_dict``/``model``/``state_dict_ema``/``model_ema``/
``module``/``ema`` (Lightning ``.ckpt``, timm's and Ultralytics' training checkpoints are such containers); a
``.safetensors`` file; or a whole pickled module (``torch.save(model)``). A key prefix common to every tensor (DDP's
``module.``, Lightning's ``model.``, ``torch.compile``'s ``_orig_mod.``) is found by fitting the keys to the
architecture, removed on load and restored on save. Other entries holding the same weights (EMA copies) are the
layout's siblings: they get the new blocks' keys too.

The recipe travels inside the state_dict's ``_metadata`` under :data:`RECIPE_KEY` (the mapping torch itself uses for
per-module versions, which survives ``weights_only=True`` and is ignored by ``load_state_dict``), or in the
safetensors header.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..errors import CheckpointError

__all__ = ["CHECKPOINT_FORMATS", "CONTAINER_KEYS", "OPTIMIZER_KEYS", "RECIPE_KEY", "Layout", "SaveResult",
           "common_prefixes", "find_siblings", "fit_prefix", "load_weights", "sibling_state", "split_container",
           "strip_prefix", "weights_of", "with_prefix"]

RECIPE_KEY = "__surgeon__"
"""The entry of a state_dict's ``_metadata`` (or a safetensors header) that holds the recipe."""

CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module", "ema")
CHECKPOINT_FORMATS = ("pt", "safetensors")
"""The formats a checkpoint file is written in: ``torch.save``'s, and safetensors (tensors only)."""
OPTIMIZER_KEYS = ("optimizer", "optimizers", "optimizer_state_dict", "optimizer_states", "opt", "scaler",
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
            the new blocks' keys too (a pickled one gets the blocks themselves from the pipeline, after surgery).
        framework: the name of the registered :class:`~surgeon.io.adapter.FrameworkAdapter` whose native layout it is,
            written back by that adapter.
        source: the framework's model directory the model came from (its other files carried over on save).
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


class SaveResult(list):
    """The container entries dropped as optimizer state (a list, as before), plus ``notes`` worth telling."""

    def __init__(self, dropped: list[str] | None = None, notes: list[str] | None = None) -> None:
        super().__init__(dropped or [])
        self.notes = notes or []


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def weights_of(value: Any) -> Mapping[str, torch.Tensor] | None:
    """The tensors ``value`` holds: itself if a state_dict, a module's state_dict, else ``None``."""
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
            if weights_of(obj.get(key)) is not None:
                extras = {k: v for k, v in obj.items() if k != key}
                return obj[key], Layout("container", key=key, extras=extras, pickled=isinstance(obj[key], nn.Module))
    found = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path}: no state_dict found (looked for a mapping of tensors, or one under "
                          f"{', '.join(CONTAINER_KEYS)}; found {found})")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> OrderedDict[str, torch.Tensor]:
    """``state`` without ``prefix`` on its keys, its ``_metadata`` (the recipe included) carried along."""
    stripped = OrderedDict((key[len(prefix):], value) for key, value in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        stripped._metadata = OrderedDict(  # type: ignore[attr-defined]
            (key if key == RECIPE_KEY else "" if key == prefix[:-1] else key[len(prefix):], value)
            for key, value in metadata.items()
            if key == RECIPE_KEY or not prefix or key.startswith(prefix) or key == prefix[:-1])
    return stripped


def with_prefix(state: OrderedDict[str, torch.Tensor], prefix: str) -> OrderedDict[str, torch.Tensor]:
    """``state`` with ``prefix`` put back on its keys (the inverse of :func:`strip_prefix`)."""
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
    stripped = strip_prefix(state, prefix)
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
        weights = weights_of(value)
        prefix = fit_prefix(weights, keys) if weights else None
        if prefix is not None:
            siblings[name] = prefix
    return siblings


def common_prefixes(keys: Iterable[str]) -> list[str]:
    """Dotted prefixes shared by every key, longest first, ending with ``""``: ``["model.module.", "model.", ""]``."""
    split = [key.split(".") for key in keys]
    if not split:
        return [""]
    depth = 0
    shortest = min(len(parts) for parts in split)
    while depth < shortest - 1 and all(parts[depth] == split[0][depth] for parts in split):
        depth += 1
    return [".".join(split[0][:i]) + "." for i in range(depth, 0, -1)] + [""]


def fit_prefix(keys: Iterable[str], model_keys: Iterable[str]) -> str | None:
    """The common prefix whose removal turns ``keys`` into exactly ``model_keys``, or ``None``."""
    keys, target = list(keys), set(model_keys)
    for prefix in common_prefixes(keys):
        if {key[len(prefix):] for key in keys} == target:
            return prefix
    return None


def sibling_state(value: Any, prefix: str, patched: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """An EMA copy with the patched model's keys: its own tensors where they still fit, the new blocks' otherwise."""
    own = strip_prefix(weights_of(value), prefix)
    merged = OrderedDict((key, own[key] if key in own and own[key].shape == tensor.shape else tensor)
                         for key, tensor in patched.items())
    merged._metadata = getattr(patched, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    return with_prefix(merged, prefix)
