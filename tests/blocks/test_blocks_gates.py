"""Tests for the gating insert blocks BAM, SimAM, Triplet Attention and Residual Attention.

None of them is in timm, so they are checked against formulas re-derived from the official code: parameter counts,
re-computations of the official forward passes (with the blocks' own weights), and the documented deviations.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from surgeon.blocks._registry import create_block, get_block
from surgeon.blocks.bam import BAM
from surgeon.blocks.residual_attention import PreActBottleneck, ResidualAttention
from surgeon.blocks.simam import SimAM
from surgeon.blocks.triplet import TripletAttention
from tests._util import num_params

BLOCK_CASES = [
    pytest.param(BAM, {}, id="bam"),
    pytest.param(BAM, {"combine": "sum"}, id="bam-sum"),
    pytest.param(SimAM, {}, id="simam"),
    pytest.param(TripletAttention, {}, id="triplet"),
    pytest.param(TripletAttention, {"no_spatial": True}, id="triplet-no-spatial"),
    pytest.param(ResidualAttention, {}, id="resatt"),
    pytest.param(ResidualAttention, {"depth": 2, "num_units": 2}, id="resatt-d2r2"),
]
SIZES = [(1, 1), (7, 5), (16, 16)]


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine terms, so that a wrong BN placement changes the output."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return module.eval()


# --------------------------------------------------------------------------------------------- shared contract


@pytest.mark.parametrize("cls, kwargs", BLOCK_CASES)
@pytest.mark.parametrize("channels", [1, 3, 64])
@pytest.mark.parametrize("size", SIZES)
def test_shapes_batch_one(cls, kwargs, channels, size):
    block = cls(channels, **kwargs).eval()
    x = torch.randn(1, channels, *size)
    y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("cls, kwargs", BLOCK_CASES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("train", [False, True])
def test_identity_init_is_exact(cls, kwargs, size, train):
    block = cls(8, init="identity", **kwargs).train(train)
    x = torch.randn(2, 8, *size) * 3
    assert torch.equal(block(x), x)
    assert num_params(block) == num_params(cls(8, **kwargs)) + 1
    # Opening the gate changes the output: the identity comes from gamma, not from a dead block.
    with torch.no_grad():
        block.identity_gate.gamma.fill_(1.0)
    assert not torch.equal(block(x), x)


@pytest.mark.parametrize("cls, kwargs", BLOCK_CASES)
def test_bf16_autocast_close_to_fp32(cls, kwargs):
    torch.manual_seed(0)
    block = _randomize(cls(16, **kwargs))
    x = torch.randn(2, 16, 9, 7)
    expected = block(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = block(x)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual.float(), expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("cls, kwargs", BLOCK_CASES)
def test_channels_last_matches_contiguous(cls, kwargs):
    torch.manual_seed(0)
    block = _randomize(cls(16, **kwargs))
    x = torch.randn(2, 16, 9, 7)
    torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), block(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls, kwargs", BLOCK_CASES)
@pytest.mark.parametrize("init", ["paper", "identity"])
def test_fx_trace_matches_eager(cls, kwargs, init):
    block = _randomize(cls(16, init=init, **kwargs))
    traced = torch.fx.symbolic_trace(block)
    for size in SIZES:  # one trace, every size: no shape was baked in
        x = torch.randn(2, 16, *size)
        torch.testing.assert_close(traced(x), block(x), rtol=0, atol=0)


@pytest.mark.parametrize("cls, kwargs", BLOCK_CASES)
def test_dynamo_has_no_graph_breaks(cls, kwargs):
    block = cls(8, init="identity", **kwargs).eval()
    explanation = torch._dynamo.explain(block)(torch.randn(2, 8, 7, 5))
    assert explanation.graph_break_count == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter: fast, no version converter
@pytest.mark.parametrize("cls, kwargs", BLOCK_CASES[::2])
def test_onnx_export_matches_eager(cls, kwargs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    block = _randomize(cls(8, **kwargs))
    x = torch.randn(2, 8, 7, 5)
    path = tmp_path / "block.onnx"
    torch.onnx.export(block, (x,), str(path), opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path))
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(actual), block(x).detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name, cls",
    [("bam", BAM), ("simam", SimAM), ("triplet", TripletAttention), ("triplet_attention", TripletAttention),
     ("residual_attention", ResidualAttention), ("resatt", ResidualAttention)],
)
def test_registry(name, cls):
    info = get_block(name)
    assert info.factory is cls and info.kind == "insert" and info.supports_init and info.paper
    block = create_block(name, 32, init="identity")
    x = torch.randn(1, 32, 5, 5)
    assert torch.equal(block.eval()(x), x)


@pytest.mark.parametrize("cls, bad", [(BAM, {"combine": "max"}), (BAM, {"dilation": 0}),
                                      (SimAM, {"e_lambda": 0.0}), (TripletAttention, {"kernel_size": 4}),
                                      (TripletAttention, {"pool_order": "avg"}),
                                      (ResidualAttention, {"depth": 0}), (BAM, {"init": "zeros"})])
def test_bad_options_raise_value_error(cls, bad):
    with pytest.raises(ValueError):
        cls(16, **bad)


def _defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}


# --------------------------------------------------------------------------------------------- BAM


def _bam_params(c: int, r: int = 16) -> int:
    """Official MODELS/bam.py with its defaults (num_layers=1, dilation_conv_num=2), hidden = C // r."""
    h = c // r
    channel = (c * h + h) + 2 * h + (h * c + c)  # Linear, BatchNorm1d, Linear
    spatial = (c * h + h) + 2 * h + 2 * (9 * h * h + h + 2 * h) + (h + 1)  # 1x1+BN, 2x(3x3+BN), 1x1
    return channel + spatial


def test_bam_parameter_count():
    assert _bam_params(256) == 17361
    assert num_params(BAM(256)) == 17361
    assert num_params(BAM(1024)) == _bam_params(1024)
    assert num_params(BAM(8)) > 0  # 8 // 16 == 0 in the official code; clamped to a width of 1 here


def test_bam_defaults_match_official():
    d = _defaults(BAM)
    assert (d["rd_ratio"], d["dilation"], d["num_dilated_convs"], d["channel_layers"], d["combine"]) == (
        1 / 16, 4, 2, 1, "mul")
    convs = [m for m in BAM(64).spatial_att if isinstance(m, nn.Conv2d)]
    assert [(m.kernel_size, m.dilation, m.padding) for m in convs[1:-1]] == [((3, 3), (4, 4), (4, 4))] * 2
    assert all(m.bias is not None for m in convs)


def _bam_reference(block: BAM, x: torch.Tensor, combine: str) -> torch.Tensor:
    """The official forward: avg_pool2d with kernel H (square input), both maps expanded, then combined."""
    fc1, bn1, _, fc2 = block.channel_att
    pooled = F.avg_pool2d(x, x.size(2), stride=x.size(2)).flatten(1)
    channel = fc2(F.relu(bn1(fc1(pooled)))).unsqueeze(2).unsqueeze(3).expand_as(x)
    s = block.spatial_att
    h = F.relu(s[1](s[0](x)))
    h = F.relu(s[4](s[3](h)))
    h = F.relu(s[7](s[6](h)))
    spatial = s[9](h).expand_as(x)
    logits = channel * spatial if combine == "mul" else channel + spatial
    return (1 + torch.sigmoid(logits)) * x


@pytest.mark.parametrize("combine", ["mul", "sum"])
def test_bam_matches_official_formula(combine):
    torch.manual_seed(0)
    block = _randomize(BAM(64, combine=combine))
    x = torch.randn(2, 64, 12, 12)
    torch.testing.assert_close(block(x), _bam_reference(block, x, combine), rtol=1e-5, atol=1e-5)
    other = "sum" if combine == "mul" else "mul"
    assert not torch.allclose(block(x), _bam_reference(block, x, other), atol=1e-3)


def test_bam_gate_is_between_one_and_two():
    block = _randomize(BAM(32))
    x = torch.rand(2, 32, 9, 6) + 0.1
    ratio = block(x) / x
    assert ratio.min() >= 1 and ratio.max() <= 2


def test_bam_train_mode_needs_more_than_one_sample():
    block = BAM(32).train()
    block(torch.randn(2, 32, 8, 8))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        block(torch.randn(1, 32, 8, 8))
    assert block.eval()(torch.randn(1, 32, 8, 8)).shape == (1, 32, 8, 8)


# --------------------------------------------------------------------------------------------- SimAM


def _simam_reference(x: torch.Tensor, e_lambda: float = 1e-4) -> torch.Tensor:
    """The official simam_module.forward, written out."""
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + e_lambda)) + 0.5
    return x * torch.sigmoid(y)


@pytest.mark.parametrize("size", [(1, 2), (7, 5), (16, 16)])
@pytest.mark.parametrize("e_lambda", [1e-4, 0.1])
def test_simam_matches_official_formula(size, e_lambda):
    x = torch.randn(2, 6, *size) * 2
    torch.testing.assert_close(SimAM(6, e_lambda=e_lambda)(x), _simam_reference(x, e_lambda), rtol=1e-6, atol=1e-6)


def test_simam_lambda_matters_and_defaults():
    assert _defaults(SimAM)["e_lambda"] == 1e-4
    x = torch.randn(1, 4, 5, 5) * 0.01  # small variance: lambda is not negligible
    assert not torch.allclose(SimAM(4)(x), SimAM(4, e_lambda=0.1)(x))
    assert num_params(SimAM(256)) == 0


def test_simam_one_by_one_is_finite_where_official_is_nan():
    x = torch.randn(2, 3, 1, 1)
    assert torch.isnan(_simam_reference(x)).all()
    torch.testing.assert_close(SimAM(3)(x), x * torch.sigmoid(torch.tensor(0.5)))


# --------------------------------------------------------------------------------------------- Triplet


def test_triplet_parameter_count():
    per_branch = 2 * 7 * 7 + 2  # conv 2->1 without bias, BatchNorm2d(1)
    assert num_params(TripletAttention(256)) == 3 * per_branch == 300
    assert num_params(TripletAttention(3)) == 300
    assert num_params(TripletAttention(256, no_spatial=True)) == 2 * per_branch


def test_triplet_defaults_match_official():
    d = _defaults(TripletAttention)
    assert (d["kernel_size"], d["pool_order"], d["no_spatial"]) == (7, "max_mean", False)
    gate = TripletAttention(8).cw
    assert gate.conv.bias is None and gate.conv.padding == (3, 3)
    assert (gate.bn.eps, gate.bn.momentum, gate.bn.affine) == (1e-5, 0.01, True)


def _official_gate(gate: nn.Module, x: torch.Tensor, max_first: bool = True) -> torch.Tensor:
    pools = (x.max(1)[0].unsqueeze(1), x.mean(1).unsqueeze(1))
    z = torch.cat(pools if max_first else pools[::-1], dim=1)
    return x * torch.sigmoid(gate.bn(gate.conv(z)))


def _triplet_reference(block: TripletAttention, x: torch.Tensor, max_first: bool = True) -> torch.Tensor:
    """The official forward: gate each rotated tensor, rotate back with contiguous copies, average."""
    out_cw = _official_gate(block.cw, x.permute(0, 2, 1, 3).contiguous(), max_first).permute(0, 2, 1, 3)
    out_hc = _official_gate(block.hc, x.permute(0, 3, 2, 1).contiguous(), max_first).permute(0, 3, 2, 1)
    if block.hw is None:
        return 1 / 2 * (out_cw + out_hc)
    return 1 / 3 * (_official_gate(block.hw, x, max_first) + out_cw + out_hc)


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("size", [(7, 5), (16, 16)])
def test_triplet_matches_official_formula(no_spatial, size):
    torch.manual_seed(0)
    block = _randomize(TripletAttention(12, no_spatial=no_spatial))
    x = torch.randn(2, 12, *size)
    torch.testing.assert_close(block(x), _triplet_reference(block, x), rtol=1e-5, atol=1e-6)
    # The reference is sensitive: the other pool order gives another output.
    assert not torch.allclose(block(x), _triplet_reference(block, x, max_first=False), atol=1e-4)


@pytest.mark.parametrize("branch", ["cw", "hc", "hw"])
def test_triplet_branch_orientation(branch):
    """A transposed kernel in any branch changes the output: each gate sees its plane the official way round."""
    torch.manual_seed(0)
    block = _randomize(TripletAttention(10))
    x = torch.randn(2, 10, 9, 6)
    reference = _triplet_reference(block, x)
    conv = getattr(block, branch).conv
    conv.weight.data = conv.weight.data.transpose(2, 3).contiguous()
    assert not torch.allclose(block(x), reference, atol=1e-4)


def test_triplet_swapped_branches_differ():
    torch.manual_seed(0)
    block = _randomize(TripletAttention(10))
    x = torch.randn(2, 10, 9, 6)
    reference = _triplet_reference(block, x)
    block.cw, block.hc = block.hc, block.cw
    assert not torch.allclose(block(x), reference, atol=1e-4)


def test_triplet_mean_max_option():
    block = _randomize(TripletAttention(12, pool_order="mean_max"))
    x = torch.randn(2, 12, 6, 6)
    torch.testing.assert_close(block(x), _triplet_reference(block, x, max_first=False), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- Residual Attention


def _resatt_params(c: int, depth: int = 1, r: int = 1) -> int:
    """Attention-56 prototxt: pre-activation bottleneck units (width C/4, convs without bias) and the 2-conv head."""
    h = c // 4
    unit = 2 * c + c * h + 2 * h + 9 * h * h + 2 * h + h * c
    units = (depth - 1) * (2 * r + 1) + 2 * r  # down r + skip 1 + up r per outer level; 2r innermost
    head = 2 * c + c * c + 2 * c + c * c
    return units * unit + head


def test_resatt_parameter_count():
    assert _resatt_params(256) == 272896
    assert num_params(ResidualAttention(256)) == 272896
    assert num_params(ResidualAttention(256, depth=3)) == _resatt_params(256, depth=3) == 695296
    assert num_params(ResidualAttention(64, depth=2, num_units=2)) == _resatt_params(64, depth=2, r=2)


def test_resatt_defaults_and_unit_layout():
    d = _defaults(ResidualAttention)
    assert (d["depth"], d["num_units"], d["rd_ratio"], d["align_corners"]) == (1, 1, 1 / 4, True)
    unit = PreActBottleneck(256, 64)
    convs = [m for m in unit.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.bias) for m in convs] == [
        (256, 64, (1, 1), None), (64, 64, (3, 3), None), (64, 256, (1, 1), None)]
    head_convs = [m for m in ResidualAttention(32).head if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.bias) for m in head_convs] == [(32, 32, None)] * 2


def _up(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=True)


def _resatt_reference_depth2(block: ResidualAttention, x: torch.Tensor) -> torch.Tensor:
    """The Attention-56 stage-2 mask wiring (prototxt layer names), using the block's units as black boxes."""
    outer, inner = block.mask, block.mask.inner
    def pool(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(t, kernel_size=3, stride=2, padding=1)

    res1_1 = outer.down(pool(x))  # down_sample/res1_1
    res2_2 = inner.down(pool(res1_1))  # down_sample/res2_1, res2_2
    up1 = _up(res2_2, res1_1) + outer.skip(res1_1)  # interp_2 + skip/res1
    up_res1_1 = outer.up(up1)  # up_sample/res1_1
    mask = torch.sigmoid(block.head(_up(up_res1_1, x)))  # interp_1, linear_1, linear_2, sigmoid
    return x * mask + x  # PROD then SUM with the trunk


def test_resatt_matches_prototxt_wiring():
    torch.manual_seed(0)
    block = _randomize(ResidualAttention(16, depth=2))
    assert len(block.mask.down) == 1 and len(block.mask.inner.down) == 2 and block.mask.inner.inner is None
    x = torch.randn(2, 16, 11, 8)
    reference = _resatt_reference_depth2(block, x)
    torch.testing.assert_close(block(x), reference, rtol=1e-5, atol=1e-5)
    block.mask.skip, block.mask.up[0] = block.mask.up[0], block.mask.skip  # a miswired branch must be caught
    assert not torch.allclose(block(x), reference, atol=1e-4)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 5), (56, 56)])
def test_resatt_level_sizes_halve_with_ceil(size):
    block = ResidualAttention(4, depth=3).eval()
    seen = []
    for level in (block.mask, block.mask.inner, block.mask.inner.inner):
        level.pool.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    block(torch.randn(1, 4, *size))
    expected, (h, w) = [], size
    for _ in range(3):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        expected.append((h, w))
    assert seen == expected


def test_resatt_gate_is_between_one_and_two():
    block = _randomize(ResidualAttention(8, depth=2))
    x = torch.rand(2, 8, 10, 7) + 0.1
    ratio = block(x) / x
    assert ratio.min() >= 1 and ratio.max() <= 2
