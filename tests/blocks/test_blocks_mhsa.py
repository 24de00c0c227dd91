"""Tests of the BoTNet MHSA block (``surgeon/blocks/mhsa.py``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from surgeon.blocks import create_block, get_block
from surgeon.blocks.mhsa import DEFAULT_FEAT_SIZE, BottleneckMHSA, relative_position_table, resize_rows

SHAPES = [(1, 1), (7, 5), (16, 16)]


def _param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _botnet_param_formula(channels: int, heads: int, height: int, width: int) -> int:
    # gist: q/k/v projections of C x heads x C/heads each, no bias; r_height (2H-1, d), r_width (2W-1, d)
    dim_head = channels // heads
    return 3 * channels * channels + (2 * height - 1 + 2 * width - 1) * dim_head


def _naive_relative_logits(q: torch.Tensor, rel_height: torch.Tensor, rel_width: torch.Tensor,
                           height: int, width: int) -> torch.Tensor:
    """Loop over every (query, key) pair: q(h, w) · (r_h[h' - h + H - 1] + r_w[w' - w + W - 1])."""
    batch, heads = q.shape[:2]
    out = torch.zeros(batch, heads, height * width, height * width, dtype=torch.float64)
    for h in range(height):
        for w in range(width):
            for kh in range(height):
                for kw in range(width):
                    emb = rel_height[kh - h + height - 1] + rel_width[kw - w + width - 1]
                    out[:, :, h * width + w, kh * width + kw] = (q[:, :, h * width + w] * emb).sum(-1)
    return out


def _naive_forward(block: BottleneckMHSA, x: torch.Tensor) -> torch.Tensor:
    """The gist's relpos_self_attention written out in float64 with plain matmuls and the loop logits."""
    block = block.double()
    x = x.double()
    batch, channels, height, width = x.shape
    qkv = F.conv2d(x, block.qkv.weight).reshape(batch, 3, block.num_heads, block.dim_head, height * width)
    q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))
    q = q * block.dim_head ** -0.5
    logits = q @ k.transpose(-1, -2) + _naive_relative_logits(q, block.rel_height, block.rel_width, height, width)
    out = logits.softmax(-1) @ v
    return out.transpose(-1, -2).reshape(batch, channels, height, width)


def test_registry_names():
    info = get_block("mhsa")
    assert info.factory is BottleneckMHSA
    assert get_block("botnet") is info
    assert info.kind == "insert" and info.supports_init
    assert "2101.11605" in info.paper


@pytest.mark.parametrize(
    ("channels", "feat_size", "expected"),
    [
        (256, (14, 14), 3 * 256 * 256 + (27 + 27) * 64),  # 200064
        (256, None, 200064),  # default tables are 14x14
        (64, (7, 5), 3 * 64 * 64 + (13 + 9) * 16),
        (2048 // 4, 7, 3 * 512 * 512 + (13 + 13) * 128),  # BoTNet-50 c5 bottleneck width at 224 (later blocks)
    ],
)
def test_param_count_paper(channels, feat_size, expected):
    block = BottleneckMHSA(channels, feat_size=feat_size)
    size = DEFAULT_FEAT_SIZE if feat_size is None else feat_size
    height, width = (size, size) if isinstance(size, int) else size
    assert _param_count(block) == expected == _botnet_param_formula(channels, 4, height, width)


def test_param_count_256_pinned():
    assert _param_count(BottleneckMHSA(256, feat_size=(14, 14))) == 200064
    # identity mode adds the zero-initialised C x C output projection
    assert _param_count(BottleneckMHSA(256, feat_size=(14, 14), init="identity")) == 200064 + 256 * 256


def test_defaults_match_the_gist():
    torch.manual_seed(0)
    block = BottleneckMHSA(512)
    assert block.num_heads == 4 and block.dim_head == 128
    assert block.scale == 128 ** -0.5
    assert block.qkv.bias is None
    assert block.proj is None
    assert block.feat_size == (14, 14)
    assert block.rel_height.shape == (27, 128) and block.rel_width.shape == (27, 128)
    # gist init: projections N(0, 0.01^2), tables N(0, 1/dim_head)
    assert block.qkv.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert block.rel_height.std().item() == pytest.approx(128 ** -0.5, rel=0.05)


@pytest.mark.parametrize(("channels", "requested", "expected"),
                         [(1, 4, 1), (2, 4, 2), (3, 4, 3), (5, 4, 1), (6, 4, 3), (64, 4, 4), (96, 8, 8), (12, 5, 4)])
def test_heads_clamped_to_a_divisor(channels, requested, expected):
    block = BottleneckMHSA(channels, num_heads=requested)
    assert block.num_heads == expected
    assert block.num_heads * block.dim_head == channels


def test_relative_logits_match_naive_loop():
    torch.manual_seed(0)
    block = BottleneckMHSA(8, num_heads=2, feat_size=(3, 4))
    q = torch.randn(2, 2, 12, 4)
    got = block.relative_logits(q, 3, 4)
    want = _naive_relative_logits(q.double(), block.rel_height.double(), block.rel_width.double(), 3, 4)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_relative_table_indexing():
    table = torch.arange(7.0).unsqueeze(-1)  # offsets -3..3 for a size of 4
    expanded = relative_position_table(table, 4)[..., 0]
    offsets = torch.arange(4).unsqueeze(0) - torch.arange(4).unsqueeze(1)  # key - query
    assert torch.equal(expanded, offsets.float() + 3)


def test_relative_table_resize():
    table = torch.randn(7, 5)  # built for size 4
    # a 1x1 input keeps only the zero offset, the table's centre row
    torch.testing.assert_close(relative_position_table(table, 1)[0, 0], table[3])
    # resized to 2 * 6 - 1 rows by linear interpolation, then indexed like a native table
    resized = F.interpolate(table.t()[None], size=11, mode="linear", align_corners=False)[0].t()
    torch.testing.assert_close(relative_position_table(table, 6), relative_position_table(resized, 6))
    torch.testing.assert_close(resized[5], table[3])  # zero offset stays at the centre


@pytest.mark.parametrize("length", [1, 3, 7, 13, 27])
def test_resize_rows_equals_interpolate(length):
    """The written-out resize (it exports with a symbolic size) gives F.interpolate's numbers, the table itself
    unresized."""
    table = torch.randn(length, 8)
    assert torch.equal(resize_rows(table, length), table)
    for rows in (1, 3, 5, 11, 27, 39):
        expected = F.interpolate(table.t()[None], size=rows, mode="linear", align_corners=False)[0].t()
        # float32 sampling positions near 16 are exact to 2e-6, and the kernel rounds them its own way
        torch.testing.assert_close(resize_rows(table, rows), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(3, 4), (5, 2), (1, 1)])
def test_forward_matches_naive_reference(size):
    torch.manual_seed(0)
    block = BottleneckMHSA(8, num_heads=2, feat_size=size).eval()
    torch.nn.init.normal_(block.qkv.weight, std=0.5)  # sharp attention, so errors in the logits show
    x = torch.randn(2, 8, *size)
    torch.testing.assert_close(block(x).double(), _naive_forward(block, x), rtol=1e-5, atol=1e-6)


def test_relative_logits_matter():
    torch.manual_seed(0)
    block = BottleneckMHSA(8, num_heads=2, feat_size=(3, 4))
    torch.nn.init.normal_(block.qkv.weight, std=0.5)
    x = torch.randn(1, 8, 3, 4)
    before = block(x)
    with torch.no_grad():
        block.rel_width.zero_()
    assert not torch.allclose(before, block(x), atol=1e-4)


def _timm_bottleneck_attn(block: BottleneckMHSA, scale_pos_embed: bool):
    bottleneck_attn = pytest.importorskip("timm.layers.bottleneck_attn")
    channels = block.qkv.in_channels
    ref = bottleneck_attn.BottleneckAttn(channels, feat_size=block.feat_size, num_heads=block.num_heads,
                                         scale_pos_embed=scale_pos_embed).eval()
    assert ref.dim_head_qk == block.dim_head
    with torch.no_grad():
        ref.qkv.weight.copy_(block.qkv.weight)
        ref.pos_embed.height_rel.copy_(block.rel_height)
        ref.pos_embed.width_rel.copy_(block.rel_width)
    return ref


@pytest.mark.parametrize(("channels", "size"), [(16, (3, 4)), (64, (7, 5))])
def test_equals_timm_with_scaled_pos_embed(channels, size):
    torch.manual_seed(0)
    block = BottleneckMHSA(channels, feat_size=size).eval()
    torch.nn.init.normal_(block.qkv.weight, std=0.2)
    ref = _timm_bottleneck_attn(block, scale_pos_embed=True)
    x = torch.randn(2, channels, *size)
    torch.testing.assert_close(block(x), ref(x), rtol=1e-5, atol=1e-6)


def test_timm_default_scaling_difference_pinned():
    """timm's default adds unscaled relative logits: it equals this block with tables multiplied by the scale."""
    torch.manual_seed(0)
    block = BottleneckMHSA(16, feat_size=(3, 4)).eval()
    torch.nn.init.normal_(block.qkv.weight, std=0.2)
    ref = _timm_bottleneck_attn(block, scale_pos_embed=False)
    x = torch.randn(2, 16, 3, 4)
    assert not torch.allclose(block(x), ref(x), atol=1e-4)
    with torch.no_grad():
        ref.pos_embed.height_rel.mul_(block.scale)
        ref.pos_embed.width_rel.mul_(block.scale)
    torch.testing.assert_close(block(x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3, 64])
@pytest.mark.parametrize("size", SHAPES)
def test_shapes_and_identity(channels, size):
    x = torch.randn(1, channels, *size)
    paper = BottleneckMHSA(channels, feat_size=(7, 7))
    assert paper(x).shape == x.shape
    identity = BottleneckMHSA(channels, feat_size=(7, 7), init="identity")
    assert torch.equal(identity(x), x)


def test_paper_is_not_identity():
    x = torch.randn(1, 8, 4, 4)
    assert not torch.allclose(BottleneckMHSA(8, feat_size=4)(x), x)


@pytest.mark.parametrize("init", ["paper", "identity"])
def test_bf16_autocast(init):
    torch.manual_seed(0)
    block = BottleneckMHSA(64, feat_size=(7, 7), init=init)
    if init == "identity":
        torch.nn.init.normal_(block.proj.weight, std=0.05)
    x = torch.randn(1, 64, 9, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    assert torch.isfinite(out).all()
    want = block(x)
    torch.testing.assert_close(out.float(), want, rtol=0.05, atol=0.02 * want.abs().max().item())


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    block = BottleneckMHSA(32, feat_size=(7, 5), init="identity")
    torch.nn.init.normal_(block.proj.weight, std=0.05)
    x = torch.randn(2, 32, 7, 5)
    out = block(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, block(x))


@pytest.mark.parametrize("init", ["paper", "identity"])
def test_fx_trace_equals_eager(init):
    block = BottleneckMHSA(16, feat_size=(7, 5), init=init)
    traced = torch.fx.symbolic_trace(block)
    for size in [(7, 5), (3, 9), (1, 1)]:  # one graph for every size, resized tables included
        x = torch.randn(1, 16, *size)
        assert torch.equal(traced(x), block(x))


def test_compile_without_graph_breaks():
    block = BottleneckMHSA(16, feat_size=(7, 5))
    explanation = torch._dynamo.explain(block)(torch.randn(1, 16, 6, 4))
    assert explanation.graph_break_count == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter (opset 17 directly)
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the size test is specialised, as intended
def test_onnx_export(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    block = BottleneckMHSA(16, feat_size=(7, 5)).eval()
    x = torch.randn(1, 16, 6, 4)
    path = tmp_path / "mhsa.onnx"
    torch.onnx.export(block, (x,), str(path), opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), block(x).detach(), rtol=1e-4, atol=1e-6)


def test_gradients_reach_resized_tables():
    block = BottleneckMHSA(8, feat_size=(3, 4))
    block(torch.randn(1, 8, 5, 2)).sum().backward()
    assert block.rel_height.grad.abs().sum() > 0 and block.rel_width.grad.abs().sum() > 0


def test_create_block_and_bad_options():
    block = create_block("botnet", 32, feat_size=[6, 3], init="identity")
    assert isinstance(block, BottleneckMHSA) and block.feat_size == (6, 3)
    with pytest.raises(ValueError, match="num_heads"):
        BottleneckMHSA(8, num_heads=0)
    with pytest.raises(ValueError, match="feat_size"):
        BottleneckMHSA(8, feat_size=(0, 3))
    with pytest.raises(ValueError, match="init"):
        BottleneckMHSA(8, init="zero")
