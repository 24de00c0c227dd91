"""Unit tests of single stages, each on a small model of its own: ``sites``, ``verify``, ``recipe`` and ``codegen``.

The end-to-end tests run them together on real architectures; these pin each one's contract alone, so that a
change to one stage is caught where it is made.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.fx as fx
from torch import nn

from surgeon.codegen import (
    graph_source,
    is_patched,
    original_class,
    patch_class,
    patched_source,
    wrapped_blocks,
    wrapper_source,
)
from surgeon.errors import CheckpointError
from surgeon.recipe import Recipe, RecipeStep, attach_recipe, imported_blocks, recipe_of, unwrap
from surgeon.sites import find_sites
from surgeon.tensors import flatten_outputs, output_deviation, probe_input
from surgeon.verify import capture_reference, verify

SHAPE = (1, 3, 16, 16)


class Bottleneck(nn.Module):
    """A residual unit: conv → BN → ReLU → conv → BN, plus the input, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class TinyNet(nn.Module):
    """A stem, two stages of one residual unit each (the second at half the resolution), a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block1 = Bottleneck(8)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.block2 = Bottleneck(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = self.block2(self.down(self.block1(self.stem(x))))
        return self.head(features.mean((2, 3))), {"features": features}


@pytest.fixture
def model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


# --- sites ---------------------------------------------------------------------------------------------------------


def test_sites_finds_residual_units_convs_and_their_shapes(model: TinyNet) -> None:
    table = find_sites(model, SHAPE)
    sites = table.by_name()
    assert [site.name for site in table.of_kind("block")] == ["block1", "block2"]
    block1, block2 = sites["block1"], sites["block2"]
    assert (block1.stage, block1.index, block1.residual_channels, block1.out_size) == (1, 0, 8, (16, 16))
    assert (block2.stage, block2.index, block2.in_channels, block2.out_size) == (2, 0, 16, (8, 8))
    down = sites["down"]
    assert (down.kind, down.in_channels, down.out_channels, down.stride, down.kernel_size) == ("conv", 8, 16, 2,
                                                                                               (3, 3))
    assert [site.order for site in table.sites] == sorted(site.order for site in table.sites)
    assert table.input_shape == SHAPE and not table.untraceable


def test_sites_channels_and_size_at_each_position(model: TinyNet) -> None:
    down = find_sites(model, SHAPE).by_name()["down"]
    assert (down.channels_at("before"), down.size_at("before")) == (8, (16, 16))
    assert (down.channels_at("after"), down.size_at("after")) == (16, (8, 8))
    assert down.channels_at("residual") == 16  # a conv has no branch: the output's channels


def test_sites_leaves_the_model_as_it_was(model: TinyNet) -> None:
    model.block1.train()  # a mixed train/eval model must get every flag back
    before = copy.deepcopy(model.state_dict())
    table = find_sites(model, SHAPE)
    assert model.block1.training and not model.training and not model.block2.training
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert [tuple(t.shape) for t in table.probe_outputs] == [(1, 4), (1, 16, 8, 8)]


# --- verify --------------------------------------------------------------------------------------------------------


def _reference(model: nn.Module):
    return capture_reference(model, probe_input(SHAPE, model))


def test_verify_accepts_an_unchanged_model_and_an_added_key(model: TinyNet) -> None:
    reference = _reference(model)
    model.block1.extra = nn.Identity()
    model.register_buffer("added", torch.zeros(1))
    result = verify(model, reference)
    assert result.ok and result.added_keys == ["added"] and result.max_abs_diff == 0.0 == result.rel_diff


def test_verify_catches_a_lost_tensor(model: TinyNet) -> None:
    reference = _reference(model)
    model.block2.bn2 = nn.Identity()  # its weight, bias and statistics leave the state_dict
    result = verify(model, reference)
    assert not result.keys_preserved and not result.ok
    assert "block2.bn2.weight" in result.missing_keys and "block2.bn2.num_batches_tracked" in result.missing_keys


def test_verify_catches_a_changed_tensor_even_in_place(model: TinyNet) -> None:
    reference = _reference(model)
    with torch.no_grad():
        model.stem.weight[0, 0, 0, 0] += 1.0  # same storage, new value: the version counter tells
    model.block1.bn1.running_mean = torch.ones(8)  # a new tensor under the same key
    result = verify(model, reference)
    assert result.changed_keys == ["stem.weight", "block1.bn1.running_mean"] and not result.missing_keys


def test_verify_catches_a_changed_output(model: TinyNet) -> None:
    reference = _reference(model)
    model.block2.relu = nn.Sigmoid()  # another function, with every original tensor kept
    result = verify(model, reference)
    assert result.keys_preserved and result.forward_ok and result.max_abs_diff > 0.1 and result.rel_diff > 0


def test_verify_reports_a_failing_forward(model: TinyNet) -> None:
    reference = _reference(model)
    model.block2.conv1 = nn.Conv2d(4, 16, 3)  # no longer fits its input
    result = verify(model, reference)
    assert not result.forward_ok and result.error.startswith("RuntimeError")


def test_output_deviation_and_flattening() -> None:
    nested = (torch.ones(2), {"a": torch.zeros(1), "b": [torch.arange(3)]}, "not a tensor")
    assert [t.tolist() for t in flatten_outputs(nested)] == [[1.0, 1.0], [0.0], [0, 1, 2]]
    assert output_deviation([torch.ones(2)], [torch.full((2,), 1.5)]) == (0.5, 0.5)
    assert output_deviation([torch.ones(2)], [torch.ones(3)]) == (float("inf"), float("inf"))
    assert output_deviation([torch.arange(3)], [torch.tensor([0, 1, 3])])[0] == float("inf")


# --- recipe --------------------------------------------------------------------------------------------------------


def _recipe() -> Recipe:
    step = RecipeStep(site="layer1.0", kind="block", channels=64, op="insert", position="residual", block="eca",
                      args={"k_size": 3}, init="identity", module="layer1.0.eca_residual", rule="r1")
    return Recipe("torchvision:resnet18", (1, 3, 64, 64), [step], {"num_classes": 10})


def test_recipe_round_trips_as_plain_data() -> None:
    recipe = _recipe()
    data = recipe.to_dict()
    assert data["format"] == 1 and data["input_shape"] == [1, 3, 64, 64] and data["steps"][0]["args"] == {"k_size": 3}
    assert set(data["versions"]) == {"attn_surgeon", "torch"}
    again = Recipe.from_dict(pickle.loads(pickle.dumps(data)))
    assert again == recipe and again.to_dict() == data


@pytest.mark.parametrize("data, message", [
    ({"format": 2, "steps": []}, "not an attn-surgeon recipe"),
    ({"format": 1}, "not an attn-surgeon recipe"),
    ({"format": 1, "steps": [{"site": "x"}], "input_shape": [1, 3, 8, 8]}, "malformed attn-surgeon recipe"),
    ({"format": 1, "steps": [], "input_shape": ["a"]}, "malformed attn-surgeon recipe"),
])
def test_recipe_refuses_what_is_not_one(data: dict, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        Recipe.from_dict(data)


def test_recipe_extended_and_imported_blocks() -> None:
    first = _recipe()
    user = RecipeStep("layer2.0", "block", 128, "insert", "after", "pkg.mod:Gate", {}, "paper", "layer2.0.gate_after")
    both = first.extended(Recipe(None, (1, 3, 8, 8), [user]))
    assert [step.site for step in both.steps] == ["layer1.0", "layer2.0"]
    assert (both.base, both.input_shape, both.arch_args) == (first.base, first.input_shape, first.arch_args)
    assert imported_blocks(both) == ["pkg.mod:Gate"] and imported_blocks(first) == []


def test_recipe_travels_with_the_model_through_wrappers_and_copies(model: TinyNet) -> None:
    assert recipe_of(model) is None
    attach_recipe(model, _recipe())
    wrapped = nn.DataParallel(model)
    assert unwrap(wrapped) is model and recipe_of(wrapped) == _recipe()
    assert recipe_of(copy.deepcopy(model)) == _recipe() and recipe_of(pickle.loads(pickle.dumps(model))) == _recipe()


# --- codegen -------------------------------------------------------------------------------------------------------


def _scaled_graph(module: nn.Module) -> fx.Graph:
    """``module``'s graph with its output doubled: a stand-in for an edit the rewrite makes."""
    graph = fx.Tracer().trace(module)
    output = next(node for node in graph.nodes if node.op == "output")
    with graph.inserting_before(output):
        doubled = graph.call_function(torch.mul, (output.args[0], 2.0))
    output.replace_input_with(output.args[0], doubled)
    return graph


def test_codegen_binds_the_generated_forward_to_a_subclass_of_the_original(model: TinyNet) -> None:
    block = model.block1
    x = torch.randn(1, 8, 4, 4)
    expected = block(x) * 2.0
    keys = list(block.state_dict())
    source = graph_source([_scaled_graph(block)])
    patch_class(block, source)
    assert is_patched(block) and isinstance(block, Bottleneck) and original_class(block) is Bottleneck
    assert type(block).__name__ == "Bottleneck" and patched_source(block) == source
    assert torch.equal(block(x), expected) and list(block.state_dict()) == keys
    assert "def forward(self, x)" in source and source.startswith("# Generated by attn-surgeon")


def test_codegen_patched_modules_copy_and_pickle_without_code_objects(model: TinyNet) -> None:
    patch_class(model.block1, graph_source([_scaled_graph(model.block1)]))
    x = probe_input(SHAPE)
    expected = model(x)[0]
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert is_patched(clone.block1) and torch.equal(clone(x)[0], expected)
    assert type(copy.deepcopy(model).block1) is type(model.block1)  # one class per (original, source)


def test_codegen_two_graphs_dispatch_on_the_training_flag() -> None:
    conv = nn.Sequential(nn.Conv2d(2, 2, 1))
    patch_class(conv, graph_source([fx.Tracer().trace(conv), _scaled_graph(conv)]))  # [train, eval]
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        train_out, eval_out = conv.train()(x), conv.eval()(x)
    assert "if self.training:" in patched_source(conv) and torch.allclose(eval_out, 2 * train_out)


def test_codegen_wrapper_applies_blocks_around_the_original_forward(model: TinyNet) -> None:
    block = model.block1
    block.gain_before, block.gain_after = nn.Identity(), nn.Hardtanh(0.0, 0.5)
    source = wrapper_source(["gain_before"], ["gain_after"])
    patch_class(block, source)
    assert wrapped_blocks(block) == (["gain_before"], ["gain_after"])
    with torch.no_grad():
        assert float(block(torch.randn(1, 8, 4, 4)).max()) <= 0.5
    assert wrapped_blocks(model.block2) == ([], [])


# --- the block contract, declared in the registry -------------------------------------------------------------------


def test_the_registry_declares_what_the_surgery_needs_to_know() -> None:
    from surgeon.blocks import SCBottleneckStem, SqueezeExcite, get_block, is_builtin_block

    sk, scb, mhsa, se = (get_block(name) for name in ("sk", "scbottleneck", "mhsa", "se"))
    assert (sk.units, sk.replaces_activation, sk.site_args) == (1, True, ("groups",))
    assert (scb.units, scb.replaces_activation) == (2, True) and mhsa.site_args == ("feat_size",)
    assert se.builtin and not get_block("tests.fixtures.user_blocks:ScaledIdentity").builtin
    assert is_builtin_block(SqueezeExcite(8)) and not is_builtin_block(nn.Identity())
    assert not is_builtin_block(SCBottleneckStem.__new__(type("Sub", (SCBottleneckStem,), {})))


def test_registration_refuses_an_incomplete_contract() -> None:
    from surgeon.blocks import register_block
    from surgeon.errors import BlockError

    class HalfSwap(nn.Module):
        replaces_activation = False

    with pytest.raises(BlockError, match="must be a class implementing SwapBlock; it lacks units, inherit_conv_weig"):
        register_block("test_half_swap", kind="swap")(HalfSwap)
    with pytest.raises(BlockError, match="unknown site argument 'stride'; valid: feat_size, groups"):
        register_block("test_stride", site_args=("stride",))
