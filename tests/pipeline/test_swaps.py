"""Swaps through the pipeline: SCConv, SK and SCBottleneck on torchvision ResNet-50."""

from __future__ import annotations

import pytest
import torch
import torchvision

import surgeon
from surgeon.match import Rule, parse_site_spec
from tests._util import run_cli


@pytest.mark.parametrize("block", ["scconv", "sk"])
def test_swap_cli_forward_backward_save_load(tmp_path, block: str) -> None:
    out = tmp_path / f"r50_{block}.pt"
    result = run_cli("swap", "torchvision:resnet50", "--conv", "3x3", "--stride", "1", "--with",
                     block, "-o", str(out), "--input-shape", "1,3,64,64", "--json")
    assert result.exit_code == 0, result.output
    model = surgeon.load(out)
    assert type(model.layer1[0].conv2).__name__ == {"scconv": "SCConv", "sk": "SelectiveKernel"}[block]
    assert isinstance(model.layer2[0].conv2, torch.nn.Conv2d)  # stride 2: not selected
    model.train()
    loss = model(torch.randn(2, 3, 64, 64)).logsumexp(1).mean()
    loss.backward()
    assert model.layer1[0].conv2.training and all(p.grad is not None for p in model.layer1[0].conv2.parameters())
    original = torchvision.models.resnet50().state_dict()
    saved = torch.load(out, weights_only=True)
    swapped = {k for k in original if k not in saved}
    assert swapped and all(".conv2." in k or ".bn2." in k for k in swapped)  # only the swapped units' keys went


def test_swap_inherits_the_replaced_conv_weights() -> None:
    model = torchvision.models.resnet50()
    conv_weight = model.layer1[0].conv2.weight.detach().clone()
    surgeon.swap(model, "scconv", "conv3x3", stride=1, input_shape=(1, 3, 64, 64))
    assert torch.equal(model.layer1[0].conv2.k4[0].weight, conv_weight)


def test_sk_swap_of_a_plain_resnet_keeps_its_groups() -> None:
    model = surgeon.swap(torchvision.models.resnet50(), "sk", "conv3x3", input_shape=(1, 3, 64, 64))
    assert model.layer1[0].conv2.convs[0].groups == 1
    model = surgeon.swap(torchvision.models.resnet50(), "sk", "conv3x3", input_shape=(1, 3, 64, 64), groups=32)
    assert model.layer1[0].conv2.convs[0].groups == 32


def test_scbottleneck_reproduces_scnet50_parameter_count() -> None:
    model = torchvision.models.resnet50()
    rule = Rule(parse_site_spec(r"re:layer\d\.\d+\.conv1"), "scbottleneck", op="replace")
    result = surgeon.run_surgery(model, [rule], input_shape=(1, 3, 64, 64))
    assert len(result.rewrite.inserted) == 16
    assert sum(p.numel() for p in model.parameters()) == 25_564_584  # SCNet-50: 25.56M
    unit = model.layer2[0]
    assert isinstance(unit.conv2, torch.nn.Identity) and isinstance(unit.bn1, torch.nn.Identity)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_insert_block_refused_by_swap() -> None:
    result = run_cli("swap", "torchvision:resnet18", "--with", "eca")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: 'eca' is an insert block; swap takes a swap block (scconv, sk, ...) — "
                                     "use `attn-surgeon insert --block eca` to insert it, or `--module CLASS` to put "
                                     "it in place of a model's attention module")
