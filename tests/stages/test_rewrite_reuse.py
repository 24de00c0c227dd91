"""Residual units are rewritten from the trace made while finding sites, not traced again."""

from __future__ import annotations

import timm

import surgeon
from surgeon import rewrite as rewrite_module


def test_residual_units_are_not_traced_again_by_the_rewrite(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a residual unit was traced again")

    model = timm.create_model("resnet18")
    monkeypatch.setattr(rewrite_module, "trace_module", refuse)
    surgeon.insert(model, "eca", after="bottleneck", input_shape=(1, 3, 64, 64))
    assert all(hasattr(model.get_submodule(f"layer{i}.{j}"), "eca_residual") for i in range(1, 5) for j in range(2))
