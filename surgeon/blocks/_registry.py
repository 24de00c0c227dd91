"""The block registry: every block the tool can insert or swap in, filled by ``@register_block``.

Contract of a registered block:

* ``kind="insert"``: ``Block(channels, **kwargs)``; NCHW in, the same shape out.
* ``kind="swap"``: ``Block(in_channels, out_channels, stride=1, **kwargs)``; replaces a conv unit
  (conv → norm → activation) with the same input/output channels and stride.

Blocks that support both initialisation modes take ``init="paper" | "identity"``; ``identity`` makes the block
compute the identity function when created, so a patched pretrained model keeps its outputs.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from ..errors import BlockError

__all__ = [
    "BlockInfo",
    "register_block",
    "get_block",
    "list_blocks",
    "create_block",
    "block_arguments",
    "validate_block_args",
]

BlockKind = Literal["insert", "swap"]
INIT_MODES = ("identity", "paper")


@dataclass(frozen=True)
class BlockInfo:
    """A registry entry.

    Attributes:
        name: registry name, e.g. ``"eca"``.
        factory: class or function that builds the block.
        kind: ``"insert"`` (channels in = channels out) or ``"swap"`` (replaces a conv unit).
        aliases: other names that resolve to this entry.
        paper: short citation, e.g. ``"ECA-Net, CVPR 2020 (arXiv:1910.03151)"``.
        defaults: keyword arguments bound by a registered variant (``functools.partial``-like).
    """

    name: str
    factory: Callable[..., nn.Module]
    kind: BlockKind = "insert"
    aliases: tuple[str, ...] = ()
    paper: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def supports_init(self) -> bool:
        return "init" in block_arguments(self)

    def build(self, *args: Any, **kwargs: Any) -> nn.Module:
        return self.factory(*args, **{**self.defaults, **kwargs})


_REGISTRY: dict[str, BlockInfo] = {}
_ALIASES: dict[str, str] = {}


def register_block(
    name: str,
    *,
    kind: BlockKind = "insert",
    aliases: tuple[str, ...] = (),
    paper: str = "",
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a block class (or factory) under ``name``; usable as a decorator.

    Keyword arguments beyond the documented ones become bound defaults, so a variant is one extra line::

        register_block("gc_mul", fusion="channel_mul")(GlobalContext)

    Raises:
        BlockError: the name or one of the aliases is taken already.
    """
    if kind not in ("insert", "swap"):
        raise BlockError(f"block kind must be 'insert' or 'swap', got {kind!r}")

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise BlockError(f"block name {key!r} is already registered")
        info = BlockInfo(name=name, factory=factory, kind=kind, aliases=tuple(aliases), paper=paper,
                         defaults=dict(defaults))
        _REGISTRY[name] = info
        for alias in aliases:
            _ALIASES[alias] = name
        return factory

    return decorator


def _import_block(spec: str) -> BlockInfo:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BlockError(f"cannot import block {spec!r}: {exc}") from None
    if not callable(factory):
        raise BlockError(f"block {spec!r} is not a class or function")
    return BlockInfo(name=spec, factory=factory, kind="insert", paper=f"user block {spec}")


def get_block(name: str) -> BlockInfo:
    """Look a block up by name or alias; ``package.module:ClassName`` imports a user block.

    Raises:
        BlockError: unknown name; the message lists the valid names and the closest one.
    """
    if ":" in name:
        return _import_block(name)
    key = _ALIASES.get(name.lower(), name.lower())
    if key in _REGISTRY:
        return _REGISTRY[key]
    valid = sorted(_REGISTRY)
    close = difflib.get_close_matches(name.lower(), valid + sorted(_ALIASES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise BlockError(f"unknown block {name!r}{hint}; valid blocks: {', '.join(valid)}")


def list_blocks(kind: BlockKind | None = None) -> list[BlockInfo]:
    """Every registered block, sorted by name, optionally only one kind."""
    return [info for _, info in sorted(_REGISTRY.items()) if kind is None or info.kind == kind]


def block_arguments(info: BlockInfo) -> dict[str, inspect.Parameter]:
    """The keyword options of a block's constructor (its leading channel/stride arguments excluded)."""
    skip = {"self", "channels", "in_channels", "out_channels", "stride"}
    params = inspect.signature(info.factory).parameters
    return {
        name: p for name, p in params.items()
        if name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


# An option without a telling default (``k_size: int | None = None``) is checked against its annotation instead.
_ANNOTATED_EXAMPLES: dict[str, Any] = {"int": 0, "float": 0.0, "bool": False, "str": ""}


def _plain_annotation(annotation: Any) -> str:
    """``"int"`` for ``int``, ``"int | None"`` or ``Optional[int]``; ``""`` for anything else."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = text.replace("Optional[", "").rstrip("]")
    names = {part.strip() for part in text.split("|")} - {"None"}
    return names.pop() if len(names) == 1 else ""


def validate_block_args(info: BlockInfo, args: Mapping[str, Any]) -> None:
    """Check option names and, where the default tells the type, the types of values.

    Raises:
        BlockError: an unknown option (listing the valid ones) or a value of the wrong type.
    """
    params = block_arguments(info)
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(info.factory).parameters.values())
    for key, value in args.items():
        if key not in params:
            if accepts_any:
                continue
            valid = ", ".join(sorted(params)) or "none"
            raise BlockError(f"block {info.name!r} has no option {key!r}; valid options: {valid}")
        default = params[key].default
        if value is None:
            continue
        if default is inspect.Parameter.empty or default is None:
            default = _ANNOTATED_EXAMPLES.get(_plain_annotation(params[key].annotation))
            if default is None:
                continue
        expected: tuple[type, ...] = (type(default),)
        if isinstance(default, bool):
            expected = (bool,)
        elif isinstance(default, float):
            expected = (float, int)
        elif isinstance(default, int):
            expected = (int,)
        if isinstance(value, bool) and bool not in expected:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok and not callable(default):
            raise BlockError(
                f"block {info.name!r} option {key!r} expects {expected[0].__name__}, "
                f"got {type(value).__name__} {value!r}"
            )


def create_block(name: str | BlockInfo, *args: Any, init: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a block by name with validated options.

    Args:
        name: registry name or alias, or a :class:`BlockInfo`.
        *args: ``channels`` for insert blocks; ``in_channels, out_channels, stride`` for swaps.
        init: ``"identity"`` or ``"paper"``; passed on only to blocks that support it.
        **kwargs: block options.

    Raises:
        BlockError: unknown block, unknown option, bad value, or a block that fails to build.
    """
    info = name if isinstance(name, BlockInfo) else get_block(name)
    validate_block_args(info, kwargs)
    if init is not None:
        if init not in INIT_MODES:
            raise BlockError(f"init must be one of {', '.join(INIT_MODES)}, got {init!r}")
        if info.supports_init:
            kwargs["init"] = init
    try:
        block = info.build(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise BlockError(f"block {info.name!r} could not be built with {kwargs or 'its defaults'}: {exc}") from None
    if not isinstance(block, nn.Module):
        raise BlockError(f"block {info.name!r} returned {type(block).__name__}, not an nn.Module")
    return block
