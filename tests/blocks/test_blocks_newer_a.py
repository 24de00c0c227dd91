"""Tests for EMA, SCSA, MLCA, Shuffle Attention and ELA.

Each block is compared with a re-computation of its official forward pass written here with the official code's own
ops (adaptive pools, einops-style reshapes with the sizes baked in, GroupNorm modules), using the block's weights; its
parameter count is pinned at two widths against the formula read from the official code; and the sites it cannot be
built for are answered with one line before any model is touched.
"""

from __future__ import annotations

import copy
import io
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from surgeon.blocks import create_block, get_block
from surgeon.blocks.ela import EfficientLocalAttention
from surgeon.blocks.ema import EfficientMultiScaleAttention, ema_fits
from surgeon.blocks.mlca import MixedLocalChannelAttention, adaptive_pool_matrix
from surgeon.blocks.sa import ShuffleAttention, sa_fits
from surgeon.blocks.scsa import SCSA, scsa_fits
from surgeon.errors import BlockError
from surgeon.pipeline.surgery import insert_rule, run_surgery
from tests._util import num_params, run_cli

NEW_BLOCKS = ["ema", "scsa", "mlca", "sa", "ela"]


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter off its initial value, so that a misplaced op or a dropped term changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    return module.eval()


# ------------------------------------------------------------------------------------------- parameter counts


def _eca_k(channels: int) -> int:
    t = int(abs(math.log(channels, 2) + 1) / 2)  # the official MLCA expression
    return t if t % 2 else t + 1


@pytest.mark.parametrize("name, channels, formula, expected", [
    ("ema", 64, 10 * 2 ** 2 + 4 * 2, 48),  # 10c'² + 4c', c' = C / 32
    ("ema", 256, 10 * 8 ** 2 + 4 * 8, 672),
    ("scsa", 64, 16 * 64, 1024),  # 16C
    ("scsa", 256, 16 * 256, 4096),
    ("mlca", 64, 2 * _eca_k(64), 6),  # 2k
    ("mlca", 256, 2 * _eca_k(256), 10),
    ("sa", 256, 3 * 256 // 64, 12),  # 3C/G
    ("sa", 512, 3 * 512 // 64, 24),
    ("ela", 64, 7 * 64 + 2 * 64, 576),  # kC + 2C
    ("ela", 256, 7 * 256 + 2 * 256, 2304),
])
def test_parameter_counts_equal_the_official_code(name: str, channels: int, formula: int, expected: int) -> None:
    assert num_params(create_block(name, channels, init="paper")) == formula == expected
    assert num_params(create_block(name, channels, init="identity")) == expected + 1


def test_paper_placements_add_the_papers_parameters() -> None:
    """SA after bn3 of every ResNet-50 Bottleneck: +708; SCSA after conv2/BN/ReLU (the mid width): +60,416."""
    resnet50 = [(64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3)]
    assert sum(n * num_params(create_block("sa", out, init="paper")) for _, out, n in resnet50) == 708
    assert sum(n * num_params(create_block("scsa", mid, init="paper")) for mid, _, n in resnet50) == 60416


# ------------------------------------------------------------------- the official forward passes, re-computed


def ema_official(block: EfficientMultiScaleAttention, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.size()
    g = block.groups
    group_x = x.reshape(b * g, -1, h, w)
    x_h = nn.AdaptiveAvgPool2d((None, 1))(group_x)
    x_w = nn.AdaptiveAvgPool2d((1, None))(group_x).permute(0, 1, 3, 2)
    hw = block.conv1x1(torch.cat([x_h, x_w], dim=2))
    x_h, x_w = torch.split(hw, [h, w], dim=2)
    x1 = block.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
    x2 = block.conv3x3(group_x)
    agp = nn.AdaptiveAvgPool2d((1, 1))
    x11 = agp(x1).reshape(b * g, -1, 1).permute(0, 2, 1).softmax(-1)
    x12 = x2.reshape(b * g, c // g, -1)
    x21 = agp(x2).reshape(b * g, -1, 1).permute(0, 2, 1).softmax(-1)
    x22 = x1.reshape(b * g, c // g, -1)
    weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * g, 1, h, w)
    return (group_x * weights.sigmoid()).reshape(b, c, h, w)


def scsa_official(block: SCSA, x: torch.Tensor) -> torch.Tensor:
    b, c, h_, w_ = x.size()
    group = c // 4
    convs = (block.local_dwc, block.global_dwc_s, block.global_dwc_m, block.global_dwc_l)
    x_h = x.mean(dim=3)
    x_h_attn = block.norm_h(torch.cat([conv(part) for conv, part in zip(convs, torch.split(x_h, group, dim=1))], 1))
    x_w = x.mean(dim=2)
    x_w_attn = block.norm_w(torch.cat([conv(part) for conv, part in zip(convs, torch.split(x_w, group, dim=1))], 1))
    x = x * x_h_attn.sigmoid().view(b, c, h_, 1) * x_w_attn.sigmoid().view(b, c, 1, w_)
    y = block.norm(nn.AvgPool2d(7, stride=7)(x))
    _, _, h_, w_ = y.size()
    heads, head_dim = block.head_num, c // block.head_num
    q, k, v = (proj(y).reshape(b, heads, head_dim, h_ * w_) for proj in (block.q, block.k, block.v))  # rearrange
    attn = (q @ k.transpose(-2, -1) * head_dim ** -0.5).softmax(dim=-1)
    attn = (attn @ v).reshape(b, heads * head_dim, h_, w_)  # rearrange back with h=int(h_), w=int(w_)
    return attn.mean((2, 3), keepdim=True).sigmoid() * x


def mlca_official(block: MixedLocalChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """The December 2023 ``MLCA.py`` (without its debug prints)."""
    s, lw = block.local_size, block.local_weight
    local_arv = nn.AdaptiveAvgPool2d(s)(x)
    global_arv = nn.AdaptiveAvgPool2d(1)(local_arv)
    b, c, m, n = x.shape
    temp_local = local_arv.view(b, c, -1).transpose(-1, -2).reshape(b, 1, -1)
    temp_global = global_arv.view(b, c, -1).transpose(-1, -2)
    y_local = block.conv_local(temp_local)
    y_global = block.conv(temp_global)
    y_local_transpose = y_local.reshape(b, s * s, c).transpose(-1, -2).view(b, c, s, s)
    y_global_transpose = y_global.view(b, -1).unsqueeze(-1).unsqueeze(-1)
    att_local = y_local_transpose.sigmoid()
    att_global = F.adaptive_avg_pool2d(y_global_transpose.sigmoid(), [s, s])
    att_all = F.adaptive_avg_pool2d(att_global * (1 - lw) + att_local * lw, [m, n])
    return x * att_all


def sa_official(block: ShuffleAttention, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b * block.groups, -1, h, w)
    x_0, x_1 = x.chunk(2, dim=1)
    xn = x_0 * torch.sigmoid(block.cweight * nn.AdaptiveAvgPool2d(1)(x_0) + block.cbias)
    xs = x_1 * torch.sigmoid(block.sweight * block.gn(x_1) + block.sbias)
    out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
    out = out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4)  # channel_shuffle(out, 2)
    return out.reshape(b, -1, h, w)


def ela_paper(block: EfficientLocalAttention, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.size()
    x_h = torch.mean(x, dim=3, keepdim=True).view(b, c, h)
    x_w = torch.mean(x, dim=2, keepdim=True).view(b, c, w)
    x_h = torch.sigmoid(block.gn(block.conv(x_h))).view(b, c, h, 1)
    x_w = torch.sigmoid(block.gn(block.conv(x_w))).view(b, c, 1, w)
    return x * x_h * x_w


OFFICIAL = [
    pytest.param(EfficientMultiScaleAttention, {}, 64, ema_official, id="ema"),
    pytest.param(EfficientMultiScaleAttention, {"factor": 8}, 64, ema_official, id="ema-factor8"),
    pytest.param(SCSA, {}, 64, scsa_official, id="scsa"),
    pytest.param(SCSA, {"head_num": 4}, 64, scsa_official, id="scsa-4heads"),
    pytest.param(MixedLocalChannelAttention, {}, 64, mlca_official, id="mlca"),
    pytest.param(MixedLocalChannelAttention, {}, 24, mlca_official, id="mlca-24"),
    pytest.param(ShuffleAttention, {}, 256, sa_official, id="sa"),
    pytest.param(ShuffleAttention, {"groups": 8}, 48, sa_official, id="sa-groups8"),
    pytest.param(EfficientLocalAttention, {}, 64, ela_paper, id="ela"),
]


@pytest.mark.parametrize("cls, kwargs, channels, official", OFFICIAL)
@pytest.mark.parametrize("size", [(7, 7), (13, 9), (16, 16), (23, 11)])
def test_equals_the_official_forward(cls, kwargs, channels, official, size) -> None:
    block = _randomize(cls(channels, init="paper", **kwargs))
    x = torch.randn(2, channels, *size)
    with torch.no_grad():
        torch.testing.assert_close(block(x), official(block, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(1, 1), (3, 4), (5, 5), (6, 9), (11, 14), (20, 20), (56, 56)])
def test_mlca_pooling_matrices_equal_adaptive_pooling_at_any_size(size: tuple[int, int]) -> None:
    """Sizes below, equal to, divisible by and not divisible by the 5x5 grid, pooled down and back up."""
    x = torch.randn(2, 3, *size)
    for out in [(5, 5), (size[0] + 3, size[1] * 2)]:
        rows, cols = adaptive_pool_matrix(size[0], out[0], x), adaptive_pool_matrix(size[1], out[1], x)
        torch.testing.assert_close(rows @ x @ cols.T, F.adaptive_avg_pool2d(x, out), rtol=1e-5, atol=1e-6)
    block = _randomize(MixedLocalChannelAttention(16))
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        torch.testing.assert_close(block(x), mlca_official(block, x), rtol=1e-5, atol=1e-6)


def test_mlca_keeps_samples_apart() -> None:
    """The fixed global branch: each sample's output depends on that sample alone (copies before the fix mix them)."""
    block = _randomize(MixedLocalChannelAttention(32))
    x = torch.randn(3, 32, 9, 7, requires_grad=True)
    block(x)[0].sum().backward()
    assert x.grad[0].abs().sum() > 0 and torch.count_nonzero(x.grad[1:]) == 0
    with torch.no_grad():
        alone = torch.cat([block(x[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(block(x), alone, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NEW_BLOCKS)
@pytest.mark.parametrize("train", [False, True])
def test_identity_init_is_exact_and_opens(name: str, train: bool) -> None:
    block = create_block(name, 128, init="identity").train(train)
    x = torch.randn(2, 128, 14, 9) * 3
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.identity_gate.gamma.fill_(1.0)
    assert not torch.equal(block(x), x)


def test_sa_identity_mode_leaves_out_the_shuffle_and_paper_mode_shuffles() -> None:
    x = torch.arange(8.0).view(1, 8, 1, 1).expand(1, 8, 2, 2).contiguous()
    paper = ShuffleAttention(8, groups=2, init="paper")
    with torch.no_grad():
        paper.cbias.fill_(50.0), paper.sbias.fill_(50.0)  # gates saturate at 1: only the shuffle is left
    assert paper(x)[0, :, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0]
    assert torch.equal(ShuffleAttention(8, groups=2, init="identity")(x), x)


# --------------------------------------------------------------------------------------- sites that do not fit


@pytest.mark.parametrize("fits, args, expected", [
    (ema_fits, (48, None), ("48 channels are not divisible by factor=32", {"factor": 24})),
    (ema_fits, (16, (80, 80)), ("16 channels are not divisible by factor=32", {"factor": 16})),
    (ema_fits, (64, (1, 1)), ("a 1x1 site leaves GroupNorm one value per channel to normalise", {})),
    (sa_fits, (16, None), ("16 channels are not divisible by 2*groups=128", {"groups": 8})),
    (sa_fits, (64, None), ("64 channels are not divisible by 2*groups=128", {"groups": 32})),
    (sa_fits, (7, None), ("7 channels are not divisible by 2*groups=128", {})),
    (scsa_fits, (30, None), ("30 channels are not divisible by 4 (SCSA's four kernel groups)", {})),
    (scsa_fits, (4, (1, 20)), ("a 1x20 site gives a 1-long strip: GroupNorm(4, 4) would normalise single values",
                               {})),
])
def test_misfits_name_the_numbers_and_the_option_that_fits(fits, args, expected) -> None:
    misfit = fits(*args)
    assert (misfit.reason, dict(misfit.fix)) == expected
    assert fits(args[0], args[1], **misfit.fix) is None if misfit.fix else True
    assert scsa_fits(64, (7, 7)) is None and scsa_fits(64, (6, 20)) is None  # its window is clipped to small maps
    assert get_block("scsa").misfit(60, None, {"head_num": 8}).fix == {"head_num": 6}


def test_a_block_that_does_not_fit_is_refused_with_one_line_before_the_model_is_touched() -> None:
    model = torchvision.models.resnet18()
    before = copy.deepcopy(model.state_dict())
    cases = [
        ("sa", {}, "layer1.0: 'sa' does not fit 64 channels at 16x16: 64 channels are not divisible by "
                   "2*groups=128; --set groups=32 fits (and 1 more site)"),
        ("ema", {"factor": 48}, "layer1.0: 'ema' does not fit 64 channels at 16x16: 64 channels are not divisible "
                                "by factor=48; --set factor=32 fits (and 7 more sites)"),
        ("scsa", {"head_num": 3}, "layer1.0: 'scsa' does not fit 64 channels at 16x16: 64 channels are not "
                                  "divisible by head_num=3; --set head_num=2 fits (and 7 more sites)"),
    ]
    for block, args, message in cases:
        for dry_run in (True, False):
            with pytest.raises(BlockError) as error:
                run_surgery(model, [insert_rule(block, args=args)], input_shape=(1, 3, 64, 64), dry_run=dry_run)
            assert str(error.value) == message
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    with pytest.raises(BlockError, match=r"30 channels are not divisible by 4 \(SCSA's four kernel groups\) "
                                         r"\(no option fits\)"):
        create_block("scsa", 30)


# ------------------------------------------------------------------------------------------- ONNX, dynamic H, W


@pytest.mark.parametrize("name, args, dynamo", [("ema", {"factor": 8}, False), ("scsa", {"window_size": -1}, False),
                                                ("scsa", {}, True), ("mlca", {}, False)])
def test_ported_ops_export_with_dynamic_batch_and_size(name: str, args: dict, dynamo: bool) -> None:
    """The ops that replace EMA's and MLCA's adaptive pools and SCSA's shape-baked rearrange keep sizes dynamic.

    SCSA's clipped 7x7 pool cuts its input to whole windows, a size the TorchScript exporter bakes in (as SCConv's):
    its windows are exported by the dynamo exporter, which ``export="dynamic"`` refers to.
    """
    ort = pytest.importorskip("onnxruntime")
    block = _randomize(create_block(name, 32, init="paper", **args))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch, height, width = (torch.export.Dim(axis, min=2) for axis in ("n", "h", "w"))
            torch.onnx.export(block, (torch.randn(2, 32, 16, 16),), buffer, dynamo=True, input_names=["x"],
                              dynamic_shapes={"x": {0: batch, 2: height, 3: width}})
        else:
            torch.onnx.export(block, (torch.randn(1, 32, 16, 16),), buffer, opset_version=17, dynamo=False,
                              input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(2, 32, 23, 17), (3, 32, 9, 12), (2, 32, 3, 5)]:
        x = torch.randn(shape)
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), block(x), rtol=1e-4, atol=1e-5)


def test_sites_marks_which_sites_a_block_fits() -> None:
    def fits(*settings: str) -> dict[str, str]:
        result = run_cli("sites", "torchvision:resnet18", "--kind", "block", "--input-shape",
                         "1,3,64,64", "--block", "sa", *settings, "--json")
        assert result.exit_code == 0, result.output
        return {site["name"]: site["fits"] for site in json.loads(result.stdout)["sites"]}

    marks = fits()
    assert marks["layer1.0"] == "no: 64 channels are not divisible by 2*groups=128; --set groups=32 fits"
    assert marks["layer2.0"] == "yes"
    assert set(fits("--set", "groups=32").values()) == {"yes"}


def test_the_proposed_option_fits_every_site_of_the_rule() -> None:
    """YOLOv8n-like widths 64, 32, 16: SA's proposal for the first site (groups=32) would not fit the others."""

    class Narrowing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 32, 3, padding=1), \
                nn.Conv2d(32, 16, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.b(self.a(x)))

    with pytest.raises(BlockError) as error:
        run_surgery(Narrowing(), [insert_rule("sa", after="conv")], input_shape=(1, 3, 8, 8), dry_run=True)
    assert str(error.value) == ("a: 'sa' does not fit 64 channels at 8x8: 64 channels are not divisible by "
                                "2*groups=128; --set groups=8 fits (and 2 more sites)")
