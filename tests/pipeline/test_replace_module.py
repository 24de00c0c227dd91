"""A block put in place of a model's own attention module, selected by class (issue 17).

torchvision's ``SqueezeExcitation`` (MobileNetV3, EfficientNet, RegNet), timm's ``SEModule``, ``EffectiveSEModule`` and
``EcaModule``, and Ultralytics' ``CBAM``: the block is built for the replaced module's channels, takes its name, and
every other key stays bit-identical; the replaced module's keys are reported as removed in the verification and the
recipe, and replaying the recipe (``surgeon.apply``, ``surgeon.load``) rebuilds the same model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import surgeon
from surgeon.blocks import create_block
from surgeon.errors import BlockError, RewriteError, SelectorError
from surgeon.pipeline import insert_rule, run_surgery, swap_rule
from surgeon.report import surgery_summary
from tests._util import build, run_cli

SHAPE = (1, 3, 64, 64)

CASES = [
    # spec, class replaced, modules of that class, block
    ("torchvision:mobilenet_v3_small", "SqueezeExcitation", 9, "mlca"),
    ("torchvision:efficientnet_b0", "SqueezeExcitation", 16, "eca"),
    ("torchvision:regnet_y_400mf", "SqueezeExcitation", 16, "mlca"),
    ("timm:seresnet18", "SEModule", 8, "eca"),
    ("timm:ese_vovnet19b_dw", "EffectiveSEModule", 4, "mlca"),
    ("timm:ecaresnet26t", "EcaModule", 8, "ela"),
]


def _channels(model: nn.Module, module: nn.Module) -> int:
    """The channels of a replaced attention module, read from its own first 1x1 conv (SE, CBAM), else from the input
    it is called with (ECA's Conv1d does not tell): independent of how the surgery measures them."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.kernel_size == (1, 1):
            return layer.in_channels
    seen: list[int] = []
    hook = module.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        model.eval()(torch.randn(SHAPE))
    hook.remove()
    return seen[0]


def _check_replaced(original: nn.Module, patched: nn.Module, cls: str, count: int, block: str,
                    **args: object) -> list[str]:
    """Every module of class ``cls`` became ``block`` for its channels; every other key is bit-identical. Returns
    the replaced modules' keys: gone, though a block may hold a key of the same name (ELA's ``conv.weight`` where
    timm's EcaModule had its own)."""
    replaced = {name: module for name, module in original.named_modules() if type(module).__name__ == cls}
    assert len(replaced) == count
    before, after = original.state_dict(), patched.state_dict()
    removed = sorted(key for key in before if any(key.startswith(name + ".") for name in replaced))
    assert removed
    for key in before:
        if key not in removed:
            assert torch.equal(before[key], after[key]), key
    for name, module in replaced.items():
        new = patched.get_submodule(name)
        assert type(new).__name__ != cls
        reference = create_block(block, _channels(original, module), init="paper", **args)
        assert type(new) is type(reference)
        assert {k: v.shape for k, v in new.state_dict().items()} == {k: v.shape for k, v in
                                                                     reference.state_dict().items()}
    return removed


@pytest.mark.parametrize("spec, cls, count, block", CASES, ids=[case[0] for case in CASES])
def test_block_replaces_the_models_attention_module_by_class(spec: str, cls: str, count: int, block: str) -> None:
    original = build(spec)
    result = run_surgery(copy.deepcopy(original), [swap_rule(block, module=cls)], input_shape=SHAPE)
    patched = result.model.eval()
    removed = _check_replaced(original, patched, cls, count, block)
    assert result.verification.ok and result.verification.removed_by_swap == removed
    assert sorted(key for step in result.recipe.steps for key in step.removed_keys) == removed
    assert {step.op for step in result.recipe.steps} == {"replace"} and len(result.recipe.steps) == count
    assert surgery_summary(result, spec)["verification"]["removed_keys"] == removed

    replayed = surgeon.apply(build(spec), result.recipe).eval()  # replay on a fresh model: same keys, same function
    replayed.load_state_dict(patched.state_dict(), strict=True)
    x = torch.randn(2, *SHAPE[1:])
    with torch.no_grad():
        torch.testing.assert_close(replayed(x), patched(x), rtol=0, atol=0)


def test_saved_model_with_a_replaced_module_loads_from_the_file_alone(tmp_path: Path) -> None:
    spec = "torchvision:mobilenet_v3_small"
    model = run_surgery(build(spec), [swap_rule("mlca", module="SqueezeExcitation")], input_shape=SHAPE,
                        base=spec).model.eval()
    surgeon.save(model, tmp_path / "mlca.pt")
    loaded = surgeon.load(tmp_path / "mlca.pt").eval()
    x = torch.randn(1, *SHAPE[1:])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert surgeon.recipe_of(loaded).steps[0].removed_keys == [f"features.1.block.1.{name}" for name in
                                                               ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")]


def test_the_original_weights_load_into_the_patched_model_without_the_removed_keys() -> None:
    """A replaced module's keys can share names with the block's (EcaModule's ``conv.weight``, ELA's): drop the
    removed keys the recipe lists, then the original checkpoint loads with ``strict=False``, missing only the
    blocks' own keys."""
    original = build("timm:ecaresnet26t")
    patched = surgeon.swap(copy.deepcopy(original), "ela", module="EcaModule", input_shape=SHAPE)
    removed = {key for step in surgeon.recipe_of(patched).steps for key in step.removed_keys}
    state = {key: value for key, value in original.state_dict().items() if key not in removed}
    missing, unexpected = patched.load_state_dict(state, strict=False)
    assert not unexpected and missing and all(any(key.startswith(step.module + ".") for step in
                                                  surgeon.recipe_of(patched).steps) for key in missing)


class Routed(nn.Module):
    """Layers routed by their ``f`` (where the input comes from) and ``i`` (their index), as Ultralytics does."""

    def __init__(self) -> None:
        super().__init__()
        from ultralytics.nn.modules import CBAM, Conv

        self.model = nn.Sequential(Conv(3, 16, 3, 2), CBAM(16), Conv(16, 32, 3, 2), CBAM(32), Conv(32, 32, 1))
        for i, layer in enumerate(self.model):
            layer.f, layer.i = (-1 if i != 4 else 2), i  # the last layer reads the output of layer 2, not 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for layer in self.model:
            x = layer(x if layer.f == -1 else outputs[layer.f])
            outputs.append(x)
        return x


def test_ultralytics_cbam_is_replaced_and_the_routing_attributes_stay() -> None:
    pytest.importorskip("ultralytics")
    original = Routed().eval()
    patched = surgeon.swap(copy.deepcopy(original), "eca", module="CBAM", input_shape=SHAPE).eval()
    _check_replaced(original, patched, "CBAM", 2, "eca")
    assert [(layer.f, layer.i) for layer in patched.model] == [(-1, 0), (-1, 1), (-1, 2), (-1, 3), (2, 4)]
    replayed = surgeon.apply(Routed(), surgeon.recipe_of(patched)).eval()
    replayed.load_state_dict(patched.state_dict(), strict=True)
    x = torch.randn(2, *SHAPE[1:])
    with torch.no_grad():
        torch.testing.assert_close(replayed(x), patched(x), rtol=0, atol=0)


def test_rules_replace_a_module_by_class() -> None:
    rules = """
version: 1
rules:
  - match: {kind: module, class: SEModule}
    replace: {block: sa, args: {groups: 8}}
"""
    original = build("timm:seresnet18")
    patched = surgeon.apply(copy.deepcopy(original), rules, input_shape=SHAPE)
    _check_replaced(original, patched, "SEModule", 8, "sa", groups=8)


def test_what_cannot_be_replaced_is_refused_before_the_model_is_touched() -> None:
    model = build("torchvision:mobilenet_v3_small")
    keys = list(model.state_dict())
    with pytest.raises(BlockError, match=r"^'sk' is a swap block \(it replaces a conv unit\); a module is replaced"):
        swap_rule("sk", module="SqueezeExcitation")
    with pytest.raises(SelectorError, match=r"features\.0 \(Conv2dNormActivation\) maps 3 channels at 64x64 to 16 at "
                                            r"32x32; a block replaces only a module that keeps its input's shape"):
        run_surgery(model, [swap_rule("eca", module="Conv2dNormActivation")], input_shape=SHAPE)
    # SA's 64 groups do not fit MobileNetV3's 16-channel SE: one line, with the option that fits every site
    with pytest.raises(BlockError, match=r"^features\.1\.block\.1: 'sa' does not fit 16 channels at 16x16: .*"
                                         r"--set groups=\d+"):
        run_surgery(model, [swap_rule("sa", module="SqueezeExcitation")], input_shape=SHAPE)
    assert list(model.state_dict()) == keys and type(model.features[1].block[1]).__name__ == "SqueezeExcitation"


def test_a_block_inside_a_module_being_replaced_is_refused() -> None:
    model = build("torchvision:mobilenet_v3_small")
    rules = [swap_rule("mlca", module="SqueezeExcitation"),
             insert_rule("eca", "re:features\\.1\\.block\\.1\\.fc1", "after")]
    with pytest.raises(RewriteError, match=r"^features\.1\.block\.1: it is replaced by 'mlca', and another rule puts "
                                           r"a block inside it \(features\.1\.block\.1\)"):
        run_surgery(model, rules, input_shape=SHAPE)
    assert type(model.features[1].block[1]).__name__ == "SqueezeExcitation"


def test_cli_swap_module_reports_the_removed_keys(tmp_path: Path) -> None:
    out = tmp_path / "mbv3_mlca.pt"
    result = run_cli("swap", "torchvision:mobilenet_v3_small", "--module", "SqueezeExcitation",
                     "--with", "mlca", "--input-shape", "1,3,64,64", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert ("Removed 36 original keys with the replaced units and modules (e.g. features.1.block.1.fc1.bias); the "
            "recipe lists them under each step's removed_keys") in " ".join(result.stdout.split())
    assert surgeon.load(out).features[1].block[1].__class__.__name__ == "MixedLocalChannelAttention"
