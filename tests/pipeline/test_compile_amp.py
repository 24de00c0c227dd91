"""Patched models under torch.compile, autocast and channels_last (issue 7).

The blocks are inserted with ``init="paper"`` wherever numbers are compared, so that every block changes the
function and takes part in the gradients (an identity-initialised gate would hide a wrong block behind ``x * 1``).
Inductor compiles take minutes on two CPU cores, so the default run compiles with ``aot_eager`` (Dynamo's capture
plus AOTAutograd's joint forward/backward graph, no code generation) and leaves Inductor to the slow tests.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import surgeon
from surgeon.match import Rule, parse_site_spec
from tests._util import build, randomize_norm_stats

BLOCK_PER_STAGE = ("eca", "se", "cbam", "ca")
BLOCK_CLASSES = {"EfficientChannelAttention", "SqueezeExcite", "CBAM", "CoordAttention"}
SHAPE = (2, 3, 64, 64)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Several processes share two cores in CI; oversubscribed intra-op threads make every conv many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def patched_model(spec: str, init: str = "paper") -> nn.Module:
    """``spec`` with ECA in stage 1, SE in stage 2, CBAM in stage 3 and Coordinate Attention in stage 4."""
    model = build(spec)
    randomize_norm_stats(model)
    rules = [Rule(parse_site_spec("bottleneck", stage=str(stage)), block, "insert", None, {}, init, name=block)
             for stage, block in enumerate(BLOCK_PER_STAGE, start=1)]
    surgeon.run_surgery(model, rules, input_shape=(1, *SHAPE[1:]))
    assert {type(m).__name__ for m in model.modules()} >= BLOCK_CLASSES
    return model.eval()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return patched_model("torchvision:resnet18")


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.float() - reference.float()).norm() / reference.float().norm()).item()


def forward_backward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.float().square().mean().backward()
    module = getattr(model, "_orig_mod", model)  # a compiled model's names carry an "_orig_mod." prefix
    return out.detach(), {name: p.grad for name, p in module.named_parameters()}


def flat(grads: dict[str, torch.Tensor], keep=lambda name: True) -> torch.Tensor:
    return torch.cat([grad.float().flatten() for name, grad in grads.items() if keep(name)])


def is_inserted(name: str) -> bool:
    return any(f".{block}_residual." in name for block in BLOCK_PER_STAGE)


# --- torch.compile ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    "torchvision:resnet18",
    pytest.param("torchvision:resnet50", marks=pytest.mark.slow),
    pytest.param("timm:resnet50", marks=pytest.mark.slow),
])
def test_patched_resnet_compiles_as_one_graph(spec: str) -> None:
    model = patched_model(spec)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(torch.randn(SHAPE))
    assert explanation.graph_break_count == 0, [str(reason.reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_compiled_forward_and_backward_equal_eager(resnet18: nn.Module) -> None:
    x = torch.randn(SHAPE)
    eager, compiled = copy.deepcopy(resnet18).train(), copy.deepcopy(resnet18).train()
    torch._dynamo.reset()
    # fullgraph=True turns any graph break into an error, here in train mode (explain above runs in eval mode).
    compiled_fn = torch.compile(compiled, backend="aot_eager", fullgraph=True)
    out, grads = forward_backward(eager, x)
    compiled_out, compiled_grads = forward_backward(compiled_fn, x)
    torch.testing.assert_close(compiled_out, out, rtol=1e-4, atol=1e-5)
    assert compiled_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-3, atol=1e-6, msg=name)
    # Running statistics were updated alike, and eval mode (a recompile: the forward reads self.training) agrees.
    torch.testing.assert_close(compiled.state_dict(), eager.state_dict(), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(compiled_fn.eval()(x), eager.eval()(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["torchvision:resnet18", "torchvision:resnet50", "timm:resnet50"])
def test_inductor_forward_and_backward_close_to_float64(spec: str) -> None:
    """Inductor reorders reductions, and backward through train-mode BatchNorm over 2x2 maps is ill-conditioned:
    on ResNet-50 here the *unpatched* model's eager float32 gradients are already 1.2% off float64 (Inductor's:
    0.5%), and the patched model's Inductor gradients 0.35%. So both are held to a float64 eager reference."""
    model = patched_model(spec).train()
    x = torch.randn(SHAPE)
    ref_out, ref_grads = forward_backward(copy.deepcopy(model).double(), x.double())
    torch._dynamo.reset()
    out, grads = forward_backward(torch.compile(model, fullgraph=True), x)
    assert relative_error(out, ref_out) < 1e-4
    assert relative_error(flat(grads), flat(ref_grads)) < 2e-2
    assert relative_error(flat(grads, is_inserted), flat(ref_grads, is_inserted)) < 2e-2


class DropResidual(nn.Module):
    """A residual unit whose own forward reads ``self.training``: patched, it dispatches between two graphs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(F.dropout(out, 0.1, self.training) + x)


class SplitConcat(nn.Module):
    """YOLO's C2f pattern: a list built by iterating a tensor, which torch.fx cannot trace (Dynamo can)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cv1 = nn.Conv2d(channels, channels, 1)
        self.m = nn.ModuleList(nn.Conv2d(channels // 2, channels // 2, 3, padding=1) for _ in range(2))
        self.cv2 = nn.Conv2d(channels * 2, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.unit = DropResidual(8)
        self.split = SplitConcat(8)
        self.head = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.split(self.unit(self.stem(x))))


def test_every_kind_of_generated_forward_compiles_without_breaks() -> None:
    model = Net()
    rules = [Rule(parse_site_spec("DropResidual"), "eca", "insert", "residual", {}, "paper", name="dual"),
             Rule(parse_site_spec("SplitConcat"), "se", "insert", "after", {}, "paper", name="wrapper"),
             Rule(parse_site_spec("re:head"), "cbam", "insert", "after", {}, "paper", name="conv unit")]
    result = surgeon.run_surgery(model, rules, input_shape=(1, 3, 16, 16))
    assert {item.mode for item in result.rewrite.inserted} == {"graph", "graph-dual", "wrapper"}
    x = torch.randn(2, 3, 16, 16)
    for training in (True, False):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(model.train(training))(x)
        assert explanation.graph_break_count == 0, [str(reason.reason) for reason in explanation.break_reasons]
    torch._dynamo.reset()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="aot_eager", fullgraph=True)(x), model(x))


# --- autocast and channels_last ----------------------------------------------------------------------------------


def run_variant(model: nn.Module, x: torch.Tensor, *, train: bool, amp: bool = False, channels_last: bool = False,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forward and backward of a copy of ``model``; also returns each inserted block's output."""
    model = copy.deepcopy(model).train(train)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    outputs: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if type(module).__name__ in BLOCK_CLASSES:
            module.register_forward_hook(lambda m, args, out, name=name: outputs.__setitem__(name, out))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out, grads = forward_backward(model, x)
    return out, grads, outputs


def assert_finite(out: torch.Tensor, grads: dict[str, torch.Tensor]) -> None:
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(grad).all() for grad in grads.values()), [n for n, g in grads.items()
                                                                        if not torch.isfinite(g).all()]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bf16_autocast_eval_close_to_float32(resnet18: nn.Module, channels_last: bool) -> None:
    x = torch.randn(4, 3, 64, 64)
    ref, ref_grads, _ = run_variant(resnet18, x, train=False)
    out, grads, blocks = run_variant(resnet18, x, train=False, amp=True, channels_last=channels_last)
    assert_finite(out, grads)
    # The blocks compute in bfloat16 like the convolutions around them: no silent upcast of the activations.
    assert out.dtype == torch.bfloat16 and {o.dtype for o in blocks.values()} == {torch.bfloat16}
    # bfloat16 keeps 8 bits of mantissa: measured 0.6% on the output and 3% on the gradients.
    assert relative_error(out, ref) < 0.02
    assert relative_error(flat(grads), flat(ref_grads)) < 0.1
    assert relative_error(flat(grads, is_inserted), flat(ref_grads, is_inserted)) < 0.1


def test_bf16_autocast_train_no_worse_than_the_unpatched_model(resnet18: nn.Module) -> None:
    """In train mode batch statistics of tiny 2x2 maps amplify rounding: even the plain ResNet-18's gradients are
    ~40% off in bfloat16 here, so the patched model is held to the plain model's own error."""
    x = torch.randn(4, 3, 64, 64)
    plain = build("torchvision:resnet18")
    randomize_norm_stats(plain)
    errors = {}
    for label, model in (("plain", plain), ("patched", resnet18)):
        ref, ref_grads, _ = run_variant(model, x, train=True)
        out, grads, _ = run_variant(model, x, train=True, amp=True)
        assert_finite(out, grads)
        errors[label] = relative_error(out, ref), relative_error(flat(grads), flat(ref_grads))
    assert errors["patched"][0] < 1.5 * errors["plain"][0], errors
    assert errors["patched"][1] < 1.5 * errors["plain"][1], errors


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_channels_last_equals_contiguous_and_stays_channels_last(resnet18: nn.Module, train: bool) -> None:
    x = torch.randn(4, 3, 64, 64)
    ref, ref_grads, _ = run_variant(resnet18, x, train=train)
    out, grads, blocks = run_variant(resnet18, x, train=train, channels_last=True)
    assert_finite(out, grads)
    assert relative_error(out, ref) < 1e-4
    assert relative_error(flat(grads), flat(ref_grads)) < 1e-3
    # A block that returned a contiguous tensor would cost a layout conversion at the next convolution.
    assert blocks and all(o.is_contiguous(memory_format=torch.channels_last) for o in blocks.values())


def test_identity_insertion_is_exact_under_autocast_and_channels_last() -> None:
    plain = build("torchvision:resnet18")
    randomize_norm_stats(plain)
    patched = patched_model("torchvision:resnet18", init="identity")
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = plain.to(memory_format=torch.channels_last)(x)
        assert torch.equal(patched.to(memory_format=torch.channels_last)(x), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 autocast needs CUDA")
def test_fp16_autocast_on_cuda_close_to_float32(resnet18: nn.Module) -> None:
    x = torch.randn(4, 3, 64, 64, device="cuda")
    model = copy.deepcopy(resnet18).cuda()
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # a float32 reference, not TensorFloat-32
    try:
        ref, ref_grads = forward_backward(model, x)
        with torch.autocast("cuda", dtype=torch.float16):
            out, grads = forward_backward(model, x)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert_finite(out, grads)
    assert out.dtype == torch.float16
    assert relative_error(out, ref) < 0.01
    assert relative_error(flat(grads), flat(ref_grads)) < 0.05
    assert relative_error(flat(grads, is_inserted), flat(ref_grads, is_inserted)) < 0.05
