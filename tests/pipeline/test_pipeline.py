"""The guarantees of a patched model, on real architectures (issue 2's must-show list)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from timm.models.resnet import Bottleneck as TimmBottleneck
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import Bottleneck

import surgeon
from surgeon.errors import BlockError, NoMatchError, SelectorError, TraceError
from tests._util import build, randomize_norm_stats

MODELS = {
    "torchvision:resnet50": Bottleneck,
    "timm:resnet50": TimmBottleneck,
    "torchvision:mobilenet_v2": InvertedResidual,
}
BLOCKS = ["se", "eca", "cbam", "ca"]


@pytest.fixture(scope="module")
def originals() -> dict[str, torch.nn.Module]:
    models = {}
    for spec in MODELS:
        model = build(spec)
        randomize_norm_stats(model)
        models[spec] = model
    return models


@pytest.mark.parametrize("spec", list(MODELS))
@pytest.mark.parametrize("block", BLOCKS)
def test_identity_insert_keeps_function_keys_and_classes(originals, spec: str, block: str) -> None:
    original = originals[spec]
    patched = copy.deepcopy(original)
    surgeon.insert(patched, block, after="bottleneck", input_shape=(1, 3, 96, 96))

    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (patched.eval()(x) - original(x)).abs().max().item() <= 1e-5

    before, after = original.state_dict(), patched.state_dict()
    for key, tensor in before.items():
        assert key in after, key
        assert torch.equal(after[key], tensor), key
    result = patched.load_state_dict(before, strict=False)
    new_keys = set(after) - set(before)
    # BatchNorm supplies a missing num_batches_tracked itself, so only those keys may be absent from missing_keys.
    assert new_keys and set(result.missing_keys) <= new_keys
    assert all(key.endswith("num_batches_tracked") for key in new_keys - set(result.missing_keys))
    assert result.unexpected_keys == []
    assert all(f".{block}_residual." in key for key in new_keys)

    assert type(patched) is type(original)
    site_cls = MODELS[spec]
    patched_sites = [m for m in patched.modules() if isinstance(m, site_cls) and hasattr(m, f"{block}_residual")]
    residual_units = [m for m in original.modules() if isinstance(m, site_cls)]
    expected = len(residual_units) if spec != "torchvision:mobilenet_v2" else 10  # 10 of 17 have a skip
    assert len(patched_sites) == expected


def test_se_paper_reproduces_se_resnet50_parameter_count() -> None:
    model = surgeon.insert(build("torchvision:resnet50"), "se", after="bottleneck", init="paper",
                           input_shape=(1, 3, 64, 64))
    assert sum(p.numel() for p in model.parameters()) == 28_088_024
    assert all(hasattr(model.get_submodule(f"layer{i}.{j}"), "se_residual")
               for i, n in enumerate([3, 4, 6, 3], start=1) for j in range(n))


def test_se_sits_on_residual_branch_before_addition() -> None:
    """The block sees bn3's output, and the skip is added after it (not the other way round)."""
    model = surgeon.insert(build("torchvision:resnet50"), "se", init="paper", input_shape=(1, 3, 64, 64))
    unit = model.layer1[0]
    seen = {}
    unit.bn3.register_forward_hook(lambda m, i, o: seen.__setitem__("bn3", o))
    unit.se_residual.register_forward_hook(lambda m, i, o: seen.__setitem__("se_in", i[0]))
    with torch.no_grad():
        unit(torch.randn(1, 64, 16, 16))
    assert torch.equal(seen["bn3"], seen["se_in"])


def test_train_mode_forward_equals_original_under_same_seed() -> None:
    """Stochastic depth and dropout still run in training after surgery (no frozen self.training)."""
    original = torchvision.models.efficientnet_b0(stochastic_depth_prob=0.5)
    patched = copy.deepcopy(original)
    surgeon.insert(patched, "eca", input_shape=(1, 3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    original.train(), patched.train()
    torch.manual_seed(123)
    expected = original(x)
    torch.manual_seed(123)
    got = patched(x)
    assert torch.allclose(got, expected, atol=1e-5)
    torch.manual_seed(124)
    assert not torch.allclose(patched(x), expected, atol=1e-5)  # training is stochastic: the check can fail


def test_timm_batchnormact_buffers_survive() -> None:
    """num_batches_tracked of timm's BatchNormAct2d stays (it vanishes if BatchNormAct2d is traced through)."""
    model = build("timm:efficientnet_b0")
    keys = set(model.state_dict())
    assert any(key.endswith("num_batches_tracked") for key in keys)
    surgeon.insert(model, "se", after="conv3x3", input_shape=(1, 3, 64, 64))
    assert keys <= set(model.state_dict())


def test_timm_methods_survive() -> None:
    model = build("timm:resnet50")
    surgeon.insert(model, "eca", input_shape=(1, 3, 64, 64))
    model.layer1[0].zero_init_last()
    assert torch.count_nonzero(model.layer1[0].bn3.weight) == 0
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape[1] == 2048


def test_ca_after_depthwise_unit_in_mobilenet_v2() -> None:
    """CA after each depthwise 3x3 + BN + ReLU6 unit, before the projection (official mbv2_ca placement)."""
    model = build("torchvision:mobilenet_v2")
    surgeon.insert(model, "ca", after="conv3x3", position="after", input_shape=(1, 3, 64, 64))
    block = model.features[2]
    assert isinstance(block, InvertedResidual)
    seen = {}
    block.conv[1][2].register_forward_hook(lambda m, i, o: seen.__setitem__("dw", o))  # ReLU6 ends the unit
    block.ca_after_conv_1_0.register_forward_hook(lambda m, i, o: seen.__setitem__("ca", (i[0], o)))
    block.conv[2].register_forward_hook(lambda m, i, o: seen.__setitem__("proj_in", i[0]))
    with torch.no_grad():
        block(torch.randn(1, 16, 16, 16))
    assert torch.equal(seen["dw"], seen["ca"][0])
    assert torch.equal(seen["ca"][1], seen["proj_in"])


def test_patched_model_deepcopies_and_pickles(tmp_path) -> None:
    model = surgeon.insert(build("torchvision:resnet18"), "cbam", input_shape=(1, 3, 64, 64)).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.save(model, tmp_path / "whole.pt")
    reloaded = torch.load(tmp_path / "whole.pt", weights_only=False).eval()
    clone = copy.deepcopy(model).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
        assert torch.equal(clone(x), model(x))
    assert isinstance(reloaded.layer1[0], torchvision.models.resnet.BasicBlock)


def test_save_load_roundtrip_is_exact_and_weights_only(tmp_path) -> None:
    model = build("torchvision:resnet18")
    result = surgeon.run_surgery(model, [surgeon.Rule(surgeon.Selector(kind="block"), "eca", init="paper")],
                                 input_shape=(1, 3, 64, 64), base="torchvision:resnet18")
    surgeon.save(result.model, tmp_path / "p.pt")
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    assert set(state) == set(model.state_dict())
    rebuilt = surgeon.load(tmp_path / "p.pt").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))


def test_apply_recipe_then_strict_load_inside_training_code(tmp_path) -> None:
    patched = surgeon.insert(build("torchvision:resnet18"), "se", input_shape=(1, 3, 64, 64))
    recipe = surgeon.recipe_of(patched)
    fresh = surgeon.apply(torchvision.models.resnet18(), recipe.to_dict())
    fresh.load_state_dict(patched.state_dict(), strict=True)


def test_stacking_a_second_surgery_keeps_both() -> None:
    model = build("torchvision:resnet18")
    surgeon.insert(model, "eca", input_shape=(1, 3, 64, 64))
    surgeon.insert(model, "eca", input_shape=(1, 3, 64, 64))
    assert hasattr(model.layer1[0], "eca_residual") and hasattr(model.layer1[0], "eca_residual_1")
    recipe = surgeon.recipe_of(model)
    assert len(recipe.steps) == 16
    fresh = surgeon.apply(torchvision.models.resnet18(), recipe)
    fresh.load_state_dict(model.state_dict(), strict=True)


def test_failed_surgery_leaves_model_untouched() -> None:
    model = build("torchvision:resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    classes = [type(m) for m in model.modules()]
    with pytest.raises(BlockError):
        surgeon.insert(model, "eca", input_shape=(1, 3, 64, 64), k_size=4)
    with pytest.raises(NoMatchError, match="run `attn-surgeon sites MODEL`"):
        surgeon.insert(model, "eca", after="NoSuchClass", input_shape=(1, 3, 64, 64))
    with pytest.raises(SelectorError):
        surgeon.insert(model, "eca", after="bad site!", input_shape=(1, 3, 64, 64))
    assert [type(m) for m in model.modules()] == classes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(before) == set(model.state_dict())


def test_untraceable_module_still_takes_after_and_before() -> None:
    class Untraceable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace this
                return self.conv(x)
            return -self.conv(x)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.body = Untraceable()
            self.f = 3  # a plain attribute (Ultralytics routes by these): must survive

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(self.stem(x))

    net = Net().eval()
    reference = copy.deepcopy(net)
    surgeon.insert(net, "se", after="Untraceable", position="after", input_shape=(1, 3, 16, 16))
    surgeon.insert(net, "eca", after="Untraceable", position="before", input_shape=(1, 3, 16, 16))
    assert isinstance(net.body, Untraceable) and net.f == 3
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))
    assert hasattr(net.body, "se_after") and hasattr(net.body, "eca_before")
    clone = copy.deepcopy(net)
    with torch.no_grad():
        assert torch.equal(clone(x), net(x))


def test_channels_last_modules_are_not_offered_as_sites() -> None:
    """Swin's blocks output (N, H, W, C): a 4-D tensor that is not an NCHW feature map is no site."""
    table = surgeon.sites(torchvision.models.swin_t(), (1, 3, 64, 64))
    assert not table.of_kind("module") and not table.of_kind("block")
    with pytest.raises(NoMatchError, match="no residual units with convolutions"):
        surgeon.insert(torchvision.models.swin_t(), "eca", input_shape=(1, 3, 64, 64))


def test_a_conv_in_a_sequential_model_says_which_site_works_instead() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(TraceError, match=r"^0: every module around it is a container .* --after ReLU .* "
                                         r"--after 're:\^2\$'$"):
        surgeon.insert(model, "eca", after="conv3x3", input_shape=(1, 3, 16, 16))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    surgeon.insert(model, "eca", after="re:^2$", input_shape=(1, 3, 16, 16))  # the suggestion works
    assert [k for k in model.state_dict() if k not in before] == ["2.eca_after.conv.weight",
                                                                  "2.eca_after.identity_gate.gamma"]
