"""Users' own blocks: the registry decorator and the package.module:Class form, with the shape contract checked."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import surgeon
from surgeon.blocks import _registry
from surgeon.errors import BlockError
from tests._util import run_cli


def test_register_block_decorator_makes_a_block_insertable() -> None:
    @surgeon.register_block("test_gain", paper="test fixture")
    class Gain(nn.Module):
        def __init__(self, channels: int, init: str = "paper") -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.zeros(1) if init == "identity" else torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.gain * x

    try:
        model = surgeon.insert(torchvision.models.resnet18(), "test_gain", input_shape=(1, 3, 32, 32))
        assert hasattr(model.layer1[0], "test_gain_residual")
        with pytest.raises(BlockError, match="already registered"):
            surgeon.register_block("test_gain")(Gain)
    finally:
        _registry._REGISTRY.pop("test_gain", None)


def test_import_form_from_the_command_line(tmp_path) -> None:
    result = run_cli("insert", "torchvision:resnet18", "--block",
                     "tests.fixtures.user_blocks:ScaledIdentity", "--input-shape", "1,3,32,32",
                     "-o", str(tmp_path / "out.pt"), "--json")
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "out.pt", weights_only=True)
    assert "layer1.0.scaledidentity_residual.scale" in state


def test_shape_breaking_user_block_is_refused_with_a_clear_error() -> None:
    model = torchvision.models.resnet18()
    with pytest.raises(BlockError, match=r"maps \(1, 64, 8, 8\) to \(1, 32, 8, 8\); an inserted block must keep"):
        surgeon.insert(model, "tests.fixtures.user_blocks:HalveChannels", input_shape=(1, 3, 32, 32))
    assert not any(hasattr(m, "halvechannels_residual") for m in model.modules())


def test_unknown_import_is_a_block_error() -> None:
    with pytest.raises(BlockError, match="cannot import block 'no_such_pkg.mod:Block'"):
        surgeon.insert(torchvision.models.resnet18(), "no_such_pkg.mod:Block", input_shape=(1, 3, 32, 32))
