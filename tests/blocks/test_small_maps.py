"""Maps smaller than a block's windows: every insert block runs on them, and SCSA's window is clipped.

A model takes inputs of many sizes (a ResNet-50 fed 96x128 has 3x4 maps at layer4); a block inserted at one size
must run at every size the model accepts, or fail in one line. Every built-in block runs here down to 1x1 where its
registry does not refuse the size outright; SCSA, whose official 7x7 average pool fails below 7x7, clips its window
(as SCConv does) and keeps the official values from 7x7 up.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

import surgeon
from surgeon.blocks import create_block, get_block
from surgeon.blocks._helpers import clipped_avg_pool

CHANNELS = 128  # every block's defaults fit it (SA's 2 x 64 groups, EMA's 32)
SMALL = [(1, 2), (2, 3), (3, 4), (5, 6), (6, 9)]


def _runs(block: torch.nn.Module, size: tuple[int, int]) -> None:
    x = torch.randn(2, CHANNELS, *size)
    for training in (False, True):
        block.train(training)
        with torch.no_grad():
            out = block(x)
        assert out.shape == x.shape and torch.isfinite(out).all(), (size, training)


@pytest.mark.parametrize("name", [info.name for info in surgeon.list_blocks("insert")])
@pytest.mark.parametrize("size", SMALL, ids=[f"{h}x{w}" for h, w in SMALL])
def test_every_insert_block_runs_below_its_windows(name: str, size: tuple[int, int]) -> None:
    refusal = get_block(name).misfit(CHANNELS, size)
    assert refusal is None, f"{name} refuses {size} at insertion: {refusal.reason}"  # every block takes small maps
    _runs(create_block(name, CHANNELS, init="paper"), size)


def test_scsa_keeps_the_official_pool_from_its_window_up() -> None:
    """From 7x7 up the clipped pool is ``AvgPool2d(7, 7)`` bit for bit, partial windows dropped as the official."""
    block = create_block("scsa", 64, init="paper").eval()
    for size in [(7, 7), (14, 20), (23, 9)]:
        x = torch.randn(2, 64, *size)
        assert torch.equal(block.pool(x), F.avg_pool2d(x, 7, 7))


def test_scsa_pools_a_short_axis_whole() -> None:
    x = torch.randn(1, 8, 3, 16)
    expected = F.avg_pool2d(x, (3, 7), (7, 7))  # the window clipped to the 3 rows there are
    torch.testing.assert_close(clipped_avg_pool(x, 7), expected)
    assert create_block("scsa", 8).pool(x).shape == (1, 8, 1, 2)


def test_resnet50_with_scsa_takes_an_image_below_its_windows() -> None:
    """The reported case: SCSA inserted at the default probe, then a 96x128 image (3x4 maps at layer4)."""
    model = torchvision.models.resnet50()
    surgeon.insert(model, "scsa", after="bottleneck", input_shape=(1, 3, 224, 224))
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 96, 128))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
