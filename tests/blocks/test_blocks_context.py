"""Tests for the context blocks: Global Context (``gc``) and Non-local (``nonlocal``)."""

from __future__ import annotations

import inspect
import math

import pytest
import timm.layers as timm_layers
import torch
import torch.nn.functional as F
from torch import nn

from surgeon.blocks import create_block, get_block
from surgeon.blocks.gc import GlobalContext
from surgeon.blocks.non_local import NonLocalBlock
from surgeon.errors import BlockError

# (registry name, options): every fusion and pooling path of GC, and the pooling/scale switches of Non-local.
CASES = [
    ("gc", {}),
    ("gc", {"fusion": "channel_mul"}),
    ("gc", {"fusion": "both", "pooling_type": "avg"}),
    ("nonlocal", {}),
    ("nonlocal", {"use_pool": False, "use_scale": False}),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in opts.items()) or 'default'}" for name, opts in CASES]
SHAPES = [(1, 1), (7, 5), (16, 16)]


def _randomize(block: nn.Module, seed: int = 0) -> nn.Module:
    """Replace every zero/one initialisation with random values so that no branch hides behind a zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in block.parameters():
            fan_in = param[0].numel() if param.dim() > 1 else 4
            param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))
        for module in block.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
    return block.eval()


def _build(name: str, channels: int, opts: dict, init: str = "paper", randomize: bool = True) -> nn.Module:
    block = create_block(name, channels, init=init, **opts)
    return _randomize(block) if randomize else block.eval()


def _n_params(block: nn.Module) -> int:
    return sum(p.numel() for p in block.parameters())


# --- registry and defaults -------------------------------------------------------------------------------------


def test_registry_names_and_aliases():
    assert get_block("gc").factory is GlobalContext
    assert get_block("global_context").factory is GlobalContext
    for alias in ("nonlocal", "non_local", "nl", "NL"):
        assert get_block(alias).factory is NonLocalBlock
    assert "1904.11492" in get_block("gc").paper and "1711.07971" in get_block("nl").paper


def test_defaults_match_official():
    gc = inspect.signature(GlobalContext).parameters
    # official ContextBlock: pooling_type='att', fusion_types=('channel_add',), r16 = ratio 1/16, int() truncation
    assert gc["rd_ratio"].default == 1 / 16
    assert gc["pooling_type"].default == "att"
    assert gc["fusion"].default == "channel_add"
    assert gc["rd_divisor"].default == 1
    nl = inspect.signature(NonLocalBlock).parameters
    # video-nonlocal-net config.py: USE_SCALE = True, USE_MAXPOOL = True; dim_inner = int(dim_in / 2)
    assert nl["rd_ratio"].default == 1 / 2
    assert nl["use_scale"].default is True
    assert nl["use_pool"].default is True
    assert NonLocalBlock(256).scale == 128 ** -0.5


def test_bad_options_raise():
    with pytest.raises(BlockError, match="fusion"):
        create_block("gc", 16, fusion="channel_sum")
    with pytest.raises(BlockError, match="pooling_type"):
        create_block("gc", 16, pooling_type="max")
    with pytest.raises(BlockError, match="expects bool"):
        create_block("nl", 16, use_pool="yes")
    with pytest.raises(BlockError, match="init"):
        create_block("nl", 16, init="zeros")


# --- widths and parameter counts -------------------------------------------------------------------------------


def _gc_formula(c: int, p: int, att: bool = True, branches: int = 1) -> int:
    """Official ContextBlock: conv_mask (C->1, bias); per branch conv (C->P, bias), LayerNorm([P,1,1]), conv (P->C)."""
    return (c + 1 if att else 0) + branches * ((c * p + p) + 2 * p + (p * c + c))


def _nl_formula(c: int, p: int) -> int:
    """Official non-local: theta/phi/g (C->P, bias), out (P->C, bias), BatchNorm(C) weight and bias."""
    return 3 * (c * p + p) + (p * c + c) + 2 * c


@pytest.mark.parametrize(
    ("channels", "opts", "hidden", "expected"),
    [
        (256, {}, 16, 8753),
        (256, {"fusion": "both"}, 16, 17249),
        (256, {"pooling_type": "avg"}, 16, 8496),
        (256, {"rd_ratio": 1 / 4}, 64, 33473),
        (24, {}, 1, 100),  # int(24 / 16) = 1: truncation, as the official int(inplanes * ratio)
        (8, {}, 1, 36),  # int(8 / 16) = 0, clamped to 1
        (1, {}, 1, 8),
    ],
)
def test_gc_param_count(channels, opts, hidden, expected):
    block = GlobalContext(channels, **opts)
    fusion = opts.get("fusion", "channel_add")
    branches = 2 if fusion == "both" else 1
    assert _gc_formula(channels, hidden, opts.get("pooling_type", "att") == "att", branches) == expected
    assert _n_params(block) == expected
    branch = block.channel_add_conv if block.channel_add_conv is not None else block.channel_mul_conv
    assert branch[0].out_channels == hidden


@pytest.mark.parametrize(("channels", "inner", "expected"), [(256, 128, 132224), (1024, 512, 2101760), (5, 2, 61),
                                                             (3, 1, 24), (1, 1, 10)])
def test_nonlocal_param_count(channels, inner, expected):
    block = NonLocalBlock(channels)
    assert block.theta.out_channels == inner
    assert _nl_formula(channels, inner) == expected
    assert _n_params(block) == expected


def test_gc_state_dict_keys_match_official_layout():
    block = GlobalContext(64, fusion="both")
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    expected = {"conv_mask.weight": (1, 64, 1, 1), "conv_mask.bias": (1,)}
    for branch in ("channel_add_conv", "channel_mul_conv"):
        expected.update({
            f"{branch}.0.weight": (4, 64, 1, 1), f"{branch}.0.bias": (4,),
            f"{branch}.1.weight": (4, 1, 1), f"{branch}.1.bias": (4, 1, 1),
            f"{branch}.3.weight": (64, 4, 1, 1), f"{branch}.3.bias": (64,),
        })
    assert shapes == expected


def test_nonlocal_state_dict_shapes():
    shapes = {k: tuple(v.shape) for k, v in NonLocalBlock(64).state_dict().items() if not k.startswith("bn.")}
    assert shapes == {
        "theta.weight": (32, 64, 1, 1), "theta.bias": (32,), "phi.weight": (32, 64, 1, 1), "phi.bias": (32,),
        "g.weight": (32, 64, 1, 1), "g.bias": (32,), "out.weight": (64, 32, 1), "out.bias": (64,),
    }


def test_identity_mode_adds_a_parameter_only_for_the_mul_gate():
    assert _n_params(GlobalContext(64, init="identity")) == _n_params(GlobalContext(64))
    assert _n_params(GlobalContext(64, fusion="channel_mul", init="identity")) == _n_params(
        GlobalContext(64, fusion="channel_mul")) + 1
    assert _n_params(NonLocalBlock(64, init="identity")) == _n_params(NonLocalBlock(64))


# --- initialisation --------------------------------------------------------------------------------------------


def test_gc_official_init():
    torch.manual_seed(0)
    block = GlobalContext(1024, fusion="both")
    assert torch.count_nonzero(block.conv_mask.bias) == 0
    assert block.conv_mask.weight.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.15)  # kaiming fan_in
    for branch in (block.channel_add_conv, block.channel_mul_conv):
        assert torch.count_nonzero(branch[3].weight) == 0 and torch.count_nonzero(branch[3].bias) == 0
        assert torch.equal(branch[1].weight, torch.ones(64, 1, 1))
        assert torch.count_nonzero(branch[0].weight) > 0


def test_nonlocal_official_init():
    torch.manual_seed(0)
    block = NonLocalBlock(256)
    for conv in (block.theta, block.phi, block.g, block.out):
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert torch.count_nonzero(conv.bias) == 0
    assert torch.count_nonzero(block.bn.weight) == 0 and torch.count_nonzero(block.bn.bias) == 0


@pytest.mark.parametrize("init", ["paper", "identity"])
@pytest.mark.parametrize("opts", [{}, {"pooling_type": "avg"}, {"fusion": "both"}, {"fusion": "channel_mul"}])
def test_gc_identity_at_creation(init, opts):
    torch.manual_seed(0)
    block = GlobalContext(64, init=init, **opts).eval()
    x = torch.randn(2, 64, 7, 5)
    out = block(x)
    if init == "paper" and opts.get("fusion", "channel_add") != "channel_add":
        # the official zero-init gives sigmoid(0) = 0.5 on the mul gate: the features are halved, not kept
        assert torch.equal(out, x * 0.5)
    else:
        assert torch.equal(out, x)


@pytest.mark.parametrize("init", ["paper", "identity"])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("opts", [{}, {"use_pool": False}])
def test_nonlocal_identity_at_creation(init, train, opts):
    torch.manual_seed(0)
    block = NonLocalBlock(32, init=init, **opts).train(train)
    x = torch.randn(2, 32, 7, 5)
    assert torch.equal(block(x), x)


# --- forward semantics against reference formulas --------------------------------------------------------------


def _reference_gc_context(x: torch.Tensor, block: GlobalContext) -> torch.Tensor:
    logits = torch.einsum("nchw,c->nhw", x, block.conv_mask.weight.flatten()) + block.conv_mask.bias
    weights = logits.flatten(1).softmax(-1)
    return torch.einsum("ncp,np->nc", x.flatten(2), weights)[..., None, None]


def test_gc_forward_matches_formula():
    block = _build("gc", 16, {"fusion": "both"})
    x = torch.randn(2, 16, 6, 9)
    context = _reference_gc_context(x, block)
    torch.testing.assert_close(block.spatial_pool(x), context)
    expected = x * torch.sigmoid(block.channel_mul_conv(context)) + block.channel_add_conv(context)
    torch.testing.assert_close(block(x), expected)
    avg = _build("gc", 16, {"pooling_type": "avg"})
    torch.testing.assert_close(avg.spatial_pool(x), x.mean((2, 3), keepdim=True))


def test_gc_calls_a_mask_module_the_user_swapped_in():
    """The mask conv runs as a matrix product only while it is a plain Conv2d; a module put in its place (a
    quantisation-aware or adapter wrapper) is called, so what it adds to the convolution is kept."""
    block = _build("gc", 16, {})
    x = torch.randn(2, 16, 5, 7)

    class Doubled(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    doubled = Doubled(16, 1, kernel_size=1)
    doubled.load_state_dict(block.conv_mask.state_dict())
    block.conv_mask = doubled
    mask = F.conv2d(x, doubled.weight, doubled.bias).flatten(2)
    expected_context = torch.bmm(x.flatten(2), (2 * mask).softmax(-1).transpose(1, 2)).unsqueeze(-1)
    torch.testing.assert_close(block.spatial_pool(x), expected_context)


def _reference_nonlocal(x: torch.Tensor, block: NonLocalBlock, ceil_mode: bool) -> torch.Tensor:
    """The official computation written out: pool (floor mode in Caffe2), affinity, scaled softmax, residual."""
    pooled = F.max_pool2d(x, 2, 2, ceil_mode=ceil_mode) if block.use_pool else x
    theta, phi, g = block.theta(x).flatten(2), block.phi(pooled).flatten(2), block.g(pooled).flatten(2)
    affinity = torch.einsum("npi,npj->nij", theta, phi) * block.scale
    y = torch.einsum("nij,npj->npi", affinity.softmax(-1), g).reshape(x.shape[0], -1, *x.shape[2:])
    return x + block.bn(F.conv2d(y, block.out.weight.unsqueeze(-1), block.out.bias))  # the official 1x1 conv


@pytest.mark.parametrize("opts", [{}, {"use_pool": False}, {"use_scale": False}])
def test_nonlocal_forward_matches_official_on_even_sizes(opts):
    block = _build("nonlocal", 16, opts)
    x = torch.randn(2, 16, 8, 6)
    torch.testing.assert_close(block(x), _reference_nonlocal(x, block, ceil_mode=False))


def test_nonlocal_pooling_keeps_odd_border_and_single_pixels():
    block = _build("nonlocal", 8, {})
    key_sizes = []
    block.phi.register_forward_hook(lambda mod, args, out: key_sizes.append(tuple(out.shape[2:])))
    for size in [(7, 5), (16, 16), (1, 1), (1, 6)]:
        block(torch.randn(1, 8, *size))
    assert key_sizes == [(4, 3), (8, 8), (1, 1), (1, 3)]
    x = torch.randn(1, 8, 7, 5)
    # ceil mode (documented deviation): differs from Caffe2's floor pooling on odd sizes, equal to ceil reference
    torch.testing.assert_close(block(x), _reference_nonlocal(x, block, ceil_mode=True))
    assert not torch.allclose(block(x), _reference_nonlocal(x, block, ceil_mode=False))


# --- robustness: shapes, dtypes, layouts, tracing, export ------------------------------------------------------


@pytest.mark.parametrize(("name", "opts"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("channels", [1, 3, 64])
@pytest.mark.parametrize("size", SHAPES)
def test_shapes(name, opts, channels, size):
    block = _build(name, channels, opts)
    x = torch.randn(1, channels, *size)
    out = block(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, x)  # the randomised block does something


@pytest.mark.parametrize(("name", "opts"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("size", SHAPES)
def test_bf16_autocast(name, opts, size):
    block = _build(name, 64, opts)
    x = torch.randn(1, 64, *size)
    expected = block(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.05)


@pytest.mark.parametrize(("name", "opts"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("size", SHAPES)
def test_channels_last(name, opts, size):
    block = _build(name, 16, opts)
    x = torch.randn(1, 16, *size)
    torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), block(x))
    block_cl = _build(name, 16, opts).to(memory_format=torch.channels_last)
    torch.testing.assert_close(block_cl(x.to(memory_format=torch.channels_last)), block(x))


@pytest.mark.parametrize(("name", "opts"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("init", ["paper", "identity"])
def test_fx_trace_equals_eager(name, opts, init):
    block = _build(name, 16, opts, init=init)
    traced = torch.fx.symbolic_trace(block)
    for size in SHAPES:  # one trace, every shape: no shape was baked in
        x = torch.randn(1, 16, *size)
        torch.testing.assert_close(traced(x), block(x), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "opts"), [CASES[2], CASES[3]], ids=[CASE_IDS[2], CASE_IDS[3]])
def test_no_graph_breaks(name, opts):
    block = _build(name, 8, opts, init="identity")
    explanation = torch._dynamo.explain(block)(torch.randn(1, 8, 5, 4))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize(("name", "opts"), CASES, ids=CASE_IDS)
def test_inductor_compile_with_dynamic_shapes(name, opts):
    """Full Inductor compile (slow); a new input size recompiles with dynamic shapes (pytorch/pytorch#185510)."""
    torch._dynamo.reset()
    block = _build(name, 16, opts, init="identity")
    compiled = torch.compile(block, fullgraph=True)
    for size in [(7, 5), (16, 16), (9, 12)]:
        x = torch.randn(2, 16, *size)
        torch.testing.assert_close(compiled(x), block(x), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter: seconds faster than dynamo's
@pytest.mark.parametrize(("name", "opts"), [CASES[2], CASES[3]], ids=[CASE_IDS[2], CASE_IDS[3]])
@pytest.mark.parametrize("size", [(1, 1), (7, 5)])
def test_onnx_export(name, opts, size, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    block = _build(name, 8, opts, init="identity")
    x = torch.randn(1, 8, *size)
    path = tmp_path / "block.onnx"
    torch.onnx.export(block, (x,), str(path), opset_version=17, dynamo=False, input_names=["x"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), block(x), atol=1e-5, rtol=1e-5)


# --- timm comparison -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fusion", ["channel_add", "channel_mul", "both"])
@pytest.mark.parametrize("pooling_type", ["att", "avg"])
def test_gc_equals_timm_with_copied_weights(fusion, pooling_type):
    ours = _build("gc", 64, {"fusion": fusion, "pooling_type": pooling_type})
    theirs = timm_layers.GlobalContext(64, use_attn=pooling_type == "att", fuse_add=fusion != "channel_mul",
                                       fuse_scale=fusion != "channel_add", rd_ratio=1 / 16, rd_divisor=1).eval()
    with torch.no_grad():
        if pooling_type == "att":
            theirs.conv_attn.load_state_dict(ours.conv_mask.state_dict())
        for mine, timm_mlp in ((ours.channel_add_conv, theirs.mlp_add), (ours.channel_mul_conv, theirs.mlp_scale)):
            if mine is None:
                assert timm_mlp is None
                continue
            timm_mlp.fc1.load_state_dict(mine[0].state_dict())
            timm_mlp.norm.weight.copy_(mine[1].weight.flatten())  # LayerNorm([P,1,1]) == LayerNorm2d(P) on 1x1
            timm_mlp.norm.bias.copy_(mine[1].bias.flatten())
            assert timm_mlp.norm.eps == 1e-6 and mine[1].eps == 1e-5  # documented difference
            timm_mlp.norm.eps = mine[1].eps
            timm_mlp.fc2.load_state_dict(mine[3].state_dict())
    x = torch.randn(2, 64, 7, 5)
    torch.testing.assert_close(ours(x), theirs(x))


def test_gc_documented_differences_from_timm():
    defaults = inspect.signature(timm_layers.GlobalContext).parameters
    assert defaults["fuse_scale"].default is True and defaults["fuse_add"].default is False  # timm: mul only
    assert defaults["rd_ratio"].default == 1 / 8
    # width: timm rounds (make_divisible), the official code truncates: 24 / 16 = 1.5 -> 2 vs 1
    assert timm_layers.GlobalContext(24, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16).mlp_add.fc1.out_channels == 2
    assert GlobalContext(24).channel_add_conv[0].out_channels == 1
    # timm zeroes only the last conv's weight, not its bias: its add block is not the identity at creation
    torch.manual_seed(0)
    theirs = timm_layers.GlobalContext(64, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16).eval()
    x = torch.randn(1, 64, 7, 5)
    assert not torch.equal(theirs(x), x)
    assert torch.equal(GlobalContext(64).eval()(x), x)


def _copy_nonlocal_to_timm(ours: NonLocalBlock, theirs: nn.Module) -> None:
    for mine, timm_name in ((ours.theta, "t"), (ours.phi, "p"), (ours.g, "g"), (ours.bn, "norm")):
        getattr(theirs, timm_name).load_state_dict(mine.state_dict())
    with torch.no_grad():  # our output projection is a Conv1d over the flattened positions: same numbers
        theirs.z.weight.copy_(ours.out.weight.unsqueeze(-1))
        theirs.z.bias.copy_(ours.out.bias)


def test_nonlocal_equals_timm_with_copied_weights_and_official_scale():
    ours = _build("nonlocal", 64, {"use_pool": False})
    theirs = timm_layers.NonLocalAttn(64, rd_channels=32, use_scale=True).eval()
    _copy_nonlocal_to_timm(ours, theirs)
    x = torch.randn(2, 64, 7, 5)
    # documented difference: timm scales by C^-0.5, the official code by (C/2)^-0.5
    assert theirs.scale == 64 ** -0.5 and ours.scale == 32 ** -0.5
    assert not torch.allclose(ours(x), theirs(x), atol=1e-4)
    theirs.scale = ours.scale
    torch.testing.assert_close(ours(x), theirs(x))
    # and timm has no key pooling: the official default (use_pool=True) differs
    pooled = _build("nonlocal", 64, {})
    _copy_nonlocal_to_timm(pooled, theirs)
    assert not torch.allclose(pooled(x), theirs(x), atol=1e-4)


def test_nonlocal_documented_width_difference_from_timm():
    # timm: make_divisible(C / 8, 8); official: int(C / 2)
    assert timm_layers.NonLocalAttn(256).t.out_channels == 32
    assert NonLocalBlock(256).theta.out_channels == 128
