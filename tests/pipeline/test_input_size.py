"""Models with their own input size: the default probe is the size a model declares, and a model that refuses the
probe batch is answered in one line naming the model, the shape, the model's own error and the shape to pass."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import torchvision
from torch import nn

import surgeon
from surgeon.errors import ModelForwardError
from surgeon.tensors import declared_input_shape, default_input_shape, probe_guard
from tests._util import run_cli as run
from tests.fixtures.sized_models import SizedNet, declared_sized_net

FIXTURES = "tests.fixtures.sized_models"


def _on_meta(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Built on the meta device: the declaration is all these tests read, and CaiT-M36 has 271M parameters."""
    def built() -> nn.Module:
        with torch.device("meta"):
            return build()
    return built


def _yolo(args: object = None) -> nn.Module:
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", verbose=False)
    if args is not None:
        model.args = args
    return model


DECLARED_CASES = [
    ("timm:cait_m36_384", _on_meta(lambda: timm.create_model("cait_m36_384")), (1, 3, 384, 384)),
    ("timm:botnet26t_256", _on_meta(lambda: timm.create_model("botnet26t_256")), (1, 3, 256, 256)),
    ("timm:resnet18", _on_meta(lambda: timm.create_model("resnet18")), (1, 3, 224, 224)),
    ("torchvision:inception_v3", _on_meta(lambda: torchvision.models.inception_v3(init_weights=False)),
     (1, 3, 299, 299)),
    ("torchvision:vit_b_16 at 384", _on_meta(lambda: torchvision.models.vit_b_16(image_size=384)), (1, 3, 384, 384)),
    ("torchvision:resnet18", _on_meta(torchvision.models.resnet18), None),
    ("yolov8n without training arguments", _yolo, (1, 3, 640, 640)),
    ("yolov8n with a checkpoint's arguments", lambda: _yolo({"imgsz": 320}), (1, 3, 320, 320)),
    ("yolov8n with a trainer's rectangular size", lambda: _yolo(SimpleNamespace(imgsz=[320, 480])), (1, 3, 320, 480)),
    ("a user's model", SizedNet, None),
    ("a user's model with a timm-style config", declared_sized_net, (1, 3, 32, 32)),
]


@pytest.mark.parametrize(("name", "build", "declared"), DECLARED_CASES, ids=[case[0] for case in DECLARED_CASES])
def test_declared_input_shape(name: str, build: Callable[[], nn.Module], declared: tuple[int, ...] | None) -> None:
    model = build()
    assert declared_input_shape(model) == declared
    assert default_input_shape(model) == (declared or (1, 3, 224, 224))


def test_insert_probes_at_the_declared_size_and_the_recipe_records_it(tmp_path: Path) -> None:
    output = tmp_path / "botnet_eca.pt"
    result = run("insert", "timm:botnet26t_256", "--block", "eca", "-o", output)
    assert result.exit_code == 0, result.output
    assert "Output deviation on a probe batch of 1,3,256,256: max abs 0 " in result.stdout
    report = json.loads(output.with_name("botnet_eca.report.json").read_text())
    assert report["input_shape"] == report["recipe"]["input_shape"] == [1, 3, 256, 256]
    assert report["profile"]["input"]["image"] == [3, 256, 256]
    rebuilt = surgeon.load(output)  # replays at the recorded size, where the model runs
    assert surgeon.recipe_of(rebuilt).input_shape == (1, 3, 256, 256)


def test_sites_and_profile_run_at_the_declared_size() -> None:
    sites = run("sites", "timm:botnet26t_256", "--json")
    assert sites.exit_code == 0, sites.output
    found = json.loads(sites.stdout)
    assert found["input_shape"] == [1, 3, 256, 256] and found["sites"]
    profile = run("profile", "timm:botnet26t_256", "--runs", "0", "--json")
    assert profile.exit_code == 0, profile.output
    assert json.loads(profile.stdout)["input"]["shape"] == [1, 3, 256, 256]
    maxxvit = run("sites", "timm:maxxvitv2_nano_rw_256", "--kind", "block")
    assert maxxvit.exit_code == 0, maxxvit.output
    assert maxxvit.stdout.startswith("7 sites of timm:maxxvitv2_nano_rw_256 at input 1,3,256,256")


def test_timm_model_at_a_size_it_refuses_is_told_its_own() -> None:
    result = run("sites", "timm:botnet26t_256", "--input-shape", "1,3,224,224")
    assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.output
    # timm's own message (empty for this assert in timm 1.0.31) is its to change: only its type is pinned here
    assert result.stderr.startswith("error: timm:botnet26t_256 fails on a probe batch of shape 1,3,224,224: "
                                    "AssertionError")
    assert result.stderr.endswith(" Pass --input-shape 1,3,256,256, the input size it declares.\n")
    assert len(result.stderr.splitlines()) == 1


def test_apply_with_a_recipe_probes_at_the_recorded_size(tmp_path: Path) -> None:
    output = tmp_path / "r18_eca.pt"
    assert run("insert", "torchvision:resnet18", "--block", "eca", "--input-shape", "1,3,48,48", "--profile", "off",
               "-o", output).exit_code == 0
    result = run("apply", "torchvision:resnet18", "--recipe", output, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["input_shape"] == [1, 3, 48, 48]


REFUSAL = "fails on a probe batch of shape 2,3,64,64: AssertionError: Input height (64) doesn't match model (32)."
COMMANDS = {
    "insert": ("insert", "--block", "eca"),
    "swap": ("swap", "--with", "scconv"),
    "apply": ("apply", "--init", "paper", "se_resnet"),
    "sites": ("sites",),
    "profile": ("profile", "--runs", "0"),
    "compare": ("compare", "--blocks", "se", "--runs", "0"),
    "export": ("export", "--to", "torchscript"),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_model_refusing_the_probe_is_one_line_in_every_command(command: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name, *options = COMMANDS[command]
    model = f"{FIXTURES}:declared_sized_net"
    result = run(name, model, *options, "--input-shape", "2,3,64,64")
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: {model} {REFUSAL} Pass --input-shape 2,3,32,32, the input size it declares.\n"
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


def test_a_model_that_declares_nothing_is_told_to_pass_its_size() -> None:
    result = run("sites", f"{FIXTURES}:sized_net", "--input-shape", "2,3,64,64")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"error: {FIXTURES}:sized_net {REFUSAL} Pass --input-shape N,C,H,W with the input size it "
                             "was built for.\n")


def test_python_api_raises_the_same_refusal_as_a_typed_error() -> None:
    with pytest.raises(ModelForwardError) as caught:
        surgeon.insert(SizedNet(), "eca", input_shape=(2, 3, 64, 64))
    assert str(caught.value) == ("SizedNet fails on a probe batch of shape (2, 3, 64, 64): AssertionError: Input "
                                 "height (64) doesn't match model (32). Pass input_shape=(N, C, H, W) with the input "
                                 "size it was built for.")
    assert isinstance(caught.value.__cause__, AssertionError)  # the model's own error, for a debugger
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)
    with pytest.raises(ModelForwardError, match=r"of shape \(1, 3, 224, 224\)"):  # no declared size: 224
        surgeon.sites(SizedNet())
    model = surgeon.insert(declared_sized_net(), "eca")  # the declared size: no input_shape needed
    assert surgeon.recipe_of(model).input_shape == (1, 3, 32, 32)


def test_a_failure_of_our_own_code_is_not_blamed_on_the_model() -> None:
    """The model runs alone at the shape: the body's exception (ours: a hook, a counter) propagates unchanged."""
    with pytest.raises(ZeroDivisionError), probe_guard(SizedNet(), (1, 3, 32, 32)):
        raise ZeroDivisionError("a bug of ours")
