"""Files: what kind a file is, safetensors read as torch reads a checkpoint, and any file written atomically.

TorchScript archives, ``torch.export`` programs and ONNX models are recognised by content and refused with the
reason: their Python modules are gone, so there is nothing left to rewrite. A safetensors file is read into a
state_dict whose ``_metadata`` holds the attn-surgeon recipe of its header, as ``torch.save`` keeps it for a ``.pt``
file. Reading a torch checkpoint, which may need a framework's own loader, is :mod:`surgeon.io.reading`'s.

Every write goes to a temporary file beside its target and is renamed into place, so a failure leaves no partial
file; nothing is overwritten without ``force``, and an input file never.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, OutputExistsError
from .layouts import RECIPE_KEY

__all__ = ["atomic_write", "file_mode", "is_checkpoint", "read_safetensors", "refuse_compiled", "sniff"]


def sniff(path: Path) -> str:
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


def refuse_compiled(path: Path, kind: str) -> None:
    """Raise the reason a compiled or exported model (``kind`` as :func:`sniff` names it) cannot be patched."""
    what = {
        "torchscript": "a TorchScript archive: its modules were compiled to TorchScript code, which torch.fx cannot "
                       "trace or rewrite",
        "exported-program": "a torch.export program: its modules were flattened into one ATen graph, so there are no "
                            "modules left to rewrite",
        "onnx": "an ONNX model: it holds an operator graph, not PyTorch modules",
    }[kind]
    raise CheckpointError(f"{path}: is {what}. Pass the eager model instead: a spec (torchvision:NAME) or its "
                          "state_dict saved with torch.save(model.state_dict()), with --arch SPEC if needed")


def read_safetensors(path: Path) -> OrderedDict[str, torch.Tensor]:
    """A safetensors file as a state_dict; its header's recipe in ``_metadata``, the rest of the header kept aside."""
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
