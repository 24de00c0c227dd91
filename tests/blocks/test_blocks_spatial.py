"""LSKA, LSK, CPCA and GAM against their official code (GAM: its paper).

Each official forward is re-computed here from the official source (``models/van.py``, ``lsknet.py``,
``CPCANet.py``), with the blocks' own weights; parameter counts are pinned at two widths by the formulas of
../shared/REFERENCES.md, which were checked by running the official classes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from surgeon.blocks import create_block, get_block
from surgeon.blocks.cpca import ChannelPriorConvAttention
from surgeon.blocks.gam import GlobalAttentionMechanism
from surgeon.blocks.lsk import LargeSelectiveKernel
from surgeon.blocks.lska import LSKA_KERNELS, LargeSeparableKernelAttention
from surgeon.errors import BlockError
from tests._util import num_params

CLASSES = {"lska": LargeSeparableKernelAttention, "lsk": LargeSelectiveKernel, "cpca": ChannelPriorConvAttention,
           "gam": GlobalAttentionMechanism}


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BatchNorm statistic redrawn, so a wrong wiring or a missing bias changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return module.eval()


# --------------------------------------------------------------------------------------------- parameter counts


def _lska_params(c: int, k_size: int = 7) -> int:
    k0, k1, _ = LSKA_KERNELS[k_size]
    return c * c + (2 * k0 + 2 * k1 + 5) * c


@pytest.mark.parametrize("name, formula, counts", [
    ("lska", _lska_params, {64: 5_184, 256: 69_888}),
    ("lsk", lambda c: 3 * c * c // 2 + 78 * c + 198, {64: 11_334, 256: 118_470}),
    ("cpca", lambda c, r=4: c * c + 2 * c * c // r + 112 * c + c // r, {64: 13_328, 256: 127_040}),
    ("gam", lambda c: 25 * c * c + 5 * c, {64: 102_720, 256: 1_639_680}),
])
def test_parameter_counts_equal_the_official_code(name, formula, counts):
    for channels, expected in counts.items():
        assert formula(channels) == expected
        assert num_params(create_block(name, channels, init="paper")) == expected


@pytest.mark.parametrize("k_size", sorted(LSKA_KERNELS))
def test_lska_kernel_table(k_size):
    k0, k1, d = LSKA_KERNELS[k_size]
    block = LargeSeparableKernelAttention(16, k_size=k_size)
    assert num_params(block) == _lska_params(16, k_size)
    layout = [(m.kernel_size, m.dilation, m.padding, m.groups) for m in
              (block.conv0h, block.conv0v, block.conv_spatial_h, block.conv_spatial_v)]
    assert layout == [((1, k0), (1, 1), (0, k0 // 2), 16), ((k0, 1), (1, 1), (k0 // 2, 0), 16),
                      ((1, k1), (d, d), (0, (k1 - 1) // 2 * d), 16), ((k1, 1), (d, d), ((k1 - 1) // 2 * d, 0), 16)]
    assert k0 + (k1 - 1) * d == k_size  # the dilated pair after the plain pair spans the effective kernel


def test_lska_refuses_unsupported_kernel_sizes_in_one_line():
    with pytest.raises(ValueError, match=r"^LSKA k_size must be one of 7, 11, 23, 35, 41, 53, got 9$"):
        LargeSeparableKernelAttention(8, k_size=9)
    with pytest.raises(BlockError) as info:
        create_block("lska", 8, k_size=13)
    assert "\n" not in str(info.value) and "7, 11, 23, 35, 41, 53" in str(info.value)


def test_official_state_dict_keys():
    """Submodule names are the official ones, so official weights load with load_state_dict."""
    assert list(LargeSeparableKernelAttention(8).state_dict()) == [
        f"{conv}.{p}" for conv in ("conv0h", "conv0v", "conv_spatial_h", "conv_spatial_v", "conv1")
        for p in ("weight", "bias")]
    assert list(LargeSelectiveKernel(8).state_dict()) == [
        f"{conv}.{p}" for conv in ("conv0", "conv_spatial", "conv1", "conv2", "conv_squeeze", "conv")
        for p in ("weight", "bias")]
    assert set(ChannelPriorConvAttention(8).state_dict()) == {
        f"{conv}.{p}" for conv in ("ca.fc1", "ca.fc2", "dconv5_5", "dconv1_7", "dconv7_1", "dconv1_11", "dconv11_1",
                                   "dconv1_21", "dconv21_1", "conv") for p in ("weight", "bias")}


# --------------------------------------------------------------------------------------------- official forwards


def _lska_reference(block: LargeSeparableKernelAttention, x: torch.Tensor) -> torch.Tensor:
    attn = block.conv_spatial_v(block.conv_spatial_h(block.conv0v(block.conv0h(x))))
    return x.clone() * block.conv1(attn)


def _lsk_reference(block: LargeSelectiveKernel, x: torch.Tensor) -> torch.Tensor:
    attn1 = block.conv0(x)
    attn2 = block.conv_spatial(attn1)
    attn1, attn2 = block.conv1(attn1), block.conv2(attn2)
    attn = torch.cat([attn1, attn2], dim=1)
    agg = torch.cat([torch.mean(attn, dim=1, keepdim=True), torch.max(attn, dim=1, keepdim=True)[0]], dim=1)
    sig = block.conv_squeeze(agg).sigmoid()
    return x * block.conv(attn1 * sig[:, 0, :, :].unsqueeze(1) + attn2 * sig[:, 1, :, :].unsqueeze(1))


def _cpca_reference(block: ChannelPriorConvAttention, x: torch.Tensor) -> torch.Tensor:
    ca = block.ca

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(ca.fc2(F.relu(ca.fc1(v))))

    inputs = F.gelu(block.conv(x))
    prior = mlp(F.adaptive_avg_pool2d(inputs, (1, 1))) + mlp(F.adaptive_max_pool2d(inputs, (1, 1)))
    inputs = prior.view(-1, x.shape[1], 1, 1) * inputs
    x_init = block.dconv5_5(inputs)
    x_1 = block.dconv7_1(block.dconv1_7(x_init))
    x_2 = block.dconv11_1(block.dconv1_11(x_init))
    x_3 = block.dconv21_1(block.dconv1_21(x_init))
    return block.conv(block.conv(x_1 + x_2 + x_3 + x_init) * inputs)


def _gam_reference(block: GlobalAttentionMechanism, x: torch.Tensor, channel_sigmoid: bool = True) -> torch.Tensor:
    """The paper's equations: F2 = Mc(F1) ⊗ F1 with the MLP over (N, H·W, C), F3 = Ms(F2) ⊗ F2."""
    n, c, h, w = x.shape
    mc = block.channel_attention(x.permute(0, 2, 3, 1).reshape(n, -1, c)).view(n, h, w, c).permute(0, 3, 1, 2)
    x = x * (torch.sigmoid(mc) if channel_sigmoid else mc)
    return x * torch.sigmoid(block.spatial_attention(x))


REFERENCES = {"lska": _lska_reference, "lsk": _lsk_reference, "cpca": _cpca_reference, "gam": _gam_reference}


@pytest.mark.parametrize("name", sorted(CLASSES))
@pytest.mark.parametrize("size", [(1, 1), (7, 5), (24, 17)])
@pytest.mark.parametrize("train", [False, True])
def test_forward_equals_the_official_code(name, size, train):
    block = _randomize(CLASSES[name](12)).train(train)
    x = torch.randn(2, 12, *size)
    with torch.no_grad():
        torch.testing.assert_close(block(x), REFERENCES[name](block, x), rtol=1e-5, atol=1e-5)


def test_lsk_pool_order_and_branch_order_matter():
    block = _randomize(LargeSelectiveKernel(12))
    x = torch.randn(2, 12, 9, 9)
    reference = _lsk_reference(block, x)
    with torch.no_grad():
        block.conv_squeeze.weight.copy_(block.conv_squeeze.weight.flip(1))  # [max, mean] instead of [mean, max]
    assert not torch.allclose(block(x), reference, atol=1e-3)


def test_gam_has_the_papers_channel_sigmoid():
    block = _randomize(GlobalAttentionMechanism(16))
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        assert not torch.allclose(block(x), _gam_reference(block, x, channel_sigmoid=False), atol=1e-3)
    layers = [type(m).__name__ for m in block.spatial_attention]
    assert layers == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    assert block.spatial_attention[0].kernel_size == (7, 7) and block.spatial_attention[0].out_channels == 4


def test_cpca_shares_one_projection_three_times():
    block = _randomize(ChannelPriorConvAttention(8))
    x = torch.randn(1, 8, 6, 6)
    calls = []
    block.conv.register_forward_hook(lambda *_: calls.append(1))
    block(x)
    assert len(calls) == 3


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_narrow_widths_are_clamped_not_zero(channels):
    for cls in CLASSES.values():
        block = cls(channels).eval()
        assert block(torch.randn(1, channels, 4, 4)).shape == (1, channels, 4, 4)


# --------------------------------------------------------------------------------------------- identity init


@pytest.mark.parametrize("name, extra", [("lska", 0), ("lsk", 0), ("cpca", 1), ("gam", 1)])
@pytest.mark.parametrize("train", [False, True])
def test_identity_is_exact_and_learns(name, extra, train):
    block = create_block(name, 16, init="identity").train(train)
    assert num_params(block) == num_params(create_block(name, 16, init="paper")) + extra
    x = torch.randn(2, 16, 7, 5, requires_grad=True) * 3
    out = block(x)
    assert torch.equal(out, x)
    (out * torch.randn_like(out)).sum().backward()
    learning = [n for n, p in block.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert learning, "at the identity some parameter must receive gradient"


def test_registry_entries():
    for name, cls in CLASSES.items():
        info = get_block(name)
        assert info.factory is cls and info.kind == "insert" and info.supports_init and info.builtin
        assert info.year in (2021, 2023, 2024) and info.params and info.placement and info.export == "dynamic"
    assert get_block("lsknet") is get_block("lsk")
