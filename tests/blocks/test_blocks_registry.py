"""One contract for every registered block, and equivalence with timm's versions of SE, ECA, CBAM and CA."""

from __future__ import annotations

import io
import re
import warnings

import pytest
import torch
import torch.fx
from timm.layers import EcaModule, SEModule
from timm.layers.cbam import CbamModule
from timm.layers.coord_attn import CoordAttn

from surgeon.blocks import create_block, get_block, list_blocks
from surgeon.blocks.eca import eca_kernel_size
from surgeon.errors import BlockError

INSERTS = [info.name for info in list_blocks("insert")]
SWAPS = [info.name for info in list_blocks("swap")]


def build(name: str, channels: int, init: str = "paper", stride: int = 1,
          size: tuple[int, int] | None = None) -> torch.nn.Module:
    """The block with its defaults, or, where they do not fit the site, with the options its misfit proposes."""
    info = get_block(name)
    args = (channels,) if info.kind == "insert" else (channels, channels, stride)
    misfit = info.misfit(channels, size) if info.kind == "insert" else None
    return create_block(info, *args, init=init, **(misfit.fix if misfit else {})).eval()


def test_registry_holds_the_issue_blocks() -> None:
    expected = {"se", "eca", "cbam", "ca", "gc", "nonlocal", "danet_pam", "danet_cam", "ccnet", "bam", "simam",
                "triplet", "residual_attention", "mhsa", "scconv", "scbottleneck", "sk",
                "ema", "scsa", "mlca", "sa", "ela", "lska", "lsk", "cpca", "gam"}
    assert expected == set(INSERTS) | set(SWAPS)
    assert {"scconv", "scbottleneck", "sk"} == set(SWAPS)
    assert get_block("coord") is get_block("ca")


@pytest.mark.parametrize("name", INSERTS)
@pytest.mark.parametrize("channels", [1, 7, 64])
@pytest.mark.parametrize("size", [(1, 1), (5, 3)])
def test_insert_blocks_keep_shape_and_start_as_identity(name: str, channels: int, size: tuple[int, int]) -> None:
    info = get_block(name)
    misfit = info.misfit(channels, size)
    if misfit is not None and not misfit.fix:  # no option fits: the surgery refuses the site with a one-line reason
        assert misfit.reason and "\n" not in misfit.reason
        channel_misfit = info.misfit(channels)
        if channel_misfit is not None:  # the channels alone do not fit: the block cannot even be built
            with pytest.raises(BlockError, match=re.escape(channel_misfit.reason)):
                create_block(name, channels)
        return
    x = torch.randn(1, channels, *size)
    with torch.no_grad():
        assert build(name, channels, size=size)(x).shape == x.shape
        assert torch.equal(build(name, channels, init="identity", size=size)(x), x)


@pytest.mark.parametrize("name", INSERTS)
def test_identity_is_not_trivially_identity(name: str) -> None:
    """Moving every parameter away from its initial value makes the block act: the identity test can fail."""
    block = build(name, 16, init="identity", size=(6, 6))
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.5 + 0.5)
    assert list(block.parameters()), "identity mode needs a learnable parameter to leave the identity"
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        assert not torch.allclose(block(x), x)


@pytest.mark.parametrize("name", SWAPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_swap_blocks_keep_channels_and_stride(name: str, stride: int) -> None:
    x = torch.randn(1, 32, 9, 7)
    conv = torch.nn.Conv2d(32, 32, 3, stride, padding=1)
    with torch.no_grad():
        assert build(name, 32, stride=stride)(x).shape == conv(x).shape


@pytest.mark.parametrize("name", INSERTS + SWAPS)
def test_fx_trace_equals_eager(name: str) -> None:
    block = build(name, 32, size=(10, 8))
    traced = torch.fx.symbolic_trace(block)
    x = torch.randn(2, 32, 10, 8)
    with torch.no_grad():
        assert torch.equal(traced(x), block(x))


@pytest.mark.parametrize("name", INSERTS + SWAPS)
def test_compiles_without_graph_breaks(name: str) -> None:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(build(name, 32, size=(8, 8)))(torch.randn(2, 32, 8, 8))
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("name", INSERTS + SWAPS)
def test_onnx_export_runs_in_onnxruntime(name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    block = build(name, 16, size=(8, 8))
    x = torch.randn(1, 16, 8, 8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(block, (x,), buffer, opset_version=17, dynamo=False, input_names=["x"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), block(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", INSERTS + SWAPS)
def test_bf16_autocast_and_channels_last(name: str) -> None:
    block = build(name, 32, size=(8, 8))
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        reference = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = block(x)
        assert torch.isfinite(low).all()
        torch.testing.assert_close(low.float(), reference, rtol=0.1, atol=0.1)
        last = block.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(last, reference, rtol=1e-4, atol=1e-5)


# --- timm equivalence: copy weights across, show equal outputs or pin the documented difference ---------------------

def _close(ours: torch.nn.Module, theirs: torch.nn.Module, channels: int = 64) -> bool:
    x = torch.randn(2, channels, 9, 7)
    with torch.no_grad():
        return torch.allclose(ours.eval()(x), theirs.eval()(x), atol=1e-6)


def test_se_equals_timm_semodule_with_truncated_width() -> None:
    ours = build("se", 64)
    theirs = SEModule(64, rd_ratio=1 / 16, rd_divisor=1)
    theirs.load_state_dict(ours.state_dict())
    assert _close(ours, theirs)
    assert SEModule(40).fc1.out_channels == 8 and build("se", 40).fc1.out_channels == 2  # timm rounds up to 8


def test_eca_equals_timm_ecamodule_and_pins_the_small_channel_floor() -> None:
    ours = build("eca", 64)
    theirs = EcaModule(channels=64)
    theirs.load_state_dict(ours.state_dict())
    assert _close(ours, theirs)
    assert [eca_kernel_size(c) for c in (2, 256, 512, 1024, 2048)] == [1, 5, 5, 5, 7]
    assert EcaModule(channels=2).conv.kernel_size == (3,)  # timm floors the adaptive kernel at 3; the paper does not


def test_cbam_equals_timm_with_official_bias_and_timm_pool_order() -> None:
    ours = build("cbam", 64)
    theirs = CbamModule(64, mlp_bias=True)
    mapping = {
        "channel.fc1.weight": ours.channel_gate.fc1.weight[:, :, None, None],
        "channel.fc1.bias": ours.channel_gate.fc1.bias,
        "channel.fc2.weight": ours.channel_gate.fc2.weight[:, :, None, None],
        "channel.fc2.bias": ours.channel_gate.fc2.bias,
        "spatial.conv.conv.weight": ours.spatial_gate.conv.weight,
    }
    with torch.no_grad():
        ours.spatial_gate.bn.weight.fill_(1.3), ours.spatial_gate.bn.running_mean.fill_(0.2)
    for key, value in ours.spatial_gate.bn.state_dict().items():
        mapping[f"spatial.conv.bn.{key}"] = value
    theirs.load_state_dict(mapping)
    assert not _close(ours, theirs)  # official [max, mean] vs timm [mean, max]
    ours.spatial_gate.max_first = False
    assert _close(ours, theirs)
    assert CbamModule(64).channel.fc1.bias is None  # timm drops the official MLP bias by default


def test_coord_attention_equals_timm_coordattn_with_official_width_and_bias() -> None:
    ours = build("ca", 64)
    theirs = CoordAttn(64, rd_channels=ours.conv1.out_channels, bias=True)
    theirs.load_state_dict(ours.state_dict())
    assert ours.conv1.out_channels == 8  # mip = max(8, 64 // 32)
    assert _close(ours, theirs)
    assert CoordAttn(64).conv1.bias is None  # timm defaults to no conv bias; the official block has one
