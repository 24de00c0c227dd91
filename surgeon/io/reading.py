"""Reading models from files and directories, without side effects: the base model, its recipe, and its weights.

Every file is first read with ``torch.load(weights_only=True)``: nothing in it can run code unless the caller
trusts it (``trust_pickle``). A pickled checkpoint of a registered framework (Ultralytics') is named as such when
refused, and with ``trust_pickle`` read through that framework's restricted loader first, where it has one.

:func:`read_model` returns a :class:`~surgeon.io.adapter.LoadedModel` holding the *base* model: the architecture a
file's recipe names (or ``--arch``, or the one detected from the keys), the recipe, and the weights still to load.
It replays nothing and installs nothing: :func:`surgeon.pipeline.load_model` does that. A framework's model
directory is read by its adapter; a whole pickled module is used as it is, as its framework's loader would.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ModelLoadError, SurgeonError
from ..recipe import Recipe, imported_blocks, recipe_of
from .adapter import FrameworkAdapter, LoadedModel, LoadOptions, load_plain_state
from .detect import Detection, detect_arch
from .files import read_safetensors, refuse_compiled, sniff
from .layouts import CONTAINER_KEYS, RECIPE_KEY, Layout, find_siblings, split_container
from .registry import adapter_named, adapter_of_directory, adapter_of_global, adapters, build_arch, native_layout
from .specs import is_spec, meta_model

__all__ = ["check_trusted", "choose_arch", "load_state", "pickled_model", "read_checkpoint", "read_model",
           "read_recipe", "stored_recipe"]

# timm's training script stores its argparse arguments; a Namespace holds only data, so it is safe to rebuild.
_SAFE_GLOBALS = [argparse.Namespace]
# What torch's weights-only unpickler says when a file needs code (rather than being damaged).
_CODE_MARKS = ("GLOBAL", "Unsupported global", "unrecognized function", "Can only build", "allowlist")
_PICKLE_RISK = ("refusing to unpickle code: the file holds more than tensors and plain data{what}, and loading it "
                "would run code it contains. Save a state_dict instead, or pass --trust-pickle if you trust this file")


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not any(mark in str(exc) for mark in _CODE_MARKS):
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = next((line for line in lines if line.startswith(("Unsupported", "Invalid"))), lines[0])
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason[:200]})") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        framework = _framework_of_file(path, found.group(1) if found else None)
        if not trust_pickle:
            raise CheckpointError(_refusal(path, framework, found.group(1) if found else None)) from None
        if framework is not None:
            # its own restricted loader first: it rebuilds only the framework's known classes
            restricted = framework.restricted_load(path)
            if restricted is not None:
                return restricted
    except Exception as exc:  # noqa: BLE001  the restricted unpickler meets garbage in many ways; none of them ran code
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or truncated ({reason[:200]})") from None
    else:
        module = _pickled_module(loaded)
        if module is None or trust_pickle:
            return loaded
        # Classes someone allowed for weights-only loads in this process (a framework's restricted loader does) let a
        # whole module through; a pickled module still needs the user's word, whatever ran before in the process.
        name = f"{type(module).__module__}.{type(module).__qualname__}"
        raise CheckpointError(_refusal(path, adapter_of_global(name), name))
    try:  # the user vouched for this file
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001  unpickling runs arbitrary code: any error may come out
        raise CheckpointError(f"{path}: cannot unpickle it ({type(exc).__name__}: {exc}); is the code it was saved "
                              "with importable here?") from None


def _refusal(path: Path, framework: FrameworkAdapter | None, global_name: str | None) -> str:
    if framework is not None and framework.title:
        return (f"{path}: is {framework.title}: it pickles the model's Python classes, and loading it would run code "
                "it contains. Pass --trust-pickle if you trust this file")
    return f"{path}: " + _PICKLE_RISK.format(what=f" (it refers to {global_name})" if global_name else "")


def _pickled_module(loaded: Any) -> nn.Module | None:
    """The whole module a checkpoint pickles, at its top or as an entry of its top-level mapping."""
    if isinstance(loaded, nn.Module):
        return loaded
    values = loaded.values() if isinstance(loaded, Mapping) else ()
    return next((value for value in values if isinstance(value, nn.Module)), None)


def _framework_of_file(path: Path, first_global: str | None) -> FrameworkAdapter | None:
    """The registered framework whose classes the pickle refers to (every global is listed without unpickling)."""
    names = [first_global] if first_global else []
    try:
        names += torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (AttributeError, ValueError, RuntimeError):  # torch < 2.6, or not a zip archive
        pass
    return next((framework for name in names if (framework := adapter_of_global(name)) is not None), None)


def read_checkpoint(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> Any:
    """Read a checkpoint file safely, every failure turned into one clear :class:`CheckpointError`.

    ``torch.load(path, weights_only=True)`` unless ``trust_pickle`` (then a file that needs code is unpickled);
    a safetensors file gives an ``OrderedDict`` whose ``_metadata`` holds the recipe, if any.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    try:  # open, not os.access: root passes os.access for files the kernel still refuses (/proc/PID/mem, LSMs)
        with open(path, "rb"):
            pass
    except PermissionError:
        raise CheckpointError(f"{path}: not readable (permission denied)") from None
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    kind = sniff(path)
    if kind == "safetensors":
        return read_safetensors(path)
    if kind != "torch":
        refuse_compiled(path, kind)
    return _torch_load(path, trust_pickle)


def check_trusted(recipe: Recipe, where: str | os.PathLike[str], trust_code: bool,
                  error: type[SurgeonError] = ModelLoadError) -> Recipe:
    """``recipe``, read from ``where``, if replaying it imports no code or the user trusts it (``trust_code``).

    A file must never import code the user did not name: blocks given as ``package.module:Class`` do.

    Raises:
        error: the recipe inserts such blocks and ``trust_code`` is false.
    """
    imported = imported_blocks(recipe)
    if imported and not trust_code:
        raise error(f"{where}: its recipe inserts {', '.join(imported)}, which imports and runs code; pass "
                    "--trust-code if you trust it")
    return recipe


def stored_recipe(weights: Mapping[str, torch.Tensor]) -> Recipe | None:
    """The recipe a state_dict carries in its ``_metadata`` (written by :func:`surgeon.io.save_model`), or ``None``."""
    raw = getattr(weights, "_metadata", {}).get(RECIPE_KEY)
    return Recipe.from_dict(raw) if raw is not None else None


def read_recipe(path: str | os.PathLike[str], *, trust_code: bool = False) -> Recipe:
    """The recipe stored in a checkpoint written by attn-surgeon (read with ``weights_only=True``), or in a
    framework's model directory written from a patched model.

    Args:
        path: the checkpoint or model directory.
        trust_code: allow a recipe that inserts ``package.module:Class`` blocks (replaying it imports them).

    Raises:
        CheckpointError: unreadable file, a checkpoint without a recipe, or one that would import code without
            ``trust_code``.
    """
    framework = adapter_of_directory(path)
    if framework is not None:
        recipe = framework.read_recipe(Path(path))
        if recipe is None:
            raise CheckpointError(f"{path}: records no attn-surgeon recipe; only model directories written from a "
                                  "patched model do")
    else:
        data = read_checkpoint(path)
        candidates = [data, *(data.get(key) for key in CONTAINER_KEYS)] if isinstance(data, Mapping) else [data]
        found = (getattr(candidate, "_metadata", None) for candidate in candidates)
        metadata = next((entry for entry in found if isinstance(entry, Mapping) and RECIPE_KEY in entry), None)
        if metadata is None:
            raise CheckpointError(f"{path}: holds no attn-surgeon recipe; only checkpoints written by attn-surgeon do")
        recipe = Recipe.from_dict(metadata[RECIPE_KEY])
    recipe.origin = str(path)
    return check_trusted(recipe, path, trust_code, CheckpointError)


def _arch_hint(obj: Any) -> str | None:
    """The spec a framework's training checkpoint names (timm's ``arch``), if any adapter reads one."""
    if not isinstance(obj, Mapping):
        return None
    return next((hint for adapter in adapters() if (hint := adapter.arch_hint(obj)) is not None), None)


def choose_arch(obj: Any, weights: Mapping[str, torch.Tensor], recipe: Recipe | None, path: Path,
                options: LoadOptions) -> tuple[str, dict[str, Any], Detection | None]:
    """The architecture to build for a file's weights: ``options.arch``, else the recipe's base, else the detected one.

    Returns:
        The spec, its factory arguments (the caller's override the recorded or detected ones), and the detection
        when there was one.

    Raises:
        ModelLoadError: a recipe without a named base, or one that would import code without ``trust_code``; no
            architecture fits the weights.
    """
    arch, arch_args, detection = options.arch, dict(options.arch_args), None
    if recipe is not None and arch is None:
        arch, arch_args = recipe.base, {**recipe.arch_args, **arch_args}
        if arch is None:
            raise ModelLoadError(f"{path}: patched from a model without a named architecture; pass --arch SPEC")
        if adapter_named(arch.split(":", 1)[0]) is None and not options.trust_code:
            raise ModelLoadError(f"{path}: its recipe builds {arch!r}, which imports and runs code; pass "
                                 "--trust-code if you trust it, or --arch SPEC")
    elif arch is None:
        detection = detect_arch(weights, arch_args=arch_args, hint=_arch_hint(obj), where=str(path))
        arch, arch_args = detection.spec, {**detection.arch_args, **arch_args}
    if recipe is not None:
        check_trusted(recipe, path, options.trust_code)
    return arch, arch_args, detection


def pickled_model(module: nn.Module, layout: Layout, path: Path, options: LoadOptions) -> LoadedModel:
    """A whole pickled module, used as it is (as its framework's loader returns it); its spec: its recipe,
    ``options.arch``, or, for a torchvision or timm model, the architecture its weights are detected as."""
    framework = adapter_of_global(f"{type(module).__module__}.{type(module).__qualname__}")
    if framework is not None:
        module = framework.adopt(module)
        layout.framework = framework.name
    recipe = recipe_of(module)
    arch_args = dict(options.arch_args)
    spec, detection = options.arch or (recipe.base if recipe else None), None
    if spec is None and type(module).__module__.split(".")[0] in ("torchvision", "timm"):
        try:
            found = detect_arch(module.state_dict(), arch_args=arch_args, where=str(path))
            if type(meta_model(found.spec, found.arch_args)) is type(module):
                spec, detection, arch_args = found.spec, found, {**found.arch_args, **arch_args}
        except ModelLoadError:
            pass  # the spec only names the base in the recipe; the module itself is complete
    layout.siblings = find_siblings(layout, set(module.state_dict()))
    return LoadedModel(module, spec, arch_args, layout, path, recipe, detection)


def read_model(source: str | os.PathLike[str], options: LoadOptions | None = None) -> LoadedModel:
    """Read a spec, a checkpoint file or a framework's model directory; replay and install nothing.

    A spec is built with random weights. A file that holds only weights gives the architecture ``options.arch``
    names, else the one its recipe names, else the one detected from its keys and shapes — unpatched, with the
    recipe and the weights to load (:attr:`LoadedModel.state`). A whole pickled module is returned as it is.

    Raises:
        ModelLoadError, CheckpointError: with one line that says what is wrong and what to do.
    """
    options = options or LoadOptions()
    source = str(source)
    if is_spec(source):
        module = build_arch(source, **options.arch_args)
        return LoadedModel(module, source, dict(options.arch_args), native_layout(module) or Layout())
    path = Path(source)
    framework = adapter_of_directory(path)
    if framework is not None:  # a framework's model directory (save_pretrained's): read the framework's way
        return framework.read_directory(path, options)
    obj = read_checkpoint(path, trust_pickle=options.trust_pickle)
    weights, layout = split_container(obj, path)
    if isinstance(weights, nn.Module):
        return pickled_model(weights, layout, path, options)
    recipe = stored_recipe(weights)
    arch, arch_args, detection = choose_arch(obj, weights, recipe, path, options)
    return LoadedModel(build_arch(arch, **arch_args), arch, arch_args, layout, path, recipe, detection, weights)


def load_state(loaded: LoadedModel) -> None:
    """Load the weights a read left (:attr:`LoadedModel.state`) into its model, once the pipeline replayed its recipe:
    by its framework's adapter, else as a plain checkpoint's; then find the container's other copies of them (EMA).

    Raises:
        CheckpointError: the weights do not fit the model.
    """
    if loaded.state is None:
        return
    framework = adapter_named(loaded.layout.framework)
    if framework is not None:
        framework.load_state(loaded)
    else:
        load_plain_state(loaded)
    if loaded.layout.kind == "container":
        prefix = loaded.layout.prefix
        loaded.layout.siblings = find_siblings(loaded.layout, {key[len(prefix):] for key in loaded.state})
    loaded.state = None
