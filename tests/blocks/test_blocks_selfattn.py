"""Self-attention insert blocks: DANet's position/channel attention and CCNet's criss-cross attention."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.fx
from torch import nn

from surgeon.blocks import create_block, get_block
from surgeon.blocks.ccnet import CrissCrossAttention
from surgeon.blocks.danet import ChannelAttention, PositionAttention
from surgeon.errors import BlockError

BLOCK_NAMES = ("danet_pam", "danet_cam", "ccnet")
SHAPES = ((1, 1), (7, 5), (16, 16))


def _randomised(block: nn.Module, gamma: float = 0.7, seed: int = 0) -> nn.Module:
    """The block with non-trivial weights and a non-zero gamma, so that attention actually changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in block.named_parameters():
            if name == "gamma":
                param.fill_(gamma)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return block.eval()


def _qk_params(channels: int, qk: int) -> int:
    """Official PAM / CrissCrossAttention: q and k 1x1 convs C -> C//8 with bias, v C -> C with bias, one gamma."""
    return 2 * (channels * qk + qk) + channels * channels + channels + 1


# --- parameter counts, official names and defaults -------------------------------------------------------------


@pytest.mark.parametrize("name", ["danet_pam", "ccnet"])
@pytest.mark.parametrize(("channels", "expected"), [(256, 82_241), (512, 328_321), (64, 5_201), (3, 21), (1, 7)])
def test_param_count_qkv_blocks(name: str, channels: int, expected: int) -> None:
    block = create_block(name, channels, init="paper")
    assert sum(p.numel() for p in block.parameters()) == expected
    assert expected == _qk_params(channels, max(1, channels // 8))


@pytest.mark.parametrize("channels", [1, 64, 256])
def test_param_count_cam_is_one_scalar(channels: int) -> None:
    block = create_block("danet_cam", channels, init="paper")
    assert [(n, tuple(p.shape)) for n, p in block.named_parameters()] == [("gamma", (1,))]


@pytest.mark.parametrize("name", ["danet_pam", "ccnet"])
def test_state_dict_names_match_official(name: str) -> None:
    shapes = {k: tuple(v.shape) for k, v in create_block(name, 256).state_dict().items()}
    assert shapes == {
        "query_conv.weight": (32, 256, 1, 1), "query_conv.bias": (32,),
        "key_conv.weight": (32, 256, 1, 1), "key_conv.bias": (32,),
        "value_conv.weight": (256, 256, 1, 1), "value_conv.bias": (256,),
        "gamma": (1,),
    }


@pytest.mark.parametrize("channels", [1, 7, 8, 9, 15, 16, 63, 64, 100, 2048])
@pytest.mark.parametrize("cls", [PositionAttention, CrissCrossAttention])
def test_default_query_width_is_official_floor_div_8(cls: type[nn.Module], channels: int) -> None:
    block = cls(channels)
    assert block.query_conv.out_channels == block.key_conv.out_channels == max(1, channels // 8)
    assert block.value_conv.out_channels == channels


def test_default_arguments_match_official() -> None:
    for cls in (PositionAttention, CrissCrossAttention):
        params = inspect.signature(cls).parameters
        assert params["rd_ratio"].default == 1 / 8
        assert params["rd_channels"].default is None
        assert params["rd_divisor"].default == 1
        assert params["init"].default == "paper"
    assert inspect.signature(CrissCrossAttention).parameters["recurrence"].default == 2  # R = 2 in the run scripts
    assert CrissCrossAttention(16).recurrence == 2


def test_rd_channels_override_and_options_validated() -> None:
    assert create_block("ccnet", 64, rd_channels=4).query_conv.out_channels == 4
    assert create_block("danet_pam", 64, rd_ratio=0.25).key_conv.out_channels == 16
    with pytest.raises(BlockError, match="recurrence"):
        create_block("ccnet", 64, recurrence=0)
    with pytest.raises(BlockError, match="expects int"):
        create_block("ccnet", 64, recurrence=2.0)
    with pytest.raises(ValueError, match="init"):
        ChannelAttention(8, init="zero")


def test_registry_names_and_aliases() -> None:
    assert get_block("criss_cross").factory is CrissCrossAttention
    assert get_block("RCCA").factory is CrissCrossAttention
    assert get_block("danet_pam").factory is PositionAttention
    assert get_block("danet_cam").factory is ChannelAttention
    for name in BLOCK_NAMES:
        assert get_block(name).kind == "insert" and get_block(name).supports_init
        assert "arXiv:" in get_block(name).paper


# --- identity at creation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["paper", "identity"])
@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_exact_identity_at_creation(name: str, init: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 7, 5) * 3
    block = create_block(name, 16, init=init)
    assert torch.equal(block.gamma.detach(), torch.zeros(1))
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.gamma.fill_(0.5)
    assert not torch.allclose(block(x), x)  # gamma is what keeps it the identity


# --- shapes, dtypes, memory formats, tracing ---------------------------------------------------------------------


@pytest.mark.parametrize("hw", SHAPES)
@pytest.mark.parametrize("channels", [1, 3, 64])
@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_shapes_batch_one(name: str, channels: int, hw: tuple[int, int]) -> None:
    block = _randomised(create_block(name, channels))
    x = torch.randn(1, channels, *hw)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_bf16_autocast_close_to_fp32(name: str) -> None:
    block = _randomised(create_block(name, 32), gamma=0.5)
    x = torch.randn(2, 32, 7, 5) * 0.5
    reference = block(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), reference, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_channels_last_equals_contiguous(name: str) -> None:
    block = _randomised(create_block(name, 24))
    x = torch.randn(2, 24, 6, 9)
    torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), block(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_fx_trace_equals_eager(name: str) -> None:
    block = _randomised(create_block(name, 16))
    traced = torch.fx.symbolic_trace(block)
    for hw in ((7, 5), (4, 11)):  # sizes are read at run time, not baked into the graph
        x = torch.randn(2, 16, *hw)
        torch.testing.assert_close(traced(x), block(x), atol=0, rtol=0)


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_dynamo_no_graph_breaks(name: str) -> None:
    block = _randomised(create_block(name, 16))
    explanation = torch._dynamo.explain(block)(torch.randn(1, 16, 6, 5))
    assert explanation.graph_break_count == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter: opset 17 without onnxscript
@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_onnx_export_matches(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    block = _randomised(create_block(name, 16))
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(block, (torch.randn(1, 16, 7, 5),), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {2: "height", 3: "width"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 16, 6, 9)  # another size: the criss-cross mask must follow the input
    (y,) = session.run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), block(x).detach(), atol=1e-5, rtol=1e-4)


# --- semantics against naive references with explicit loops -----------------------------------------------------


def _conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], x) + conv.bias.view(1, -1, 1, 1)


def _naive_pam(block: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    q, k, v = (_conv1x1(c, x).flatten(2) for c in (block.query_conv, block.key_conv, block.value_conv))
    out = torch.zeros_like(v)
    for n in range(x.shape[0]):
        for i in range(v.shape[-1]):
            weights = torch.softmax(torch.stack([q[n, :, i] @ k[n, :, j] for j in range(v.shape[-1])]), 0)
            out[n, :, i] = sum(weights[j] * v[n, :, j] for j in range(v.shape[-1]))
    return block.gamma * out.view_as(x) + x


def _naive_cam(block: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(2)
    out = torch.zeros_like(flat)
    channels = flat.shape[1]
    for n in range(x.shape[0]):
        for i in range(channels):
            energy = torch.stack([flat[n, i] @ flat[n, j] for j in range(channels)])
            weights = torch.softmax(energy.max() - energy, 0)  # the official "max - energy"
            out[n, i] = sum(weights[j] * flat[n, j] for j in range(channels))
    return block.gamma * out.view_as(x) + x


def _criss_cross_positions(h: int, w: int, height: int, width: int) -> list[tuple[int, int]]:
    """Column then row of (h, w), each position once."""
    return sorted({(g, w) for g in range(height)} | {(h, v) for v in range(width)})


def _naive_criss_cross(block: CrissCrossAttention, x: torch.Tensor) -> torch.Tensor:
    q, k, v = (_conv1x1(c, x) for c in (block.query_conv, block.key_conv, block.value_conv))
    height, width = x.shape[-2:]
    out = torch.zeros_like(v)
    for n in range(x.shape[0]):
        for h in range(height):
            for w in range(width):
                keys = _criss_cross_positions(h, w, height, width)
                assert len(keys) == height + width - 1
                energy = torch.stack([q[n, :, h, w] @ k[n, :, g, u] for g, u in keys])
                weights = torch.softmax(energy, 0)
                out[n, :, h, w] = sum(weights[i] * v[n, :, g, u] for i, (g, u) in enumerate(keys))
    return block.gamma * out + x


@pytest.mark.parametrize("hw", [(1, 1), (3, 4), (5, 2)])
def test_pam_matches_naive(hw: tuple[int, int]) -> None:
    block = _randomised(PositionAttention(16))
    x = torch.randn(2, 16, *hw)
    torch.testing.assert_close(block(x), _naive_pam(block, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hw", [(1, 1), (3, 4)])
def test_cam_matches_naive(hw: tuple[int, int]) -> None:
    block = _randomised(ChannelAttention(6), gamma=0.9)
    x = torch.randn(2, 6, *hw)
    torch.testing.assert_close(block(x), _naive_cam(block, x), atol=1e-5, rtol=1e-5)


def test_cam_attention_prefers_dissimilar_channels() -> None:
    """``max - energy`` makes CAM weight a channel by how *unlike* the query it is (softmax(-X Xᵀ))."""
    block = _randomised(ChannelAttention(2), gamma=1.0)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(1, 2, 2, 1)  # energies: [[1, 0], [0, 4]]
    expected_attn = torch.softmax(-torch.tensor([[1.0, 0.0], [0.0, 4.0]]), dim=-1)
    torch.testing.assert_close(block(x) - x, (expected_attn @ x.flatten(2)).view_as(x))


@pytest.mark.parametrize("hw", [(1, 1), (1, 4), (3, 1), (3, 4), (4, 4)])
def test_criss_cross_matches_naive(hw: tuple[int, int]) -> None:
    block = _randomised(CrissCrossAttention(16, recurrence=1), gamma=1.0)
    x = torch.randn(2, 16, *hw)
    torch.testing.assert_close(block(x), _naive_criss_cross(block, x), atol=1e-5, rtol=1e-5)


def test_recurrence_reuses_the_same_weights() -> None:
    block = _randomised(CrissCrossAttention(16, recurrence=2))
    x = torch.randn(1, 16, 3, 4)
    twice = _naive_criss_cross(block, _naive_criss_cross(block, x))
    torch.testing.assert_close(block(x), twice, atol=1e-5, rtol=1e-5)
    single = CrissCrossAttention(16, recurrence=1)
    assert sum(p.numel() for p in block.parameters()) == sum(p.numel() for p in single.parameters())


def _receptive_positions(block: nn.Module, x: torch.Tensor, h: int, w: int) -> set[tuple[int, int]]:
    """Input positions whose values change the output at (h, w)."""
    x = x.clone().requires_grad_(True)
    block(x)[0, :, h, w].sum().backward()
    influence = x.grad[0].abs().sum(0)
    return {(int(i), int(j)) for i, j in torch.nonzero(influence > 0)}


@pytest.mark.parametrize("hw", [(4, 5), (1, 6), (6, 1)])
def test_each_position_attends_to_its_row_and_column_only(hw: tuple[int, int]) -> None:
    height, width = hw
    block = _randomised(CrissCrossAttention(8, recurrence=1), gamma=1.0)
    x = torch.randn(1, 8, height, width)
    for h in range(height):
        for w in range(width):
            seen = _receptive_positions(block, x, h, w)
            assert seen == set(_criss_cross_positions(h, w, height, width))
            assert len(seen) == height + width - 1


def test_recurrence_two_reaches_the_whole_image() -> None:
    block = _randomised(CrissCrossAttention(8, recurrence=2), gamma=1.0)
    x = torch.randn(1, 8, 4, 5)
    assert len(_receptive_positions(block, x, 0, 0)) == 4 * 5


def test_masked_self_is_counted_once() -> None:
    """With a constant key the attention is uniform: 1 / (H + W - 1) per position, the centre not twice."""
    block = _randomised(CrissCrossAttention(4, recurrence=1), gamma=1.0)
    height, width = 3, 5
    with torch.no_grad():
        block.key_conv.weight.zero_()  # every energy equal -> uniform weights over the attended positions
        block.value_conv.weight.zero_()
        block.value_conv.bias.zero_()
        block.value_conv.weight[:, 0, 0, 0] = 1.0  # value = channel 0 of the input
    x = torch.zeros(1, 4, height, width)
    x[0, 0, 1, 2] = 1.0  # a single spike at the centre position (1, 2)
    with torch.no_grad():
        out = block(x) - x
    assert math.isclose(float(out[0, 0, 1, 2]), 1 / (height + width - 1), rel_tol=1e-6)
