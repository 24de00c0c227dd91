"""The block registry: every block the tool can insert or swap in, filled by ``@register_block``.

Contract of a registered block:

* ``kind="insert"``: ``Block(channels, **kwargs)``; NCHW in, the same shape out.
* ``kind="swap"``: ``Block(in_channels, out_channels, stride=1, **kwargs)``; replaces a conv unit
  (conv → norm → activation) with the same input/output channels and stride, and implements :class:`SwapBlock`.

What the surgery needs to know about a block is declared once, when it is registered, and read from its
:class:`BlockInfo` from then on: how many conv units a swap replaces and whether it applies the activation itself
(its :class:`SwapBlock` class attributes), which facts of the site it takes as options (``site_args``), and whether
it is one of ours (built in: tested to keep the input's shape and to return a fresh tensor), which sites it can be
built for (``fits``: a misfit is answered before any model is touched, with the option that would fit), and what a
reader of ``attn-surgeon blocks`` needs to know (year, parameter formula, where the paper puts it, how it exports).

Blocks that support both initialisation modes take ``init="paper" | "identity"``; ``identity`` makes the block
compute the identity function when created, so a patched pretrained model keeps its outputs.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from torch import nn

from ..errors import BlockError

__all__ = [
    "EXPORT_STATUSES",
    "INIT_MODES",
    "SITE_ARGS",
    "BlockInfo",
    "Misfit",
    "SwapBlock",
    "check_init",
    "is_builtin_block",
    "register_block",
    "get_block",
    "list_blocks",
    "create_block",
    "block_arguments",
    "validate_block_args",
]

BlockKind = Literal["insert", "swap"]
INIT_MODES = ("identity", "paper")
SITE_ARGS = ("feat_size", "groups")
"""Facts of a site a block may take as options: ``feat_size`` (an insert block: the site's spatial size (H, W)) and
``groups`` (a swap: the replaced conv's groups). Each is passed unless the user sets the option."""
ExportStatus = Literal["dynamic", "fixed_size", "untested"]
EXPORT_STATUSES: tuple[str, ...] = ("dynamic", "fixed_size", "untested")
"""How a block exports to ONNX (``torch.onnx.export(dynamo=True)``), checked for every built-in block by
``tests/test_export_blocks.py`` on a patched ResNet-18 run in onnxruntime: ``dynamic`` — any batch and any H, W;
``fixed_size`` — any batch, but H, W fixed to the size it was exported at (``export_note`` says why); ``untested`` —
not declared (the default, e.g. for user blocks)."""


class SwapBlock(Protocol):
    """What a swap block's class declares about it: two class attributes and one method, all required."""

    units: ClassVar[int]
    """Conv units it replaces: 1, or 2 for the selected unit and the unit it feeds (SCBottleneck)."""
    replaces_activation: ClassVar[bool]
    """It applies its own activation, so the replaced unit's activation leaves the forward."""

    def inherit_conv_weights(self, conv: nn.Conv2d, norm: nn.Module | None) -> list[str]:
        """Copy what fits of a replaced conv (and its norm); return the names of the parameters set."""


@dataclass(frozen=True)
class Misfit:
    """Why a block cannot be built for a site, and options that would make it fit (empty if none would)."""

    reason: str
    """What does not fit, naming the numbers, e.g. ``"48 channels are not divisible by factor=32"``."""
    fix: Mapping[str, Any] = field(default_factory=dict)
    """Options that fit, e.g. ``{"factor": 16}``."""

    def hint(self) -> str:
        """``"--set factor=16 fits"``, or ``"no option fits"``."""
        if not self.fix:
            return "no option fits"
        return " ".join(f"--set {key}={value}" for key, value in self.fix.items()) + " fits"


FitsCheck = Callable[..., "Misfit | None"]
"""``fits(channels, feat_size, **options) -> Misfit | None``: ``feat_size`` is the site's (H, W), or ``None`` where it
is not known; ``options`` are the block's options with every default filled in."""


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
        site_args: facts of the site passed as options (see :data:`SITE_ARGS`).
        units: conv units a swap replaces (see :class:`SwapBlock`); 1 for insert blocks.
        replaces_activation: a swap that applies its own activation.
        builtin: one of attn-surgeon's own blocks: its shape contract is tested, and it always returns a new tensor
            (never its input or a view of it), so the skip addition after it may be done in place.
        fits: the sites an insert block can be built for (see :data:`FitsCheck` and :meth:`misfit`); ``None``: any.
        year: the year of the paper.
        params: the parameter count with ``init="paper"`` and default options, as a formula in C (channels; swaps:
            C in = C out), e.g. ``"C² + 17C"``; other symbols are defined after it (``"2Ch + h + C, h = C/16"``) and
            a note goes last in parentheses. ``tests/test_export_blocks.py`` evaluates it against the built block.
        placement: where the paper puts the block in its network.
        export: one of :data:`EXPORT_STATUSES`.
        export_note: why, in one line, when ``export`` is not ``dynamic``.
    """

    name: str
    factory: Callable[..., nn.Module]
    kind: BlockKind = "insert"
    aliases: tuple[str, ...] = ()
    paper: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    site_args: tuple[str, ...] = ()
    units: int = 1
    replaces_activation: bool = False
    builtin: bool = False
    fits: FitsCheck | None = None
    year: int | None = None
    params: str = ""
    placement: str = ""
    export: ExportStatus = "untested"
    export_note: str = ""

    def misfit(self, channels: int, feat_size: tuple[int, int] | None = None,
               args: Mapping[str, Any] | None = None) -> Misfit | None:
        """Why this block cannot be built for a site of ``channels`` (and spatial size ``feat_size``) with the options
        ``args``, or ``None`` if it can. Options left out take the registered variant's and the constructor's
        defaults."""
        if self.fits is None:
            return None
        options = {name: p.default for name, p in block_arguments(self).items() if p.default is not p.empty}
        options.update(self.defaults)
        options.update(args or {})
        options.pop("feat_size", None)
        return self.fits(channels, None if feat_size is None else tuple(feat_size), **options)

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
_registering_builtins = False


@contextmanager
def builtin_registration() -> Iterator[None]:
    """Blocks registered inside are attn-surgeon's own (``BlockInfo.builtin``); only ``surgeon.blocks`` uses it."""
    global _registering_builtins
    _registering_builtins = True
    try:
        yield
    finally:
        _registering_builtins = False


def _swap_contract(name: str, factory: Callable[..., nn.Module]) -> dict[str, Any]:
    """The :class:`SwapBlock` declarations of a swap block's class, read once, when it is registered.

    Raises:
        BlockError: a factory that is not a class, or a class that leaves out part of the contract.
    """
    missing = [member for member in ("units", "replaces_activation", "inherit_conv_weights")
               if not isinstance(factory, type) or not hasattr(factory, member)]
    if missing:
        raise BlockError(f"swap block {name!r} must be a class implementing SwapBlock; it lacks {', '.join(missing)}")
    if factory.units not in (1, 2) or not isinstance(factory.replaces_activation, bool):
        raise BlockError(f"swap block {name!r}: units must be 1 or 2 and replaces_activation a bool, got "
                         f"{factory.units!r} and {factory.replaces_activation!r}")
    return {"units": factory.units, "replaces_activation": factory.replaces_activation}


def register_block(
    name: str,
    *,
    kind: BlockKind = "insert",
    aliases: tuple[str, ...] = (),
    paper: str = "",
    site_args: tuple[str, ...] = (),
    fits: FitsCheck | None = None,
    year: int | None = None,
    params: str = "",
    placement: str = "",
    export: ExportStatus = "untested",
    export_note: str = "",
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a block class (or factory) under ``name``; usable as a decorator.

    Keyword arguments beyond the documented ones become bound defaults, so a variant is one extra line::

        register_block("gc_mul", fusion="channel_mul")(GlobalContext)

    Args:
        name: registry name.
        kind: ``insert`` or ``swap`` (a class implementing :class:`SwapBlock`).
        aliases: other names.
        paper: short citation.
        site_args: facts of the site the block takes as options (:data:`SITE_ARGS`), e.g. ``("feat_size",)``.
        fits: ``fits(channels, feat_size, **options) -> Misfit | None`` for an insert block that cannot be built for
            every site (see :data:`FitsCheck`); the surgery checks every planned site with it before it touches the
            model.
        year: year of the paper.
        params: parameter count at ``init="paper"`` as a formula in C, e.g. ``"C² + 17C"``.
        placement: where the paper puts the block.
        export: how it exports to ONNX (:data:`EXPORT_STATUSES`).
        export_note: one line saying why, when ``export`` is not ``"dynamic"``.
        **defaults: bound options of a variant.

    Raises:
        BlockError: the name or one of the aliases is taken already, an unknown kind, site argument or export
            status, a non-dynamic export without its one-line reason, or a swap block that does not declare its
            :class:`SwapBlock` contract.
    """
    if kind not in ("insert", "swap"):
        raise BlockError(f"block kind must be 'insert' or 'swap', got {kind!r}")
    unknown = [arg for arg in site_args if arg not in SITE_ARGS]
    if unknown:
        raise BlockError(f"unknown site argument {unknown[0]!r}; valid: {', '.join(SITE_ARGS)}")
    if export not in EXPORT_STATUSES:
        raise BlockError(f"unknown export status {export!r}; valid: {', '.join(EXPORT_STATUSES)}")
    if export == "fixed_size" and (not export_note.strip() or "\n" in export_note):
        raise BlockError(f"block {name!r}: export {export!r} needs export_note, a one-line reason")

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise BlockError(f"block name {key!r} is already registered")
        contract = _swap_contract(name, factory) if kind == "swap" else {}
        info = BlockInfo(name=name, factory=factory, kind=kind, aliases=tuple(aliases), paper=paper,
                         defaults=dict(defaults), site_args=tuple(site_args), builtin=_registering_builtins,
                         fits=fits, year=year, params=params, placement=placement, export=export,
                         export_note=export_note, **contract)
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


def is_builtin_block(module: nn.Module) -> bool:
    """Whether ``module`` is an instance of one of attn-surgeon's own block classes (exactly, not a subclass)."""
    return any(info.builtin and type(module) is info.factory for info in _REGISTRY.values())


def check_init(init: str) -> str:
    """``init`` itself if it is one of :data:`INIT_MODES`.

    Raises:
        BlockError: any other value.
    """
    if init not in INIT_MODES:
        raise BlockError(f"init must be one of {', '.join(INIT_MODES)}, got {init!r}")
    return init


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
    if init is not None and check_init(init):
        if info.supports_init:
            kwargs["init"] = init
    try:
        block = info.build(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise BlockError(f"block {info.name!r} could not be built with {kwargs or 'its defaults'}: {exc}") from None
    if not isinstance(block, nn.Module):
        raise BlockError(f"block {info.name!r} returned {type(block).__name__}, not an nn.Module")
    return block
