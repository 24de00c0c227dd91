"""Recipes: the plain-data record of a surgery, stored with the weights and replayed to rebuild a model.

A recipe holds the base architecture spec, the probe input shape, and each resolved action (site name, site
kind, channels, position, block, block options, init mode) with the name its module got. Replaying a recipe on the
same base model re-finds each site by name, checks its channels, and inserts exactly the same blocks, so the
saved state_dict loads with ``strict=True``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .errors import CheckpointError
from .match import Action, Plan
from .rewrite import RewriteResult
from .sites import Site, SiteTable

__all__ = ["RECIPE_FORMAT", "Recipe", "RecipeStep", "recipe_from_rewrite", "plan_from_recipe", "versions"]

RECIPE_FORMAT = 1


def versions() -> dict[str, str]:
    from . import __version__

    return {"attn_surgeon": __version__, "torch": torch.__version__.split("+")[0]}


@dataclass(frozen=True)
class RecipeStep:
    """One action as recorded: enough to find the same site and build the same block."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recipe:
    """A surgery as plain data (JSON/YAML-safe and ``torch.load(weights_only=True)``-safe)."""

    base: str | None
    input_shape: tuple[int, ...]
    steps: list[RecipeStep] = field(default_factory=list)
    arch_args: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=versions)

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
        if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT or not isinstance(data.get("steps"), list):
            raise CheckpointError("not an attn-surgeon recipe (or one from an incompatible version)")
        try:
            steps = [RecipeStep(**{**step, "args": dict(step.get("args") or {})}) for step in data["steps"]]
            return cls(base=data.get("base"), input_shape=tuple(int(v) for v in data["input_shape"]), steps=steps,
                       arch_args=dict(data.get("arch_args") or {}), versions=dict(data.get("versions") or {}))
        except (TypeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"malformed attn-surgeon recipe: {exc}") from None

    def extended(self, other: Recipe) -> Recipe:
        """This recipe followed by ``other``'s steps (a second surgery on an already patched model)."""
        return Recipe(self.base, self.input_shape, [*self.steps, *other.steps], dict(self.arch_args), versions())


def recipe_from_rewrite(result: RewriteResult, base: str | None, input_shape: tuple[int, ...],
                        arch_args: dict[str, Any] | None = None) -> Recipe:
    steps = []
    for item in result.inserted:
        action = item.action
        channels = action.site.residual_channels if action.position == "residual" else (
            action.site.in_channels if action.position == "before" else action.site.out_channels)
        steps.append(RecipeStep(site=action.site.name, kind=action.site.kind, channels=int(channels or 0),
                                op=action.op, position=action.position, block=action.block, args=dict(action.args),
                                init=action.init, module=item.key, rule=action.rule))
    return Recipe(base, tuple(input_shape), steps, dict(arch_args or {}))


def plan_from_recipe(recipe: Recipe, table: SiteTable) -> Plan:
    """The plan that replays ``recipe`` on a model whose sites are ``table``.

    Raises:
        CheckpointError: a recorded site is missing or has other channels (the base model is not the same).
    """
    sites: dict[str, Site] = table.by_name()
    actions = []
    for step in recipe.steps:
        site = sites.get(step.site)
        if site is None:
            raise CheckpointError(f"recipe step for {step.site!r}: the model has no such site; "
                                  "is it the same base architecture?")
        channels = site.residual_channels if step.position == "residual" else (
            site.in_channels if step.position == "before" else site.out_channels)
        if step.channels and channels != step.channels:
            raise CheckpointError(f"recipe step for {step.site!r}: expected {step.channels} channels, the model has "
                                  f"{channels}; is it the same base architecture?")
        actions.append(Action(site, step.block, step.op, step.position, dict(step.args), step.init,
                              step.rule or "recipe"))
    return Plan(actions)
