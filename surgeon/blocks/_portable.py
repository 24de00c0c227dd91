"""Users' blocks inside pickled models: a process that cannot import one says so in one line.

A model pickled whole (Ultralytics' checkpoints, its EMA copies, the state file of its multi-GPU launcher) refers to
each block's class by module and name. Where the user's module cannot be imported, plain unpickling raises
``ModuleNotFoundError`` deep in ``torch.load``, which Ultralytics answers by trying to ``pip install`` a package of
that name. A user's block class is therefore pickled through :func:`rebuild_user_block`, which imports the module
itself and, where it cannot, raises a :class:`~surgeon.errors.BlockError` naming the block and its module: the model
never loads, let alone trains, without it. Everything else about pickling the block is as before (its ``__dict__``
is its state; ``nn.Module.__setstate__`` restores it).
"""

from __future__ import annotations

import copyreg
import importlib
from typing import Any

from torch import nn

from ..errors import BlockError

__all__ = ["keep_importable", "rebuild_user_block"]


def rebuild_user_block(module: str, qualname: str) -> nn.Module:
    """An empty instance of ``module:qualname`` for unpickling to fill in.

    Raises:
        BlockError: the module cannot be imported, or no longer has the class.
    """
    try:
        owner: Any = importlib.import_module(module)
    except ImportError as exc:
        raise BlockError(f"this model holds the block {module}:{qualname}, and its module {module!r} cannot be "
                         f"imported here ({exc}); install it or add its folder to PYTHONPATH") from None
    try:
        for part in qualname.split("."):
            owner = getattr(owner, part)
    except AttributeError:
        raise BlockError(f"this model holds the block {module}:{qualname}, and module {module!r} has no "
                         f"{qualname!r}") from None
    return owner.__new__(owner)


def _reduce(block: nn.Module) -> tuple[Any, ...] | str:
    cls = type(block)
    if "<locals>" in cls.__qualname__:  # a class no process can import: deep copies only, as before
        return object.__reduce_ex__(block, 2)
    return rebuild_user_block, (cls.__module__, cls.__qualname__), block.__dict__


def keep_importable(cls: type[nn.Module]) -> None:
    """Pickle (and deep-copy) instances of a user's block class through :func:`rebuild_user_block` (idempotent)."""
    if copyreg.dispatch_table.get(cls) is not _reduce:
        copyreg.pickle(cls, _reduce)
