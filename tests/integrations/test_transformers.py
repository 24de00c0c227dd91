"""Hugging Face transformers: specs, save_pretrained directories in and out, the plain-class load, Trainer.

Every model is built from a small config (no weights downloaded); a test that reaches for the network fails.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import torch

import surgeon
from surgeon.errors import CheckpointError, ModelLoadError, OutputExistsError
from surgeon.io import LoadOptions, read_model
from surgeon.pipeline import load_model

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402  (after the skip: safetensors comes with transformers here)

from surgeon.integrations.transformers import CONFIG_KEY, MissingBlocksError, surgeon_callback  # noqa: E402
from tests._util import REPO, run_cli

SMALL_RESNET = {"depths": [1, 1, 1, 1], "hidden_sizes": [32, 64, 128, 256], "embedding_size": 16, "num_labels": 3}
SHAPE = (1, 3, 64, 64)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may come from the Hub: offline mode, and any connection attempt fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a test tried to reach the network: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _resnet(**fields: object) -> torch.nn.Module:
    config = transformers.ResNetConfig(**{**SMALL_RESNET, **fields})
    return transformers.ResNetForImageClassification(config).eval()


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    """A model directory as save_pretrained writes it, with an image processor config beside it."""
    directory = tmp_path / "base"
    _resnet().save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text('{"size": {"height": 64, "width": 64}}')
    return directory


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[key], sb[key]) for key in sa)
    x = torch.randn(SHAPE)
    assert torch.equal(a.eval()(x).logits, b.eval()(x).logits)


def test_spec_builds_the_class_from_a_default_config_with_fields() -> None:
    loaded = load_model("transformers:ResNetForImageClassification", LoadOptions(arch_args=SMALL_RESNET))
    assert type(loaded.module) is transformers.ResNetForImageClassification
    assert loaded.module.config.hidden_sizes == [32, 64, 128, 256]
    assert loaded.layout.framework == "transformers"
    convnext = load_model("transformers:ConvNextModel", LoadOptions(arch_args={
        "depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64], "image_size": 96, "num_channels": 1})).module
    assert surgeon.sites(convnext).input_shape == (1, 1, 96, 96)  # the config's num_channels and image_size


@pytest.mark.parametrize(("spec", "args", "message"), [
    ("transformers:ResNetForImageClasification", {}, "no model class 'ResNetForImageClasification' (did you mean "
                                                     "ResNetForImageClassification"),
    ("transformers:BertModel", {}, "takes input_ids, not an image batch"),
    ("transformers:ResNetForImageClassification", {"hiden_sizes": [8]}, "ResNetConfig has no field 'hiden_sizes' "
                                                                       "(did you mean hidden_sizes"),
])
def test_spec_errors_say_what_is_wrong(spec: str, args: dict, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(")):
        load_model(spec, LoadOptions(arch_args=args))


def test_directory_in_directory_out_every_key_kept_and_load_rebuilds_the_blocks(base_dir: Path,
                                                                                tmp_path: Path) -> None:
    loaded = load_model(base_dir)  # recognised by content: config.json + model.safetensors
    assert type(loaded.module) is transformers.ResNetForImageClassification
    original = load_file(base_dir / "model.safetensors")
    model = surgeon.insert(loaded.module, "eca")
    out = tmp_path / "out"
    surgeon.save(model, out)

    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["ResNetForImageClassification"]
    assert [step["block"] for step in config[CONFIG_KEY]["steps"]] == ["eca"] * 4
    assert config[CONFIG_KEY]["note"].startswith("attention blocks inserted by attn-surgeon: load with surgeon.load")
    saved = load_file(out / "model.safetensors")
    assert all(torch.equal(saved[key], value) for key, value in original.items())  # every original key, bit-identical
    assert {key for key in saved if key not in original} == {key for key in saved if ".eca_residual." in key}

    reloaded = surgeon.load(out)
    assert type(reloaded) is transformers.ResNetForImageClassification
    _assert_same(model, reloaded)
    with pytest.raises(OutputExistsError, match="exists; pass --force"):
        surgeon.save(model, out)
    surgeon.save(model, out, force=True)
    with pytest.raises(CheckpointError, match="save_pretrained directory; give a directory name without .pt"):
        surgeon.save(model, tmp_path / "out.pt")


def test_reading_a_patched_directory_replays_nothing(base_dir: Path, tmp_path: Path) -> None:
    """The adapter's read gives the base model, the recipe and the weights; the pipeline's load replays."""
    model = surgeon.insert(load_model(base_dir).module, "eca")
    surgeon.save(model, tmp_path / "out")
    read = read_model(tmp_path / "out")
    assert read.recipe is not None and surgeon.recipe_of(read.module) is None
    assert read.state is not None and set(read.state) == set(model.state_dict())
    assert not any(".eca_residual." in key for key in read.module.state_dict())


def test_a_recipe_that_imports_code_loads_only_with_trust_code(tmp_path: Path) -> None:
    surgeon.save(surgeon.insert(_resnet(), "eca", input_shape=SHAPE), tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    config[CONFIG_KEY]["steps"][0]["block"] = "some_package.blocks:Evil"
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="inserts some_package.blocks:Evil, which imports and runs code; pass "
                                             "--trust-code"):
        surgeon.load(tmp_path / "out")


def test_apply_then_weights_the_peft_way(base_dir: Path, tmp_path: Path) -> None:
    patched = surgeon.insert(transformers.AutoModelForImageClassification.from_pretrained(base_dir), "eca")
    torch.nn.init.normal_(next(m for n, m in patched.named_parameters() if "identity_gate" in n))  # trained blocks
    patched.save_pretrained(tmp_path / "out")  # transformers' own save writes the recipe too: it is in the config

    model = transformers.AutoModelForImageClassification.from_pretrained(base_dir)
    surgeon.apply(model, tmp_path / "out")
    model.load_state_dict(load_file(tmp_path / "out" / "model.safetensors"), strict=True)
    _assert_same(patched, model)


def test_plain_from_pretrained_drops_the_blocks_and_every_surgeon_call_says_so(base_dir: Path,
                                                                               tmp_path: Path) -> None:
    surgeon.save(surgeon.insert(load_model(base_dir).module, "eca"), tmp_path / "out")
    plain = transformers.ResNetForImageClassification.from_pretrained(tmp_path / "out")  # logs UNEXPECTED keys
    assert not any("eca" in key for key in plain.state_dict())
    assert plain.config.attn_surgeon["steps"]  # the recipe survives in the config
    message = ("config records 4 attn-surgeon blocks (e.g. resnet.encoder.stages.0.layers.0.eca_residual) that the "
               "model does not have: it was loaded with the plain ResNetForImageClassification.from_pretrained")
    with pytest.raises(MissingBlocksError, match=message.replace("(", r"\(").replace(")", r"\)")):
        surgeon.insert(plain, "se")
    with pytest.raises(MissingBlocksError, match="surgeon.load"):
        surgeon.save(plain, tmp_path / "again")
    with pytest.raises(MissingBlocksError):
        surgeon_callback().on_train_begin(None, None, None, model=plain)
    surgeon.apply(plain, tmp_path / "out")  # the documented way back
    surgeon_callback().on_train_begin(None, None, None, model=plain)


def _dataset(n: int = 8) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"pixel_values": torch.randn(SHAPE[1:], generator=generator), "labels": torch.tensor(i % 3)}
            for i in range(n)]


def _trainer(model: torch.nn.Module, output: Path, max_steps: int) -> transformers.Trainer:
    args = transformers.TrainingArguments(
        output_dir=str(output), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=0.05,
        save_steps=2, save_strategy="steps", logging_strategy="no", report_to=[], use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True)
    return transformers.Trainer(model=model, args=args, train_dataset=_dataset(), callbacks=[surgeon_callback()])


def test_trainer_trains_saves_and_resumes_with_the_blocks(tmp_path: Path) -> None:
    def patched() -> torch.nn.Module:
        torch.manual_seed(0)
        return surgeon.insert(_resnet(), "eca", init="paper")  # paper init: the blocks change the function

    model = patched()
    blocks_before = {k: v.clone() for k, v in model.state_dict().items() if ".eca_residual." in k}
    trainer = _trainer(model, tmp_path / "run", max_steps=4)
    trainer.train()
    trained = trainer.model.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in blocks_before.items())  # the blocks were trained

    trainer.save_model(str(tmp_path / "final"))
    reloaded = surgeon.load(tmp_path / "final")
    _assert_same(trainer.model, reloaded)
    assert sum(name.endswith(".eca_residual") for name, _ in reloaded.named_modules()) == 4

    resumed = _trainer(patched(), tmp_path / "run", max_steps=4)  # a fresh process would build it the same way
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    _assert_same(trainer.model, resumed.model)  # the same four steps, the last two after resuming


def test_trainer_refuses_a_model_that_lost_its_blocks(tmp_path: Path) -> None:
    surgeon.save(surgeon.insert(_resnet(), "eca"), tmp_path / "out")
    plain = transformers.ResNetForImageClassification.from_pretrained(tmp_path / "out")
    with pytest.raises(MissingBlocksError):
        _trainer(plain, tmp_path / "run", max_steps=1).train()


def test_trainer_refuses_to_resume_a_patched_checkpoint_into_a_model_without_the_blocks(tmp_path: Path) -> None:
    _trainer(surgeon.insert(_resnet(), "eca"), tmp_path / "run", max_steps=2).train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    with pytest.raises(ValueError, match="parameter group that doesn't match"):  # torch's own refusal: the optimizer
        _trainer(_resnet(), tmp_path / "run", max_steps=4).train(resume_from_checkpoint=str(checkpoint))
    (checkpoint / "optimizer.pt").unlink()  # without optimizer state nothing else would notice: the callback does
    message = "resuming from .*checkpoint-2, whose model has 4 attn-surgeon blocks .* but this model does not have"
    with pytest.raises(MissingBlocksError, match=message):
        _trainer(_resnet(), tmp_path / "run", max_steps=4).train(resume_from_checkpoint=str(checkpoint))


def test_cli_writes_a_model_directory_beside_the_input(base_dir: Path) -> None:
    result = run_cli("insert", str(base_dir), "--block", "eca", "--profile", "off")
    assert result.exit_code == 0, result.output
    out = base_dir.with_name("base_eca")
    assert (out / "config.json").is_file() and (out / "preprocessor_config.json").is_file()
    assert base_dir.with_name("base_eca.report.json").is_file()
    assert sum(name.endswith(".eca_residual") for name, _ in surgeon.load(out).named_modules()) == 4
    result = run_cli("insert", str(base_dir), "--block", "eca", "--format", "pt", "-o",
                     str(base_dir.with_name("x.pt")))
    assert result.exit_code == 1
    assert ("a model of transformers is saved in that framework's own layout; --format pt does not apply"
            in result.output)


def test_import_surgeon_does_not_import_transformers() -> None:
    import subprocess
    import sys

    code = "import sys, surgeon; sys.exit('transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# Residual units of transformers' CNNs, built small: (class, config fields, unit class, units with a skip addition).
UNITS = [
    ("ResNetForImageClassification", {"depths": [2, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128], "embedding_size": 8},
     "ResNetBottleNeckLayer", 5),
    ("ResNetForImageClassification", {"depths": [2, 1, 1, 1], "hidden_sizes": [16, 32, 64, 128], "embedding_size": 8,
                                      "layer_type": "basic"}, "ResNetBasicLayer", 5),
    ("ConvNextForImageClassification", {"depths": [2, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]}, "ConvNextLayer", 5),
    ("RegNetForImageClassification", {"depths": [2, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64], "embedding_size": 8,
                                      "groups_width": 8}, "RegNetYLayer", 5),
    ("MobileNetV2ForImageClassification", {"depth_multiplier": 0.35}, "MobileNetV2InvertedResidual", 10),
    # The skip addition of an EfficientNet block lives in its last layer, which is handed the block's input
    ("EfficientNetForImageClassification", {"width_coefficient": 1.0, "depth_coefficient": 1.0, "hidden_dim": 1280,
                                            "image_size": 64}, "EfficientNetFinalBlockLayer", 9),
]


@pytest.mark.parametrize(("name", "fields", "unit", "count"), UNITS, ids=[f"{u[0]}-{u[2]}" for u in UNITS])
def test_residual_units_are_found_and_patched_with_the_function_unchanged(name: str, fields: dict, unit: str,
                                                                         count: int) -> None:
    model = load_model(f"transformers:{name}", LoadOptions(arch_args=fields)).module
    blocks = surgeon.sites(model, SHAPE).of_kind("block")
    assert [site.cls for site in blocks] == [unit] * count
    result = surgeon.run_surgery(model, [surgeon.Rule(surgeon.Selector(kind="block"), "eca")], input_shape=SHAPE)
    assert len(result.recipe.steps) == count
    assert result.verification.max_abs_diff <= 1e-6  # 0 on transformers 5; float noise of a traced graph on 4.x
    model.train()(torch.randn(2, *SHAPE[1:])).logits.sum().backward()  # trains through the rewritten units


def test_load_keeps_the_saved_dtype(tmp_path: Path) -> None:
    model = surgeon.insert(_resnet(), "eca", input_shape=SHAPE).to(torch.bfloat16)
    surgeon.save(model, tmp_path / "out")
    reloaded = surgeon.load(tmp_path / "out")
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    saved, own = model.state_dict(), reloaded.state_dict()
    assert list(saved) == list(own) and all(torch.equal(saved[k], own[k]) for k in saved)


def test_docs_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = (REPO / "docs" / "integrations" / "transformers.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", page, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    _resnet().save_pretrained("resnet50-finetuned")  # a small stand-in for the page's fine-tuned ResNet-50
    args = _trainer(_resnet(), tmp_path / "run", max_steps=2).args
    namespace = {"args": args, "train": _dataset()}
    exec(compile(snippet, "docs/integrations/transformers.md", "exec"), namespace)  # noqa: S102  (our own docs)
    model = namespace["model"]
    assert sum(name.endswith(".eca_residual") for name, _ in model.named_modules()) == 4
    _assert_same(model, surgeon.load("resnet50-eca"))


def test_zoo_source_lists_the_vision_classes_and_records_a_surgery() -> None:
    import dataclasses
    import importlib.util
    import sys

    path = REPO / "benchmarks" / "zoo.py"
    spec = importlib.util.spec_from_file_location("zoo_benchmark", path)
    zoo = sys.modules.get("zoo_benchmark") or importlib.util.module_from_spec(spec)
    if "zoo_benchmark" not in sys.modules:
        sys.modules["zoo_benchmark"] = zoo
        spec.loader.exec_module(zoo)
    entries = {entry.name: entry for entry in zoo.transformers_entries()}
    assert {"ResNetForImageClassification", "ConvNextForImageClassification", "EfficientNetForImageClassification",
            "MobileNetV2ForImageClassification", "ViTForImageClassification"} <= set(entries)
    assert not any(name.startswith("TimmWrapper") for name in entries)
    small = dataclasses.replace(entries["ResNetForImageClassification"], build=_resnet, sizes=(64,))
    record = zoo.run_entry(small)
    assert (record["status"], record["selector"], record["patched"]) == ("patched", "bottleneck", 4)
    assert record["keys_preserved"] and record["loads_original"] and record["max_abs_diff"] <= zoo.TOLERANCE
