"""Reading checkpoint files safely, and writing any file atomically.

Every file is first read with ``torch.load(weights_only=True)``: nothing in it can run code unless the caller
trusts it. TorchScript archives, ``torch.export`` programs and ONNX models are refused with the reason: their Python
modules are gone, so there is nothing left to rewrite. A pickled checkpoint of a framework registered in
:mod:`surgeon.frameworks` (Ultralytics') is named as such when refused, and with ``trust_pickle`` read through that
framework's restricted loader first, where it has one. A safetensors file is read into a state_dict whose
``_metadata`` holds the attn-surgeon recipe of its header, as ``torch.save`` keeps it for a ``.pt`` file.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, OutputExistsError
from .frameworks import Framework, framework_of_global, framework_of_module

__all__ = ["RECIPE_KEY", "atomic_write", "file_mode", "is_checkpoint", "read_checkpoint"]

RECIPE_KEY = "__surgeon__"
"""The entry of a state_dict's ``_metadata`` (or a safetensors header) that holds the recipe."""

# timm's training script stores its argparse arguments; a Namespace holds only data, so it is safe to rebuild.
_SAFE_GLOBALS = [argparse.Namespace]
# What torch's weights-only unpickler says when a file needs code (rather than being damaged).
_CODE_MARKS = ("GLOBAL", "Unsupported global", "unrecognized function", "Can only build", "allowlist")
_PICKLE_RISK = ("refusing to unpickle code: the file holds more than tensors and plain data{what}, and loading it "
                "would run code it contains. Save a state_dict instead, or pass --trust-pickle if you trust this file")


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
            # a safe_open handle, not a dict: it has keys() but no iteration
            state = OrderedDict((key, file.get_tensor(key)) for key in file.keys())  # noqa: SIM118
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
        if framework is not None and framework.restricted_load is not None:
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
        raise CheckpointError(_refusal(path, framework_of_module(module), name))
    try:  # the user vouched for this file
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001  unpickling runs arbitrary code: any error may come out
        raise CheckpointError(f"{path}: cannot unpickle it ({type(exc).__name__}: {exc}); is the code it was saved "
                              "with importable here?") from None


def _refusal(path: Path, framework: Framework | None, global_name: str | None) -> str:
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


def _framework_of_file(path: Path, first_global: str | None) -> Framework | None:
    """The registered framework whose classes the pickle refers to (every global is listed without unpickling)."""
    names = [first_global] if first_global else []
    try:
        names += torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (AttributeError, ValueError, RuntimeError):  # torch < 2.6, or not a zip archive
        pass
    return next((framework for name in names if (framework := framework_of_global(name)) is not None), None)


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


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file in torch's zip checkpoint format (as attn-surgeon writes them)."""
    return os.path.isfile(path) and zipfile.is_zipfile(path)


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
