"""Convolution swap blocks: SCConv (+ SCNet bottleneck stem) and Selective Kernel."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from surgeon.blocks import block_arguments, create_block, get_block
from surgeon.blocks.scconv import SCBottleneckStem, SCConv, clipped_avg_pool
from surgeon.blocks.sk import SelectiveKernel, clamp_groups
from surgeon.errors import BlockError

SWAPS = ("scconv", "scbottleneck", "sk")
SIZES = ((1, 1), (7, 5), (16, 16))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so that copies and comparisons can't pass by accident."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return module.eval()


def build(name: str, channels: int, stride: int = 1) -> nn.Module:
    return create_block(name, channels, channels, stride)


# --- registry and defaults -------------------------------------------------------------------------------------------

def test_registered_as_swaps() -> None:
    assert {name: get_block(name).kind for name in SWAPS} == dict.fromkeys(SWAPS, "swap")
    assert get_block("selective_kernel").factory is SelectiveKernel
    assert "arXiv:1903.06586" in get_block("sk").paper


def test_replaces_activation() -> None:
    assert SCConv.replaces_activation is False  # ends with BN like the official k4
    assert SCBottleneckStem.replaces_activation is True
    assert SelectiveKernel.replaces_activation is True


def test_defaults_match_official() -> None:
    defaults = {name: {k: p.default for k, p in block_arguments(get_block(name)).items()} for name in SWAPS}
    assert defaults["scconv"] == {"groups": 1, "dilation": 1, "pooling_r": 4, "upsample": "nearest"}
    assert defaults["scbottleneck"]["avd"] is False and defaults["scbottleneck"]["pooling_r"] == 4
    assert defaults["sk"] == {  # SKNet-50: 32 groups, M = 2, r = 16, L = 32
        "groups": 32, "dilation": 1, "num_paths": 2, "rd_ratio": 1 / 16, "rd_channels": None, "rd_divisor": 1,
        "min_channels": 32, "act_layer": "relu",
    }
    assert list(inspect.signature(SCConv).parameters)[:3] == ["in_channels", "out_channels", "stride"]


def test_bad_options() -> None:
    with pytest.raises(BlockError, match="upsample"):
        create_block("scconv", 8, 8, 1, upsample="bicubic")
    with pytest.raises(BlockError, match="groups"):
        create_block("scconv", 8, 8, 1, groups=3)
    with pytest.raises(BlockError, match="even"):
        create_block("scbottleneck", 8, 3, 1)
    with pytest.raises(BlockError, match="expects int"):
        create_block("sk", 8, 8, 1, groups="32")


@pytest.mark.parametrize(("in_channels", "out_channels", "groups", "expected"), [
    (256, 256, 32, 32), (48, 48, 32, 24), (3, 3, 32, 3), (1, 1, 32, 1), (64, 96, 32, 32), (64, 96, 64, 32),
    (128, 128, 1, 1), (7, 5, 32, 1),
])
def test_sk_group_clamping(in_channels: int, out_channels: int, groups: int, expected: int) -> None:
    assert clamp_groups(in_channels, out_channels, groups) == expected
    assert SelectiveKernel(in_channels, out_channels, groups=groups).convs[0].groups == expected


# --- parameter counts against the official layer lists ------------------------------------------------------------

def scconv_formula(c_in: int, c_out: int, groups: int = 1) -> int:
    # official SCConv: k2, k3 (3x3, in -> in) and k4 (3x3, in -> out), each followed by a BN
    return 2 * 9 * c_in * c_in // groups + 9 * c_in * c_out // groups + 2 * (2 * c_in + c_out)


def stem_formula(c_in: int, width: int) -> int:
    half = width // 2
    # conv1_a, conv1_b (1x1) + BNs; k1 (3x3) + BN; SCConv(half)
    return 2 * (c_in * half + 2 * half) + 9 * half * half + 2 * half + scconv_formula(half, half)


def sk_formula(channels: int, groups: int = 32, paths: int = 2) -> int:
    # sknet50.prototxt: M grouped 3x3 convs + BNs; fc1 (C -> d, no bias) + BN; fc2 (d -> M*C, no bias)
    d = max(channels // 16, 32)
    return paths * (9 * channels * channels // groups + 2 * channels) + channels * d + 2 * d + d * paths * channels


@pytest.mark.parametrize(("name", "channels", "stride", "formula", "pinned"), [
    ("scconv", 256, 1, scconv_formula, 1_771_008),
    ("scconv", 128, 2, scconv_formula, 443_136),
    ("scbottleneck", 256, 1, stem_formula, 656_896),
    ("scbottleneck", 128, 2, stem_formula, 164_608),
    ("sk", 256, 1, sk_formula, 62_528),
    ("sk", 128, 2, sk_formula, 22_080),
])
def test_param_counts(name: str, channels: int, stride: int, formula, pinned: int) -> None:
    args = (channels,) if name == "sk" else (channels, channels)
    assert formula(*args) == pinned
    assert n_params(build(name, channels, stride)) == pinned


def test_scconv_in_out_param_count() -> None:
    assert n_params(SCConv(64, 128, 2, groups=4)) == scconv_formula(64, 128, 4) == 37_376


class _BottleneckWithStem(nn.Module):
    """A torchvision Bottleneck whose conv1..conv2 units are replaced by an SCBottleneckStem."""

    def __init__(self, bottleneck: nn.Module) -> None:
        super().__init__()
        width = bottleneck.conv1.out_channels
        self.stem = SCBottleneckStem(bottleneck.conv1.in_channels, width, bottleneck.conv2.stride[0])
        self.conv3, self.bn3, self.relu, self.downsample = (
            bottleneck.conv3, bottleneck.bn3, bottleneck.relu, bottleneck.downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn3(self.conv3(self.stem(x))) + identity)


def test_scnet50_param_count() -> None:
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):  # shapes only: no memory, no init, a forward that only propagates shapes
        model = torchvision.models.resnet50()
        assert n_params(model) == 25_557_032
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for i, bottleneck in enumerate(layer):
                layer[i] = _BottleneckWithStem(bottleneck)
        x = torch.randn(1, 3, 224, 224)
    # SCBottleneck has the Bottleneck's conv weights plus 2 more BN(w/2)s: +2w per block, w = 64, 128, 256, 512
    expected = 25_557_032 + 2 * (3 * 64 + 4 * 128 + 6 * 256 + 3 * 512)
    assert n_params(model) == expected == 25_564_584
    assert round(expected / 1e6, 2) == 25.56  # SCNet-50 in the paper and the official README
    assert model.eval()(x).shape == (1, 1000)


# --- equivalence with the official formulations --------------------------------------------------------------------

def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)]


class OfficialSCConv(nn.Module):
    """SCConv as in MCG-NKU/SCNet scnet.py (groups=1, dilation=1), restated for the comparison."""

    def __init__(self, planes: int, stride: int, pooling_r: int = 4, mode: str = "nearest") -> None:
        super().__init__()
        self.k2 = nn.Sequential(nn.AvgPool2d(pooling_r, pooling_r), *_conv_bn(planes, planes))
        self.k3 = nn.Sequential(*_conv_bn(planes, planes))
        self.k4 = nn.Sequential(*_conv_bn(planes, planes, stride))
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(x + F.interpolate(self.k2(x), x.shape[2:], mode=self.mode))
        return self.k4(self.k3(x) * gate)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(16, 16), (7, 9), (14, 5)])
@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_scconv_matches_official(stride: int, size: tuple[int, int], upsample: str) -> None:
    official = randomize(OfficialSCConv(16, stride, mode=upsample))
    block = SCConv(16, 16, stride, upsample=upsample).eval()
    block.load_state_dict(official.state_dict())  # same module names as the official SCConv
    x = torch.randn(2, 16, *size)
    torch.testing.assert_close(block(x), official(x))


def test_upsample_modes_differ() -> None:
    block = randomize(SCConv(8, 8))
    x = torch.randn(1, 8, 12, 12)
    bilinear = SCConv(8, 8, upsample="bilinear").eval()
    bilinear.load_state_dict(block.state_dict())
    assert not torch.allclose(block(x), bilinear(x))


def test_clipped_pool() -> None:
    x = torch.randn(2, 3, 7, 9)
    torch.testing.assert_close(clipped_avg_pool(x, 4), F.avg_pool2d(x, 4, 4), rtol=0, atol=0)
    small = torch.randn(2, 3, 3, 9)  # H < r: the official AvgPool2d(4, 4) has no output row
    with pytest.raises(RuntimeError):
        F.avg_pool2d(small, 4, 4)
    expected = torch.stack([small[..., :4].mean((2, 3)), small[..., 4:8].mean((2, 3))], dim=-1).unsqueeze(2)
    torch.testing.assert_close(clipped_avg_pool(small, 4), expected)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (3, 9), (4, 4), (5, 7), (7, 2), (9, 13), (16, 16)])
@pytest.mark.parametrize("r", [2, 4])
def test_clipped_pool_equals_the_clipped_kernel_bit_for_bit(size: tuple[int, int], r: int) -> None:
    """The export-friendly form (fixed kernel, cut input, ceil_mode) gives the clipped kernel's very values."""
    x = torch.randn(2, 3, *size)
    clipped_kernel = F.avg_pool2d(x, (min(r, size[0]), min(r, size[1])), r)
    assert torch.equal(clipped_avg_pool(x, r), clipped_kernel)
    assert torch.equal(clipped_avg_pool(x.to(memory_format=torch.channels_last), r), clipped_kernel)


@pytest.mark.parametrize("stride", [1, 2])
def test_stem_matches_official_scbottleneck(stride: int) -> None:
    c_in, width = 24, 16
    half = width // 2
    parts = nn.ModuleDict({
        "conv1_a": nn.Conv2d(c_in, half, 1, bias=False), "bn1_a": nn.BatchNorm2d(half),
        "conv1_b": nn.Conv2d(c_in, half, 1, bias=False), "bn1_b": nn.BatchNorm2d(half),
        "k1": nn.Sequential(*_conv_bn(half, half, stride)), "scconv": OfficialSCConv(half, stride),
    })
    randomize(parts)

    def official(x: torch.Tensor) -> torch.Tensor:  # SCBottleneck.forward up to conv3
        out_a = F.relu(parts["bn1_a"](parts["conv1_a"](x)))
        out_b = F.relu(parts["bn1_b"](parts["conv1_b"](x)))
        return torch.cat([F.relu(parts["k1"](out_a)), F.relu(parts["scconv"](out_b))], dim=1)

    stem = SCBottleneckStem(c_in, width, stride).eval()
    # the stem fuses conv1_a|conv1_b into conv1 and k1|k4 into the 2-group conv2: concatenate along outputs
    sd = parts.state_dict()
    mapped = {"conv1.weight": torch.cat([sd["conv1_a.weight"], sd["conv1_b.weight"]]),
              "conv2.weight": torch.cat([sd["k1.0.weight"], sd["scconv.k4.0.weight"]])}
    for key in ("weight", "bias", "running_mean", "running_var"):
        mapped[f"bn1.{key}"] = torch.cat([sd[f"bn1_a.{key}"], sd[f"bn1_b.{key}"]])
        mapped[f"bn2.{key}"] = torch.cat([sd[f"k1.1.{key}"], sd[f"scconv.k4.1.{key}"]])
    mapped |= {k: v for k, v in sd.items() if k.startswith(("scconv.k2", "scconv.k3"))}
    missing, unexpected = stem.load_state_dict(mapped, strict=False)
    assert unexpected == [] and all(k.endswith("num_batches_tracked") for k in missing)
    x = torch.randn(2, c_in, 11, 13)
    torch.testing.assert_close(stem(x), official(x))


@pytest.mark.parametrize("stride", [1, 2])
def test_stem_avd(stride: int) -> None:
    stem = SCBottleneckStem(8, 8, stride, avd=True).eval()
    plain = SCBottleneckStem(8, 8, 1).eval()
    plain.load_state_dict(stem.state_dict())
    x = torch.randn(1, 8, 9, 9)
    expected = F.avg_pool2d(plain(x), 3, stride, padding=1) if stride > 1 else plain(x)
    torch.testing.assert_close(stem(x), expected)


# --- timm's SelectiveKernel ------------------------------------------------------------------------------------------

def _timm_sk(channels: int, stride: int, groups: int, **kwargs):
    timm_layers = pytest.importorskip("timm.layers")
    return timm_layers.SelectiveKernel(channels, channels, kernel_size=[3, 5], stride=stride, groups=groups,
                                       keep_3x3=True, **kwargs)


@pytest.mark.parametrize(("channels", "stride", "groups"), [(64, 1, 32), (128, 2, 32), (48, 2, 1)])
def test_sk_matches_configured_timm(channels: int, stride: int, groups: int) -> None:
    attn = max(channels // 16, 32)
    ref = randomize(_timm_sk(channels, stride, groups, split_input=False, rd_channels=attn))
    block = SelectiveKernel(channels, channels, stride, groups=groups).eval()
    assert n_params(block) == n_params(ref)
    sd = ref.state_dict()
    mapped = {f"convs.{m}.weight": sd[f"paths.{m}.conv.weight"] for m in range(2)}
    for key in ("weight", "bias", "running_mean", "running_var"):
        mapped[f"bn.{key}"] = torch.cat([sd[f"paths.{m}.bn.{key}"] for m in range(2)])
        mapped[f"fc_bn.{key}"] = sd[f"attn.bn.{key}"]
    mapped["fc_reduce.weight"] = sd["attn.fc_reduce.weight"]
    mapped["fc_select.weight"] = sd["attn.fc_select.weight"]
    missing, unexpected = block.load_state_dict(mapped, strict=False)
    assert unexpected == [] and all(k.endswith("num_batches_tracked") for k in missing)
    x = torch.randn(2, channels, 9, 7)
    torch.testing.assert_close(block(x), ref(x))


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("train", [True, False])
def test_sk_split_paths_equal_the_concatenated_form(momentum: float | None, train: bool) -> None:
    """``SelectiveKernel._paths``: normalising each path on its own (training, torch.compile) gives the same
    features, gradients and BatchNorm statistics as one BatchNorm over the concatenated paths, step after step."""
    concatenated = randomize(SelectiveKernel(16, 16, 1, groups=4)).train(train)
    concatenated.bn.momentum = momentum
    split = randomize(SelectiveKernel(16, 16, 1, groups=4)).train(train)
    split.load_state_dict(concatenated.state_dict())
    split.bn.momentum = momentum
    x = torch.randn(4, 16, 9, 7)
    for _ in range(2):
        feats = [m._paths([conv(x) for conv in m.convs], split=s) for m, s in ((concatenated, False), (split, True))]
        assert feats[1].shape == (4, 2, 16, 9, 7)
        torch.testing.assert_close(feats[1], feats[0], rtol=0, atol=0)
        grads = [torch.autograd.grad(f.square().sum(), m.convs[1].weight)[0]
                 for f, m in zip(feats, (concatenated, split))]
        torch.testing.assert_close(grads[1], grads[0])
    for key, value in concatenated.state_dict().items():
        assert torch.equal(split.state_dict()[key], value), key
    assert int(split.bn.num_batches_tracked) == (2 if train else 0)


def test_sk_takes_the_split_form_in_training_and_under_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    block = SelectiveKernel(16, 16, 1, groups=4)
    forms: list[bool] = []
    original = SelectiveKernel._paths
    monkeypatch.setattr(SelectiveKernel, "_paths", lambda self, outs, split: forms.append(split) or original(
        self, outs, split))
    x = torch.randn(2, 16, 5, 5)
    block.train()(x), block.eval()(x)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    block.eval()(x)
    assert forms == [True, False, True]


@pytest.mark.parametrize("convert", ["sync", "frozen"])
def test_sk_with_a_converted_batchnorm_calls_it(monkeypatch: pytest.MonkeyPatch, convert: str) -> None:
    """A user's SyncBatchNorm (which synchronises statistics across processes) or FrozenBatchNorm2d replaces the
    plain BatchNorm2d: the block must call that module, never F.batch_norm with its tensors."""
    torchvision_ops = pytest.importorskip("torchvision.ops")
    block = randomize(SelectiveKernel(16, 16, 1, groups=4))
    reference = SelectiveKernel(16, 16, 1, groups=4)
    reference.load_state_dict(block.state_dict())
    if convert == "sync":
        block = nn.SyncBatchNorm.convert_sync_batchnorm(block)
    else:
        frozen = torchvision_ops.FrozenBatchNorm2d(32, eps=block.bn.eps)
        frozen.load_state_dict({k: v for k, v in block.bn.state_dict().items() if k != "num_batches_tracked"})
        block.bn = frozen
    calls: list[int] = []
    block.bn.register_forward_hook(lambda module, args, out: calls.append(1))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x = torch.randn(4, 16, 7, 7)
    out = block.train()(x)
    assert calls == [1]
    reference.train()
    if convert == "frozen":
        reference.bn.eval()  # frozen: the paths normalised with the running statistics, the rest training
    torch.testing.assert_close(out, reference(x))


def test_sk_timm_defaults_differ() -> None:
    # timm's defaults: split input (half the channels per path) and d = make_divisible(C/16, 8) with no L=32 floor
    timm_default = _timm_sk(256, 1, 32)
    assert timm_default.attn.fc_reduce.out_channels == 16
    assert SelectiveKernel(256, 256).fc_reduce.out_channels == 32
    assert n_params(timm_default) == 31_776 and n_params(SelectiveKernel(256, 256)) == 62_528
    assert _timm_sk(128, 1, 32, split_input=False).attn.fc_reduce.out_channels == 8


# --- shapes, dtypes, memory formats, tracing, export ---------------------------------------------------------------

def _widths(name: str) -> tuple[int, ...]:
    return (2, 4, 64) if name == "scbottleneck" else (1, 3, 64)


@pytest.mark.parametrize("name", SWAPS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stride", [1, 2])
def test_shapes(name: str, size: tuple[int, int], stride: int) -> None:
    for channels in _widths(name):
        block = build(name, channels, stride).eval()
        out = block(torch.randn(1, channels, *size))
        assert out.shape == (1, channels, -(-size[0] // stride), -(-size[1] // stride))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SWAPS)
def test_in_out_channels_and_train_mode(name: str) -> None:
    block = create_block(name, 6, 10, 2)
    out = block(torch.randn(2, 6, 7, 5))  # training mode: batch statistics (batch 2)
    assert out.shape == (2, 10, 4, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_scbottleneck_needs_even_width() -> None:
    for width in (1, 3):
        with pytest.raises(ValueError, match="even"):
            SCBottleneckStem(4, width)


@pytest.mark.parametrize("name", SWAPS)
def test_activation_matches_flag(name: str) -> None:
    block = randomize(build(name, 8))
    out = block(torch.randn(2, 8, 9, 9))
    assert bool((out >= 0).all()) == block.replaces_activation


@pytest.mark.parametrize("name", SWAPS)
def test_bf16_autocast(name: str) -> None:
    block = randomize(build(name, 32, 2))
    x = torch.randn(2, 32, 15, 13)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    reference = block(x)
    assert torch.isfinite(out).all()
    assert (out.float() - reference).norm() / reference.norm() < 0.05


@pytest.mark.parametrize("name", SWAPS)
def test_channels_last(name: str) -> None:
    block = randomize(build(name, 32, 2))
    x = torch.randn(2, 32, 15, 13)
    torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), block(x), rtol=1e-4, atol=1e-5)
    block_cl = block.to(memory_format=torch.channels_last)
    torch.testing.assert_close(block_cl(x.to(memory_format=torch.channels_last)), block(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SWAPS)
def test_fx_trace_equals_eager(name: str) -> None:
    block = randomize(build(name, 8, 2))
    traced = torch.fx.symbolic_trace(block)
    for size in SIZES + ((9, 3),):  # one trace serves every size, including maps smaller than pooling_r
        x = torch.randn(2, 8, *size)
        assert torch.equal(traced(x), block(x))


@pytest.mark.parametrize("name", SWAPS)
def test_no_graph_breaks(name: str) -> None:
    block = randomize(build(name, 8, 2))
    explanation = torch._dynamo.explain(block)(torch.randn(2, 8, 9, 7))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.parametrize("name", SWAPS)
def test_onnx_export(name: str, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    block = randomize(build(name, 8, 2))
    x = torch.randn(2, 8, 9, 7)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(block, (x,), str(path), opset_version=17, dynamo=False)
    assert onnx.load(str(path)).opset_import[0].version == 17
    session = ort.InferenceSession(str(path))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), block(x), rtol=1e-4, atol=1e-5)


# --- inheriting the replaced unit's weights ----------------------------------------------------------------------

def _unit(c_in: int, c_out: int, stride: int = 1, groups: int = 1, kernel: int = 3, dilation: int = 1):
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation,
                     groups=groups, bias=False)
    return conv, randomize(nn.BatchNorm2d(c_out), seed=1)


def test_scconv_inherits_into_k4() -> None:
    conv, norm = _unit(16, 24, stride=2)
    block = SCConv(16, 24, 2)
    assert block.inherit_conv_weights(conv, norm) == ["k4.0.weight", "k4.1.weight", "k4.1.bias"]
    assert torch.equal(block.k4[0].weight, conv.weight)
    assert torch.equal(block.k4[1].running_var, norm.running_var) and torch.equal(block.k4[1].bias, norm.bias)
    assert block.inherit_conv_weights(*_unit(16, 24, kernel=1)) == []


@pytest.mark.parametrize("unit_groups", [32, 1])
def test_sk_path0_reproduces_unit(unit_groups: int) -> None:
    conv, norm = _unit(64, 64, stride=2, groups=unit_groups)
    if unit_groups == 1:  # a full conv lands on the 32-group path as its diagonal blocks: zero the rest to compare
        with torch.no_grad():
            mask = torch.block_diag(*[torch.ones(2, 2)] * 32)[:, :, None, None]
            conv.weight.mul_(mask)
    block = SelectiveKernel(64, 64, 2).eval()
    names = block.inherit_conv_weights(conv, norm)
    assert names == ["convs.0.weight", "bn.weight", "bn.bias", "convs.1.weight"]
    x = torch.randn(2, 64, 9, 7)
    paths = block.act(block.bn(torch.cat([c(x) for c in block.convs], dim=1)))
    unit = nn.Sequential(conv, norm, nn.ReLU()).eval()
    torch.testing.assert_close(paths[:, :64], unit(x))
    assert torch.equal(block.convs[1].weight, block.convs[0].weight)
    assert SelectiveKernel(64, 64, 2).inherit_conv_weights(conv, norm, include_dilated=False) == [
        "convs.0.weight", "bn.weight", "bn.bias"]


def test_sk_inherit_refuses_other_dilation_or_kernel() -> None:
    block = SelectiveKernel(32, 32)
    assert block.inherit_conv_weights(*_unit(32, 32, dilation=2)) == []
    assert block.inherit_conv_weights(*_unit(32, 32, kernel=5)) == []


def test_stem_inherits_torchvision_bottleneck() -> None:
    torchvision = pytest.importorskip("torchvision")
    bottleneck = randomize(torchvision.models.resnet.Bottleneck(32, 16, stride=2, downsample=nn.Identity()))
    width, half = bottleneck.conv1.out_channels, bottleneck.conv1.out_channels // 2
    stem = SCBottleneckStem(32, width, 2).eval()
    assert stem.inherit_conv_weights(bottleneck.conv1, bottleneck.bn1) == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert stem.inherit_conv_weights(bottleneck.conv2, bottleneck.bn2) == ["conv2.weight", "bn2.weight", "bn2.bias"]
    assert stem.inherit_conv_weights(*_unit(32, width, kernel=5)) == []
    # branch a (k1) is the original conv2 restricted to its a -> a block: equal once the rest of that block is 0
    with torch.no_grad():
        bottleneck.conv2.weight[:half, half:] = 0
    x = torch.randn(2, 32, 11, 9)
    b = bottleneck
    expected = F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x))))))
    torch.testing.assert_close(stem(x)[:, :half], expected[:, :half])
    torch.testing.assert_close(stem.conv2.weight[half:], bottleneck.conv2.weight[half:, half:])
