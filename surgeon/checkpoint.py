"""Model sources in, patched checkpoints out.

Sources: ``torchvision:NAME`` and ``timm:NAME`` (random init, nothing downloaded), ``package.module:factory``, a
spec or model directory of a framework registered by :mod:`surgeon.integrations` (``transformers:ClassName``, a
``save_pretrained`` directory, read and written in that framework's layout), or a file: a bare state_dict; a
container holding one under ``state_dict``/``model``/``state_dict_ema``/``model_ema``/``module`` (PyTorch Lightning
``.ckpt`` and timm training checkpoints are such containers); a ``.safetensors`` file; or, only with
``trust_pickle``, a whole pickled module (``torch.save(model)``). A key prefix common to every tensor
(DDP's ``module.``, Lightning's ``model.``, ``torch.compile``'s ``_orig_mod.``) is found by fitting the keys to the
architecture, removed on load and restored on save. Without ``arch``, the architecture is detected from the keys
and shapes (:mod:`surgeon.detect`). Every file is first read with ``torch.load(weights_only=True)``: nothing in it
can run code unless the caller trusts it. TorchScript archives and ``torch.export`` programs are refused with the
reason: their Python modules are gone, so there is nothing left to rewrite.

Saved files keep the input's layout (a bare state_dict stays bare; a container keeps its other entries, and EMA
copies of the weights get the same new keys). The recipe travels inside the state_dict's ``_metadata`` (the
mapping torch itself uses for per-module versions, which survives ``weights_only=True`` and is ignored by
``load_state_dict``), or in the safetensors header, so that :func:`load` rebuilds from the file alone. Writes are
atomic and never overwrite without ``force``.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import json
import os
import pickle
import re
import stat
import struct
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .detect import Detection, common_prefixes, detect_arch, fit_prefix, meta_model
from .errors import CheckpointError, ModelLoadError, OutputExistsError
from .frameworks import BUILDERS, FRAMEWORKS, framework_layout, framework_of_directory
from .recipe import Recipe

__all__ = ["CONTAINER_KEYS", "FORMATS", "RECIPE_KEY", "Layout", "LoadedModel", "SaveResult", "atomic_write",
           "file_mode", "build_arch", "is_spec", "load_model", "read_checkpoint", "save_model"]

RECIPE_KEY = "__surgeon__"
CONTAINER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")
FORMATS = ("pt", "safetensors")
_OPTIMIZER_KEYS = ("optimizer", "optimizers", "optimizer_state_dict", "optimizer_states", "opt", "scaler",
                   "lr_scheduler", "scheduler", "lr_schedulers")
# timm's training script stores its argparse arguments; a Namespace holds only data, so it is safe to rebuild.
_SAFE_GLOBALS = [argparse.Namespace]
# What torch's weights-only unpickler says when a file needs code (rather than being damaged).
_CODE_MARKS = ("GLOBAL", "Unsupported global", "unrecognized function", "Can only build", "allowlist")
_PICKLE_RISK = ("refusing to unpickle code: the file holds more than tensors and plain data{what}, and loading it "
                "would run code it contains. Save a state_dict instead, or pass --trust-pickle if you trust this file")


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


# ---------------------------------------------------------------------------------------------------- reading


def _sniff(path: Path) -> str:
    """``safetensors``, ``torchscript``, ``exported-program``, ``onnx`` or ``torch`` (anything else torch may read)."""
    with path.open("rb") as file:
        head = file.read(9)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < path.stat().st_size:
        return "safetensors"
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        names = zipfile.ZipFile(path).namelist()
        if any(n.endswith("/archive_format") or "/models/" in n and n.endswith(".json") for n in names):
            return "exported-program"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
    return "onnx" if path.suffix.lower() == ".onnx" else "torch"


def _refuse_compiled(path: Path, kind: str) -> None:
    what = {
        "torchscript": "a TorchScript archive: its modules were compiled to TorchScript code, which torch.fx cannot "
                       "trace or rewrite",
        "exported-program": "a torch.export program: its modules were flattened into one ATen graph, so there are no "
                            "modules left to rewrite",
        "onnx": "an ONNX model: it holds an operator graph, not PyTorch modules",
    }[kind]
    raise CheckpointError(f"{path}: is {what}. Pass the eager model instead: a spec (torchvision:NAME) or its "
                          "state_dict saved with torch.save(model.state_dict()), with --arch SPEC if needed")


def _read_safetensors(path: Path) -> OrderedDict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = dict(file.metadata() or {})
            state = OrderedDict((key, file.get_tensor(key)) for key in file.keys())  # noqa: SIM118  (a safe_open handle, not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file, or truncated ({reason})") from None
    recipe = metadata.pop(RECIPE_KEY, None)
    state._metadata = OrderedDict()  # type: ignore[attr-defined]
    if recipe is not None:
        try:
            state._metadata[RECIPE_KEY] = json.loads(recipe)  # type: ignore[attr-defined]
        except ValueError:
            raise CheckpointError(f"{path}: its attn-surgeon recipe is not valid JSON") from None
    state._surgeon_header = metadata  # type: ignore[attr-defined]
    return state


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not any(mark in str(exc) for mark in _CODE_MARKS):
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = next((line for line in lines if line.startswith(("Unsupported", "Invalid"))), lines[0])
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason[:200]})") from None
        if not trust_pickle:
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            raise CheckpointError(f"{path}: " + _PICKLE_RISK.format(
                what=f" (it refers to {found.group(1)})" if found else "")) from None
    except Exception as exc:  # noqa: BLE001  the restricted unpickler meets garbage in many ways; none of them ran code
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or truncated ({reason[:200]})") from None
    try:  # the user vouched for this file
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001  unpickling runs arbitrary code: any error may come out
        raise CheckpointError(f"{path}: cannot unpickle it ({type(exc).__name__}: {exc}); is the code it was saved "
                              "with importable here?") from None


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
    kind = _sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind != "torch":
        _refuse_compiled(path, kind)
    return _torch_load(path, trust_pickle)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _weights_of(value: Any) -> Mapping[str, torch.Tensor] | None:
    if _is_state_dict(value):
        return value
    return value.state_dict() if isinstance(value, nn.Module) else None


def _split_container(obj: Any, path: Path) -> tuple[Any, Layout]:
    """The entry holding the weights (a state_dict, or a module when pickled) and the layout around it."""
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


def _load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> str:
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


def _find_siblings(layout: Layout, keys: set[str]) -> dict[str, str]:
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


def _loaded_module(module: nn.Module, layout: Layout, path: Path, arch: str | None,
                   arch_args: dict[str, Any]) -> LoadedModel:
    """A whole pickled module: used as it is; its spec comes from its recipe, ``arch``, or detection by class."""
    from .pipeline import recipe_of

    recipe = recipe_of(module)
    spec, detection = arch or (recipe.base if recipe else None), None
    if spec is None and type(module).__module__.split(".")[0] in ("torchvision", "timm"):
        try:
            found = detect_arch(module.state_dict(), arch_args=arch_args, where=str(path))
            if type(meta_model(found.spec, found.arch_args)) is type(module):
                spec, detection, arch_args = found.spec, found, {**found.arch_args, **arch_args}
        except ModelLoadError:
            pass  # the spec only names the base in the recipe; the module itself is complete
    layout.siblings = _find_siblings(layout, set(module.state_dict()))
    return LoadedModel(module, spec, arch_args, layout, path, recipe, detection)


def load_model(source: str | os.PathLike[str], arch: str | None = None, arch_args: dict[str, Any] | None = None,
               trust_code: bool = False, *, trust_pickle: bool = False) -> LoadedModel:
    """Turn a spec or a checkpoint file into a model with its weights.

    A checkpoint written by attn-surgeon is rebuilt from its recipe (base architecture + the same surgery) and
    then loaded with ``strict=True``. A file that holds only weights is loaded into ``arch``, or, without it, into
    the architecture detected from its keys and shapes. A framework's model directory (a ``save_pretrained``
    directory of Hugging Face transformers) is read by its registered :class:`~surgeon.frameworks.Framework`.

    Args:
        source: a spec (``torchvision:resnet50``), a file path, or a framework's model directory.
        arch: architecture spec for a file that holds only weights.
        arch_args: keyword arguments for the architecture's factory.
        trust_code: allow a recipe whose base is a ``package.module:factory`` (imports and runs that factory).
        trust_pickle: allow a file that holds pickled code (``torch.save(model)``); unpickling runs that code.

    Raises:
        ModelLoadError, CheckpointError: with one line that says what is wrong and what to do.
    """
    arch_args = dict(arch_args or {})
    source = str(source)
    if is_spec(source):
        module = build_arch(source, **arch_args)
        return LoadedModel(module, source, arch_args, framework_layout(module) or Layout())
    path = Path(source)
    framework = framework_of_directory(path)
    if framework is not None:
        return framework.load_directory(path, arch, arch_args, trust_code)
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    weights, layout = _split_container(obj, path)
    if isinstance(weights, nn.Module):
        return _loaded_module(weights, layout, path, arch, arch_args)
    raw_recipe = getattr(weights, "_metadata", {}).get(RECIPE_KEY)
    recipe = Recipe.from_dict(raw_recipe) if raw_recipe is not None else None
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
    imported = sorted({step.block for step in recipe.steps if ":" in step.block}) if recipe is not None else []
    if imported and not trust_code:
        raise ModelLoadError(f"{path}: its recipe inserts {', '.join(imported)}, which imports and runs code; pass "
                             "--trust-code if you trust it")
    model = build_arch(arch, **arch_args)
    if recipe is not None:
        from .pipeline import replay

        replay(model, recipe)
    layout.prefix = _load_weights(model, weights, f"--arch {arch}" if recipe is None else
                                  f"{arch} patched by its recipe")
    if layout.kind == "container":
        layout.siblings = _find_siblings(layout, {k[len(layout.prefix):] for k in weights})
    return LoadedModel(model, arch, arch_args, layout, path, recipe, detection)


# ---------------------------------------------------------------------------------------------------- writing


def file_mode(path: Path, directory: bool = False) -> int:
    """The permissions ``path`` gets: those of the file it replaces, else a new file's under the user's umask.

    A temporary file is created private (0600, 0700 for a directory); the result is a file like any other the user
    writes (0644 under umask 022), so it can be shared, served or mounted into a container.
    """
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)  # the only portable way to read it; restored at once
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


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
            os.fchmod(file.fileno(), file_mode(path))
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointError(f"{path}: write failed ({exc.strerror or exc}); nothing was written") from None
        raise
    return path


def _sibling_state(value: Any, prefix: str, patched: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """An EMA copy with the patched model's keys: its own tensors where they still fit, the new blocks' otherwise."""
    own = _strip(_weights_of(value), prefix)
    merged = OrderedDict((key, own[key] if key in own and own[key].shape == tensor.shape else tensor)
                         for key, tensor in patched.items())
    merged._metadata = getattr(patched, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    return _with_prefix(merged, prefix)


def _sibling_module(value: nn.Module, model: nn.Module, recipe: Recipe) -> nn.Module:
    from .pipeline import replay

    own = value.state_dict()
    replay(value, recipe)
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
               force: bool = False, protect: tuple[str | os.PathLike[str], ...] = (),
               fmt: str | None = None) -> SaveResult:
    """Write ``model``'s weights with ``recipe``, in ``layout``; return the container entries dropped.

    Optimizer and scheduler state is dropped (it refers to parameters by position and cannot match the new
    parameter list); the caller warns about it, and about the result's ``notes``.

    Args:
        fmt: ``pt`` or ``safetensors``; by default ``safetensors`` for a ``.safetensors`` path or a safetensors
            input, else ``pt``. A safetensors file holds tensors only, so other container entries are dropped.
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
                payload[key] = (_sibling_module(value, model, recipe) if isinstance(value, nn.Module)
                                else _sibling_state(value, layout.siblings[key], state))
                result.notes.append(f"{key}: holds the same weights (EMA), given the new blocks' keys too")
            else:
                payload[key] = _plain(value)
        payload[layout.key or "state_dict"] = entry
    atomic_write(path, lambda file: torch.save(payload, file), force=force, protect=protect)
    return result
