"""Building the block an action asks for: on the host's device and dtype, from a seed of its own, with the site's
facts that its registry entry asks for (:attr:`~surgeon.blocks.BlockInfo.site_args`).

Nothing here looks at a block's signature or attributes: what a block needs is declared in its registry entry.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .blocks import BlockInfo, Misfit, create_block, get_block, keep_importable
from .errors import BlockError, RewriteError
from .match import Action

__all__ = ["build_insert", "build_swap", "check_fits", "misfit_of", "on_host", "planned_parameters", "seeded"]


@contextmanager
def seeded(key: str) -> Iterator[None]:
    """Initialise a new block from a seed derived from its qualified name and block, leaving the caller's RNG as it
    was: the same surgery gives bit-identical weights whatever the global RNG state."""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(zlib.crc32(key.encode()))  # the CPU generator only: blocks are built on CPU
    try:
        yield
    finally:
        torch.set_rng_state(state)


def on_host(block: nn.Module, like: nn.Module) -> nn.Module:
    """``block`` moved to ``like``'s device and floating dtype, in ``like``'s train/eval mode."""
    reference = next(iter(like.parameters()), None)
    if reference is None:
        reference = next(iter(like.buffers()), None)
    if reference is not None:
        block = block.to(device=reference.device, dtype=reference.dtype if reference.is_floating_point() else None)
    return block.train(like.training)


def _insert_args(info: BlockInfo, action: Action) -> dict[str, Any]:
    args = dict(action.args)
    if "feat_size" in info.site_args and "feat_size" not in args:
        args["feat_size"] = tuple(action.site.size_at(action.position))
    return args


def _swap_args(info: BlockInfo, action: Action, groups: int | None) -> dict[str, Any]:
    args = dict(action.args)
    if "groups" in info.site_args and "groups" not in args and groups:
        args["groups"] = groups  # keep the replaced conv's capacity unless the user asks otherwise
    return args


def misfit_of(action: Action) -> Misfit | None:
    """Why the block of an insert action (or of one that replaces a module) cannot be built for its site (channels,
    size) with its options, or ``None`` (also for swaps and for blocks that declare no
    :attr:`~surgeon.blocks.BlockInfo.fits`)."""
    info = get_block(action.block)
    if info.kind != "insert":
        return None
    size = tuple(action.site.size_at(action.position))
    return info.misfit(action.site.channels_at(action.position), size, action.args)


def check_fits(actions: list[Action]) -> None:
    """Check, before the model is touched, that every insert action's block fits its site, and that each replace
    action puts a swap block on a conv unit or an insert block in place of a module.

    Raises:
        BlockError: one line naming the first site that does not fit, its channels and size, why, and the option
            that would fit (``--set factor=16 fits``: one that fits every site the same rule selects, where a site's
            own proposal does); and how many other sites do not fit.
    """
    for action in actions:
        _check_replace_kind(action)
    misfits = [(action, misfit) for action in actions if (misfit := misfit_of(action)) is not None]
    if not misfits:
        return
    action, misfit = misfits[0]
    # propose the option that fits every site of the same block and options, where one site's proposal does
    peers = [other for other in actions if (other.op, other.block, other.args) == (action.op, action.block,
                                                                                   action.args)]
    for candidate in (found.fix for _, found in misfits if found.fix):
        if all(misfit_of(replace(peer, args={**peer.args, **candidate})) is None for peer in peers):
            misfit = Misfit(misfit.reason, candidate)
            break
    height, width = action.site.size_at(action.position)
    count = len(misfits) - 1
    others = f" (and {count} more site{'s' if count > 1 else ''})" if count else ""
    raise BlockError(f"{action.site.name}: {action.block!r} does not fit {action.site.channels_at(action.position)} "
                     f"channels at {height}x{width}: {misfit.reason}; {misfit.hint()}{others}")


def _check_replace_kind(action: Action) -> None:
    """A conv unit is replaced by a swap block, a module (a model's own attention module) by an insert block."""
    if action.op != "replace":
        return
    info = get_block(action.block)
    site = action.site
    if site.kind == "conv" and info.kind != "swap":
        raise BlockError(f"{site.name}: {info.name!r} is an insert block and {site.name} a convolution; a conv unit "
                         "is replaced by a swap block (scconv, sk, ...), an insert block replaces an attention "
                         "module (select it by class, e.g. SqueezeExcitation)")
    if site.kind == "module" and info.kind != "insert":
        raise BlockError(f"{site.name}: {info.name!r} is a swap block (it replaces a conv unit); {site.name} "
                         f"({site.cls}) is replaced by an insert block (mlca, eca, se, ...)")


def build_insert(action: Action, like: nn.Module, key: str) -> nn.Module:
    """The block an insert action puts at ``key`` (its qualified name), on the host ``like`` (for an action that
    replaces a module: the block that takes its place, ``like`` the replaced module).

    Raises:
        RewriteError: the block is a swap.
        BlockError: the block cannot be built with these options, or a user's block breaks the shape contract.
    """
    info = get_block(action.block)
    if info.kind != "insert":
        raise RewriteError(f"{action.site.name}: {info.name!r} is a swap; use `swap` or a replace rule")
    channels, size = action.site.channels_at(action.position), action.site.size_at(action.position)
    with seeded(f"{key}|{action.block}"):
        block = on_host(create_block(info, channels, init=action.init, **_insert_args(info, action)), like)
    if not info.builtin:  # ours are tested to keep the shape; a user's block is checked once, here
        _check_shape_contract(info.name, block, channels, size, like)
        keep_importable(type(block))  # pickled whole, it must fail in one line where its module is missing
    return block


def build_swap(action: Action, convs: list[nn.Conv2d], norms: list[nn.Module | None]) -> tuple[nn.Module, list[str]]:
    """The operator that replaces the conv units of ``convs`` (and their ``norms``), with the parameters it
    inherited from them.

    Raises:
        RewriteError: the block is not a swap.
        BlockError: the block cannot be built with these options.
    """
    info = get_block(action.block)
    if info.kind != "swap":
        raise RewriteError(f"{action.site.name}: {info.name!r} is not a swap block; valid swaps are registered "
                           "with kind='swap' (see `attn-surgeon blocks`)")
    args = _swap_args(info, action, convs[-1].groups)
    with seeded(f"{action.site.name}|{action.block}"):
        new = create_block(info, convs[0].in_channels, convs[-1].out_channels, convs[-1].stride[0], **args)
    inherited: list[str] = []
    for conv, norm in zip(convs, norms):  # every swap implements SwapBlock (checked when it was registered)
        inherited += new.inherit_conv_weights(conv, norm)
    return on_host(new, convs[0]), inherited


def _check_shape_contract(name: str, block: nn.Module, channels: int, size: tuple[int, int], like: nn.Module) -> None:
    """A user block must map (N, C, H, W) to the same shape; check once on a zero batch at the site's size."""
    reference = next(iter(like.parameters()), None)
    probe = torch.zeros(1, channels, *size, device=reference.device if reference is not None else None)
    training = block.training
    try:
        with torch.no_grad():
            out = block.eval()(probe)
    except Exception as exc:
        raise BlockError(f"block {name!r} fails on a (1, {channels}, {size[0]}, {size[1]}) input: {exc}") from None
    finally:
        block.train(training)
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BlockError(f"block {name!r} maps {tuple(probe.shape)} to {shape}; an inserted block must keep the "
                         "input's shape (N, C, H, W)")


def planned_parameters(action: Action) -> int | None:
    """Parameters of the block an action will add, built on the meta device (no memory, no initialisation); for a
    swap, those of the new operator. ``None`` if it cannot be built from the site's shapes alone."""
    info = get_block(action.block)
    site = action.site
    try:
        with torch.device("meta"):
            if action.op == "replace" and info.kind == "swap":
                block = create_block(info, site.in_channels, site.out_channels, site.stride,
                                     **_swap_args(info, action, site.groups))
            else:
                block = create_block(info, site.channels_at(action.position), init=action.init,
                                     **_insert_args(info, action))
    except BlockError:  # bad options fail the real run; a dry run must say so too, not print a plan that cannot run
        raise
    except Exception:  # a plan is still worth printing when one block cannot be sized in advance
        return None
    return sum(p.numel() for p in block.parameters())
