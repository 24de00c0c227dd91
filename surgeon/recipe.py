"""Recipes: the plain-data record of a surgery, stored with the weights and replayed to rebuild a model.

A recipe holds the base architecture spec, the probe input shape, and each resolved action (site name, site
kind, channels, position, block, block options, init mode) with the name its module got. Replaying a recipe on the
same base model (:func:`surgeon.pipeline.replay`) re-finds each site by name, checks its channels, and inserts
exactly the same blocks, so the saved state_dict loads with ``strict=True``.

This module is data only: it knows no stage of the surgery. A patched model carries its recipe in its instance
``__dict__`` (:func:`recipe_of`, :func:`attach_recipe`), where ``deepcopy`` and pickling keep it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .errors import CheckpointError

__all__ = ["RECIPE_FORMAT", "Recipe", "RecipeStep", "attach_recipe", "imported_blocks", "recipe_of", "unwrap",
           "versions"]

RECIPE_FORMAT = 1
_RECIPE_ATTR = "_surgeon_recipe"


def versions() -> dict[str, str]:
    """The versions of attn-surgeon and torch, as a recipe records them."""
    return {"attn_surgeon": __version__, "torch": torch.__version__.split("+")[0]}


@dataclass(frozen=True)
class RecipeStep:
    """One action as recorded: enough to find the same site and build the same block.

    Attributes:
        site: qualified name of the site.
        kind: the site's kind (``block``, ``conv`` or ``module``).
        channels: the channels where the block goes (0: not recorded, not checked on replay).
        op: ``insert`` or ``replace``.
        position: ``residual``, ``after`` or ``before`` (``None`` for a swap).
        block: registry name, or ``package.module:Class``.
        args: block options.
        init: ``identity`` or ``paper``.
        module: qualified name the new module got.
        rule: the rule that planned it.
        removed_keys: original keys the step removed (a swapped conv unit's, a replaced module's); they are not in
            the patched model's state_dict.
    """

    site: str
    kind: str
    channels: int
    op: str
    position: str | None
    block: str
    args: dict[str, Any]
    init: str
    module: str
    rule: str = ""
    removed_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recipe:
    """A surgery as plain data (JSON/YAML-safe and ``torch.load(weights_only=True)``-safe).

    ``origin`` names the file it was read from, for messages; it is not part of the data.
    """

    base: str | None
    input_shape: tuple[int, ...]
    steps: list[RecipeStep] = field(default_factory=list)
    arch_args: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=versions)
    origin: str | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RECIPE_FORMAT,
            "base": self.base,
            "arch_args": dict(self.arch_args),
            "input_shape": list(self.input_shape),
            "steps": [step.to_dict() for step in self.steps],
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        """Read :meth:`to_dict`'s output back.

        Raises:
            CheckpointError: not a recipe, a recipe of another format, or a malformed one.
        """
        if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT or not isinstance(data.get("steps"), list):
            raise CheckpointError("not an attn-surgeon recipe (or one from an incompatible version)")
        try:
            steps = [RecipeStep(**{**step, "args": dict(step.get("args") or {}),
                                   "removed_keys": list(step.get("removed_keys") or [])}) for step in data["steps"]]
            return cls(base=data.get("base"), input_shape=tuple(int(v) for v in data["input_shape"]), steps=steps,
                       arch_args=dict(data.get("arch_args") or {}), versions=dict(data.get("versions") or {}))
        except (TypeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"malformed attn-surgeon recipe: {exc}") from None

    def extended(self, other: Recipe) -> Recipe:
        """This recipe followed by ``other``'s steps (a second surgery on an already patched model)."""
        return Recipe(self.base, self.input_shape, [*self.steps, *other.steps], dict(self.arch_args), versions())


def imported_blocks(recipe: Recipe) -> list[str]:
    """The blocks of ``recipe`` given as ``package.module:Class``: replaying them imports and runs code."""
    return sorted({step.block for step in recipe.steps if ":" in step.block})


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DistributedDataParallel/DataParallel and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def recipe_of(model: nn.Module) -> Recipe | None:
    """The recipe of every surgery applied to ``model`` (or to the model a DDP/compile wrapper holds), or ``None``."""
    return unwrap(model).__dict__.get(_RECIPE_ATTR)


def attach_recipe(model: nn.Module, recipe: Recipe) -> None:
    """Record ``recipe`` on ``model``, where :func:`recipe_of` finds it."""
    unwrap(model).__dict__[_RECIPE_ATTR] = recipe
