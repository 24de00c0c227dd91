"""A rewritten residual unit adds its skip connection in place when autograd is off, as the original ``x +=``."""

from __future__ import annotations

import timm
import torch
import torch.fx as fx
from torch import nn

import surgeon
from surgeon.codegen import patched_source


def _patched_resnet(block: str = "se") -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("resnet18").eval()
    return surgeon.insert(model, block, after="bottleneck", init="paper", input_shape=(1, 3, 64, 64))


def test_skip_addition_in_place_without_autograd_only() -> None:
    model = _patched_resnet()
    unit = model.layer1[1]
    assert "residual_add(se_residual, x)" in patched_source(unit)
    seen = {}
    unit.se_residual.register_forward_hook(lambda m, i, o: seen.__setitem__("block", o.data_ptr()))
    unit.register_forward_hook(lambda m, i, o: seen.__setitem__("unit", o.data_ptr()))
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        expected = unit.se_residual(unit.bn2(unit.conv2(unit.act1(unit.bn1(unit.conv1(x)))))) + x
        out = unit(x)
    assert seen["block"] == seen["unit"]  # added into the block's output, then ReLU in place
    torch.testing.assert_close(out, expected.relu())
    model.train()
    x.requires_grad_(True)
    unit(x).sum().backward()  # out of place under autograd: no "modified by an inplace operation" error
    assert seen["block"] != seen["unit"] and x.grad is not None


def test_user_blocks_keep_an_out_of_place_addition() -> None:
    model = timm.create_model("resnet18")
    surgeon.insert(model, "torch.nn:Identity", after="bottleneck", input_shape=(1, 3, 64, 64))
    assert "residual_add" not in patched_source(model.layer1[0])


def test_patched_unit_still_traces_with_plain_fx() -> None:
    unit = _patched_resnet().layer2[0]
    traced = fx.symbolic_trace(unit)
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), unit(x))
