"""The framework adapter contract: a framework is one FrameworkAdapter class, registered in one registry.

A toy framework, defined here and registered only inside each test, shows that adding a framework is writing one
class: its specs build, its model directories are recognised and read (without side effects), a patched model of
it is written in its own layout and rebuilt from it, all through the public API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

import surgeon
from surgeon.errors import CheckpointError, ModelLoadError, TrainerError
from surgeon.io import (
    FrameworkAdapter,
    Layout,
    LoadedModel,
    LoadOptions,
    SaveResult,
    adapter_named,
    atomic_write,
    build_arch,
    default_output,
    read_checkpoint,
    read_model,
    register,
    registered,
    save_model,
)
from surgeon.recipe import Recipe, recipe_of

SHAPE = (1, 3, 32, 32)


class ToyNet(nn.Module):
    """A toy framework's model: two residual conv blocks of ``width`` channels."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(*(ToyBlock(width) for _ in range(2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


class ToyBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.bn(self.conv(x)))


class ToyAdapter(FrameworkAdapter):
    """``toy:tiny`` / ``toy:small`` specs; a model directory is ``toy.json`` (width, recipe) beside ``weights.pt``."""

    name = "toy"
    writes_directory = True
    widths: ClassVar[dict[str, int]] = {"tiny": 8, "small": 16}

    def build(self, name: str, **arch_args: Any) -> nn.Module:
        if name not in self.widths:
            raise ModelLoadError(f"toy has no model {name!r}")
        return ToyNet(self.widths[name])

    def owns(self, model: nn.Module) -> bool:
        return isinstance(model, ToyNet)

    def is_model_directory(self, path: Path) -> bool:
        return (path / "toy.json").is_file() and (path / "weights.pt").is_file()

    def read_directory(self, path: Path, options: LoadOptions) -> LoadedModel:
        config = json.loads((path / "toy.json").read_text())
        recipe = Recipe.from_dict(config["recipe"]) if "recipe" in config else None
        name = next(name for name, width in self.widths.items() if width == config["width"])
        return LoadedModel(ToyNet(config["width"]), f"toy:{name}", {}, Layout(framework=self.name, source=path), path,
                           recipe, state=read_checkpoint(path / "weights.pt"))

    def native_layout(self, model: nn.Module) -> Layout | None:
        return Layout(framework=self.name) if self.owns(model) else None

    def write(self, model: nn.Module, path: Path, recipe: Recipe, layout: Layout, *, force: bool = False,
              protect: tuple[Path, ...] = ()) -> SaveResult:
        path.mkdir(exist_ok=force)
        atomic_write(path / "weights.pt", lambda file: torch.save(model.state_dict(), file), force=force)
        config = {"width": model.width, "recipe": recipe.to_dict()}
        atomic_write(path / "toy.json", lambda file: file.write(json.dumps(config, default=str).encode()), force=force)
        return SaveResult(notes=["written as a toy model directory"])


@pytest.fixture
def toy() -> Iterator[ToyAdapter]:
    with registered(ToyAdapter()) as adapter:
        yield adapter
    assert adapter_named("toy") is None  # scoped: gone once the test ends


def test_a_toy_framework_builds_writes_and_reads_through_the_public_api(toy: ToyAdapter, tmp_path: Path) -> None:
    model = build_arch("toy:tiny")
    assert isinstance(model, ToyNet) and read_model("toy:tiny").layout.framework == "toy"
    assert default_output("toy:tiny", "eca") == Path("tiny_eca")  # a directory: no file suffix

    surgeon.insert(model, "eca", input_shape=SHAPE)
    out = tmp_path / "tiny_eca"
    surgeon.save(model, out)
    assert sorted(p.name for p in out.iterdir()) == ["toy.json", "weights.pt"]

    read = read_model(out)  # the base model, the recipe and the weights to load: nothing replayed
    assert read.recipe is not None and recipe_of(read.module) is None and read.state is not None
    assert set(read.state) == set(model.state_dict()) and set(read.module.state_dict()) < set(read.state)

    rebuilt = surgeon.load(out)  # the pipeline replays the recipe and loads the weights
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model.eval()(x))
    assert recipe_of(rebuilt) is not None


def test_a_native_layout_refuses_a_checkpoint_format(toy: ToyAdapter, tmp_path: Path) -> None:
    model = surgeon.insert(build_arch("toy:tiny"), "eca", input_shape=SHAPE)
    with pytest.raises(CheckpointError, match="saved in that framework's own layout; --format pt does not apply"):
        save_model(model, tmp_path / "out", recipe_of(model), fmt="pt")


def test_an_unregistered_framework_is_forgotten() -> None:
    with registered(ToyAdapter()):
        assert isinstance(build_arch("toy:small"), ToyNet)
    with pytest.raises(ModelLoadError, match="cannot import 'toy:small'"):
        build_arch("toy:small")


def test_the_registry_holds_adapters_only_one_per_name(toy: ToyAdapter) -> None:
    with pytest.raises(TypeError, match="holds FrameworkAdapter instances, not function"):
        register(lambda name: nn.Identity())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a framework named 'toy' is registered already"):
        register(ToyAdapter())
    with pytest.raises(TypeError, match="abstract"):
        FrameworkAdapter()  # type: ignore[abstract]


def test_a_framework_without_a_trainer_says_so(toy: ToyAdapter, tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match="toy has no trainer attn-surgeon can run"):
        toy.train(build_arch("toy:tiny"), seed=0, workdir=tmp_path, args={}, metric="top1")


def test_the_built_in_libraries_are_adapters_too() -> None:
    names = [adapter.name for adapter in surgeon.io.adapters()]
    assert names[:2] == ["torchvision", "timm"] and {"ultralytics", "transformers"} <= set(names)
    assert all(isinstance(adapter, FrameworkAdapter) for adapter in surgeon.io.adapters())


def test_saving_writes_a_pickled_ema_copy_as_it_is(tmp_path: Path) -> None:
    """Saving never patches: the pipeline gives a pickled EMA copy its blocks after surgery, save only writes it."""
    model, ema = build_arch("torchvision:resnet18"), build_arch("torchvision:resnet18")
    original_keys = list(ema.state_dict())
    surgeon.insert(model, "eca", input_shape=SHAPE)
    layout = Layout("container", key="model", extras={"ema": ema}, pickled=True, siblings={"ema": ""})
    save_model(model, tmp_path / "out.pt", recipe_of(model), layout)
    saved = torch.load(tmp_path / "out.pt", weights_only=False)
    assert list(saved["ema"].state_dict()) == original_keys and recipe_of(saved["ema"]) is None
