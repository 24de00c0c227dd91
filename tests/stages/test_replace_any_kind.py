"""``replace`` of a module class takes every module of that class, whatever kind ``sites`` gives it.

A model's own attention module often adds its input (or a conv branch) to its output, so ``sites`` lists it as a
residual unit; replacing it by class must still work (Ultralytics' ``Attention`` in C2PSA is one), and the recipe
must replay on a fresh copy.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import surgeon
from surgeon.errors import SurgeonError
from surgeon.match import Rule, Selector, make_plan
from surgeon.sites import find_sites

SHAPE = (1, 16, 16, 16)


class OwnAttention(nn.Module):
    """Attention with a positional conv added to its output: a residual unit by structure."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, 1)
        self.pe = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x).sigmoid() + self.pe(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(16, 16, 3, padding=1)
        self.attn = OwnAttention(16)
        self.head = nn.Conv2d(16, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(self.stem(x)))


def test_a_residual_unit_is_replaced_as_a_module() -> None:
    sites = find_sites(Net(), SHAPE).sites
    assert next(s for s in sites if s.name == "attn").kind == "block"
    plan = make_plan(sites, [Rule(Selector(kind="module", cls="OwnAttention"), "eca", op="replace")])
    assert [(a.site.name, a.site.kind, a.op) for a in plan.actions] == [("attn", "module", "replace")]


def test_kind_block_still_refuses_replace() -> None:
    sites = find_sites(Net(), SHAPE).sites
    with pytest.raises(SurgeonError, match="attn is a residual unit"):
        make_plan(sites, [Rule(Selector(kind="block", cls="OwnAttention"), "eca", op="replace")])


def test_swap_by_class_keeps_every_other_key_and_replays() -> None:
    model = Net()
    before = set(model.state_dict())
    surgeon.swap(model, "eca", module="OwnAttention", input_shape=SHAPE)
    (step,) = surgeon.recipe_of(model).steps
    assert set(step.removed_keys) == {k for k in before if k.startswith("attn.")}
    assert set(model.state_dict()) >= before - set(step.removed_keys)
    fresh = surgeon.apply(Net(), surgeon.recipe_of(model))
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(SHAPE)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))
