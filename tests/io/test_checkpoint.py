"""Real model files in and out: every input format and container round-trips, unsafe files are refused, writes are
atomic (issue 5)."""

from __future__ import annotations

import copy
import dataclasses
import os
import stat
import warnings
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file

import surgeon
from surgeon.errors import CheckpointError, ModelLoadError, OutputExistsError
from surgeon.io import LoadOptions, atomic_write, read_checkpoint, save_model
from surgeon.pipeline import give_siblings_blocks, load_model
from tests._util import build, file_digest, randomize_norm_stats

SHAPE = (1, 3, 64, 64)


@pytest.fixture(scope="module", autouse=True)
def _signature_cache(tmp_path_factory: pytest.TempPathFactory):
    """Detection caches architecture signatures; keep the tests' cache out of the user's."""
    previous = os.environ.get("ATTN_SURGEON_CACHE")
    os.environ["ATTN_SURGEON_CACHE"] = str(tmp_path_factory.mktemp("signatures"))
    yield
    if previous is None:
        del os.environ["ATTN_SURGEON_CACHE"]
    else:
        os.environ["ATTN_SURGEON_CACHE"] = previous


@pytest.fixture(scope="module")
def r18() -> OrderedDict[str, torch.Tensor]:
    model = build("torchvision:resnet18")
    randomize_norm_stats(model)
    return model.state_dict()


@pytest.fixture(scope="module")
def eca_recipe() -> surgeon.Recipe:
    """ECA at every residual unit of a ResNet-18, recorded once; each test replays it (what users' code does)."""
    model = build("torchvision:resnet18")
    rule = surgeon.Rule(surgeon.Selector(kind="block"), "eca", init="paper")
    return surgeon.run_surgery(model, [rule], input_shape=SHAPE, base="torchvision:resnet18").recipe


@pytest.fixture
def patch(eca_recipe: surgeon.Recipe):
    """Patch a loaded model with the ECA recipe (its base set to the loaded spec) and save it in the loaded layout."""

    def run(loaded, out: Path, **save_args) -> tuple[SimpleNamespace, list[str]]:
        recipe = dataclasses.replace(eca_recipe, base=loaded.spec, arch_args=loaded.arch_args)
        model = surgeon.apply(loaded.module, recipe)
        give_siblings_blocks(loaded.layout, model, recipe)  # what the pipeline's patch does before it saves
        dropped = save_model(model, out, recipe, loaded.layout, **save_args)
        return SimpleNamespace(model=model, recipe=recipe), dropped

    return run


@pytest.fixture(scope="module")
def user_model(eca_recipe: surgeon.Recipe) -> torch.nn.Module:
    """What a user's training code does once: build its own model and apply the recipe."""
    return surgeon.apply(torchvision.models.resnet18(), eca_recipe)


@pytest.fixture
def assert_rebuilds_in_user_code(user_model: torch.nn.Module):
    """The saved weights load strictly into the user's own patched model, which then computes the same outputs."""

    def check(state, patched: torch.nn.Module, prefix: str = "") -> None:
        fresh = copy.deepcopy(user_model)
        fresh.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=True)
        x = torch.randn(SHAPE)
        with torch.no_grad():
            assert torch.equal(fresh.eval()(x), patched.eval()(x))

    return check


# ------------------------------------------------------------------------------------------------ containers


def test_bare_state_dict_roundtrip(r18, tmp_path: Path, patch,
        assert_rebuilds_in_user_code) -> None:
    src, out = tmp_path / "r18.pt", tmp_path / "out.pt"
    torch.save(r18, src)
    loaded = load_model(src, LoadOptions(arch="torchvision:resnet18"))
    assert loaded.layout.kind == "bare" and loaded.detection is None
    result, dropped = patch(loaded, out)
    assert dropped == [] and dropped.notes == []
    state = torch.load(out, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in r18.items())
    assert_rebuilds_in_user_code(state, result.model)
    rebuilt = surgeon.load(out)
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), result.model.eval()(x))


@pytest.mark.parametrize("key", ["state_dict", "model_ema"])
def test_container_keeps_entries_and_drops_optimizer(r18, tmp_path: Path, key: str, patch,
        assert_rebuilds_in_user_code) -> None:
    src, out = tmp_path / "ckpt.pth", tmp_path / "out.pth"
    torch.save({key: r18, "epoch": 7, "best_top1": 71.5, "optimizer": {"state": {}, "param_groups": []}}, src)
    result, dropped = patch(load_model(src, LoadOptions(arch="torchvision:resnet18")), out)
    assert dropped == ["optimizer"]
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {key, "epoch", "best_top1"} and saved["epoch"] == 7 and saved["best_top1"] == 71.5
    assert_rebuilds_in_user_code(saved[key], result.model)


def test_lightning_ckpt_prefix_detected_stripped_and_restored(r18, tmp_path: Path, patch,
        assert_rebuilds_in_user_code) -> None:
    src, out = tmp_path / "epoch=3-step=100.ckpt", tmp_path / "patched.ckpt"
    torch.save({"epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.4.0",
                "state_dict": OrderedDict((f"model.{k}", v) for k, v in r18.items()),
                "optimizer_states": [{"state": {}}], "lr_schedulers": [{"last_epoch": 3}],
                "hyper_parameters": {"lr": 0.1, "arch": "resnet18"}, "callbacks": {}, "loops": {}}, src)
    loaded = load_model(src)  # no --arch: detected through the prefix
    assert loaded.spec == "torchvision:resnet18" and loaded.layout.prefix == "model."
    assert loaded.detection.describe().startswith("detected torchvision:resnet18 (122/122 tensors match")
    result, dropped = patch(loaded, out)
    assert sorted(dropped) == ["lr_schedulers", "optimizer_states"]
    saved = torch.load(out, weights_only=True)
    assert all(k.startswith("model.") for k in saved["state_dict"])
    assert saved["hyper_parameters"] == {"lr": 0.1, "arch": "resnet18"} and saved["global_step"] == 100
    assert_rebuilds_in_user_code(saved["state_dict"], result.model, prefix="model.")
    again = load_model(out)  # rebuilt from its recipe, prefix found again
    assert again.recipe is not None and again.layout.prefix == "model."


@pytest.mark.parametrize("prefix", ["module.", "module._orig_mod."])  # DDP, DDP around torch.compile
def test_wrapper_prefixes_are_restored(r18, tmp_path: Path, prefix: str, patch,
        assert_rebuilds_in_user_code) -> None:
    src, out = tmp_path / "ddp.pt", tmp_path / "out.pt"
    torch.save(OrderedDict((prefix + k, v) for k, v in r18.items()), src)
    loaded = load_model(src, LoadOptions(arch="torchvision:resnet18"))
    assert loaded.layout.prefix == prefix
    result, _ = patch(loaded, out)
    state = torch.load(out, weights_only=True)
    assert all(k.startswith(prefix) for k in state)
    assert_rebuilds_in_user_code(state, result.model, prefix=prefix)


def test_timm_training_checkpoint_ema_gets_new_keys_and_keeps_its_values(r18, tmp_path: Path, patch) -> None:
    """timm's train.py layout: arch, args (a Namespace), state_dict and state_dict_ema."""
    import argparse

    ema = OrderedDict((k, v + 1 if v.is_floating_point() else v) for k, v in r18.items())
    src, out = tmp_path / "checkpoint-9.pth.tar", tmp_path / "out.pth.tar"
    torch.save({"epoch": 9, "arch": "resnet18", "args": argparse.Namespace(lr=0.5, model="resnet18"),
                "state_dict": r18, "state_dict_ema": ema, "optimizer": {}}, src)
    loaded = load_model(src)
    assert loaded.spec == "timm:resnet18"  # the container's arch entry decides between equal matches
    assert loaded.layout.siblings == {"state_dict_ema": ""}
    _, dropped = patch(loaded, out)
    assert dropped == ["optimizer"] and any("state_dict_ema" in note for note in dropped.notes)
    saved = torch.load(out, weights_only=True)  # the Namespace is written back as a plain dict
    assert saved["args"] == {"lr": 0.5, "model": "resnet18"}
    assert set(saved["state_dict_ema"]) == set(saved["state_dict"])
    assert all(torch.equal(saved["state_dict_ema"][k], v) for k, v in ema.items())
    new = [k for k in saved["state_dict"] if k not in r18]
    assert new and all(torch.equal(saved["state_dict_ema"][k], saved["state_dict"][k]) for k in new)


# ------------------------------------------------------------------------------------------------ safetensors


def test_safetensors_roundtrip_with_recipe_in_header(r18, tmp_path: Path, patch,
        assert_rebuilds_in_user_code) -> None:
    src, out = tmp_path / "r18.safetensors", tmp_path / "r18_eca.safetensors"
    save_file(dict(r18), src, metadata={"format": "pt", "source": "my-run"})
    loaded = load_model(src)
    assert loaded.layout.format == "safetensors" and loaded.spec == "torchvision:resnet18"
    result, _ = patch(loaded, out)
    with safe_open(out, framework="pt") as file:
        header = file.metadata()
        state = {k: file.get_tensor(k) for k in file.keys()}  # noqa: SIM118
    assert header["source"] == "my-run" and "eca" in header["__surgeon__"]
    assert_rebuilds_in_user_code(state, result.model)
    rebuilt = surgeon.load(out)
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), result.model.eval()(x))


def test_pt_container_to_safetensors_leaves_out_other_entries(r18, tmp_path: Path, patch) -> None:
    src, out = tmp_path / "ckpt.pt", tmp_path / "out.bin"
    torch.save({"state_dict": OrderedDict((f"module.{k}", v) for k, v in r18.items()), "epoch": 1}, src)
    result, dropped = patch(load_model(src, LoadOptions(arch="torchvision:resnet18")), out, fmt="safetensors")
    assert dropped.notes == ["safetensors holds tensors only: left out epoch"]
    assert surgeon.load(out).state_dict().keys() == result.model.state_dict().keys()


# ------------------------------------------------------------------------------------------------ pickled modules


def test_pickled_module_refused_without_flag(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(torchvision.models.resnet18(), path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value) == (
        f"{path}: refusing to unpickle code: the file holds more than tensors and plain data (it refers to "
        "torchvision.models.resnet.ResNet), and loading it would run code it contains. Save a state_dict instead, "
        "or pass --trust-pickle if you trust this file")


def test_pickled_module_with_flag_stays_pickled_with_its_ema(tmp_path: Path, patch) -> None:
    """Ultralytics' layout: whole modules under model and ema; the output keeps them whole, both patched."""
    model = build("torchvision:resnet18")
    ema = build("torchvision:resnet18")
    src, out = tmp_path / "last.pt", tmp_path / "patched.pt"
    torch.save({"model": model, "ema": ema, "epoch": 5, "optimizer": {}}, src)
    loaded = load_model(src, LoadOptions(trust_pickle=True))
    assert loaded.layout.pickled and loaded.spec == "torchvision:resnet18" and loaded.layout.siblings == {"ema": ""}
    result, dropped = patch(loaded, out)
    assert dropped == ["optimizer"] and any("pickles the whole model" in note for note in dropped.notes)
    with pytest.raises(CheckpointError, match="refusing to unpickle code"):
        read_checkpoint(out)
    saved = torch.load(out, weights_only=False)
    assert surgeon.recipe_of(saved["model"]) is not None and saved["epoch"] == 5
    assert saved["ema"].state_dict().keys() == saved["model"].state_dict().keys()
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert torch.equal(saved["model"].eval()(x), result.model.eval()(x))
    again = load_model(out, LoadOptions(trust_pickle=True))
    assert again.recipe is not None and again.spec == "torchvision:resnet18"


# ------------------------------------------------------------------------------------------------ specs


def test_factory_spec_with_arch_args_needs_trust_code_to_rebuild(tmp_path: Path, patch) -> None:
    loaded = load_model("torchvision.models:resnet18", LoadOptions(arch_args={"num_classes": 10}))
    assert loaded.module.fc.out_features == 10
    out = tmp_path / "r18_10.pt"
    result, _ = patch(loaded, out)
    with pytest.raises(ModelLoadError) as info:
        load_model(out)
    assert str(info.value) == (f"{out}: its recipe builds 'torchvision.models:resnet18', which imports and runs "
                               "code; pass --trust-code if you trust it, or --arch SPEC")
    rebuilt = load_model(out, LoadOptions(trust_code=True)).module
    assert rebuilt.fc.out_features == 10 and rebuilt.state_dict().keys() == result.model.state_dict().keys()


# ------------------------------------------------------------------------------------------------ refusals


def _compiled_files(tmp_path: Path) -> dict[str, Path]:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()  # the refusal reads no weights
    x = torch.randn(1, 3, 32, 32)
    paths = {"torchscript": tmp_path / "model.ts.pt", "exported-program": tmp_path / "model.pt2",
             "onnx": tmp_path / "model.onnx"}
    with warnings.catch_warnings():  # torch.jit is deprecated; its files still exist in the wild
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, x), paths["torchscript"])
    torch.export.save(torch.export.export(model, (x,)), paths["exported-program"])
    paths["onnx"].write_bytes(b"\x08\x07\x12\x07pytorch")  # an ONNX ModelProto header
    return paths


def test_compiled_formats_are_refused_with_reason_and_alternative(tmp_path: Path) -> None:
    paths = _compiled_files(tmp_path)
    reasons = {
        "torchscript": "a TorchScript archive: its modules were compiled to TorchScript code, which torch.fx cannot "
                       "trace or rewrite",
        "exported-program": "a torch.export program: its modules were flattened into one ATen graph, so there are "
                            "no modules left to rewrite",
        "onnx": "an ONNX model: it holds an operator graph, not PyTorch modules",
    }
    for kind, path in paths.items():
        with pytest.raises(CheckpointError) as info:
            load_model(path, LoadOptions(arch="torchvision:resnet18", trust_pickle=True))
        assert str(info.value) == (f"{path}: is {reasons[kind]}. Pass the eager model instead: a spec "
                                   "(torchvision:NAME) or its state_dict saved with "
                                   "torch.save(model.state_dict()), with --arch SPEC if needed")


def test_broken_files_each_give_one_clear_error(r18, tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(r18, good)
    data = good.read_bytes()
    cases = {
        "empty.pt": (b"", "{p}: empty file"),
        "truncated.pt": (data[: len(data) // 2], "{p}: not a readable PyTorch checkpoint, or truncated ("),
        "corrupted.pt": (bytes(range(256)) * 8, "{p}: not a readable PyTorch checkpoint ("),
        "notes.txt": (b"epoch 3: loss 0.1\n", "{p}: not a readable PyTorch checkpoint, or truncated ("),
        "cut.safetensors": (None, "{p}: not a readable safetensors file, or truncated ("),
    }
    save_file(dict(list(r18.items())[:4]), tmp_path / "full.safetensors")
    whole = (tmp_path / "full.safetensors").read_bytes()
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(whole[: len(whole) - 100] if content is None else content)
        with pytest.raises(CheckpointError) as info:
            load_model(path, LoadOptions(arch="torchvision:resnet18"))
        message = str(info.value)
        assert message.startswith(expected.format(p=path)) and "\n" not in message, message
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"no state_dict found \(.*found list\)$"):
        load_model(tmp_path / "list.pt", LoadOptions(arch="torchvision:resnet18"))
    with pytest.raises(CheckpointError, match="is a directory, expected a checkpoint file$"):
        load_model(tmp_path, LoadOptions(arch="torchvision:resnet18"))
    with pytest.raises(CheckpointError) as info:
        load_model(good, LoadOptions(arch="torchvision:resnet34"))
    assert str(info.value) == ("the checkpoint's tensors do not fit --arch torchvision:resnet34: 96 missing "
                               "(e.g. layer1.2.conv1.weight)")


# ------------------------------------------------------------------------------------------------ writing


def test_failure_mid_write_leaves_no_file(r18, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eca_recipe) -> None:
    src, out = tmp_path / "r18.pt", tmp_path / "out.pt"
    torch.save(r18, src)
    loaded = load_model(src, LoadOptions(arch="torchvision:resnet18"))
    real_save = torch.save

    def save_then_fail(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.write(b"more")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(CheckpointError) as info:
        save_model(loaded.module, out, eca_recipe, loaded.layout)
    assert str(info.value) == f"{out}: write failed (No space left on device); nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.pt"]
    out.write_bytes(b"precious")

    def interrupted(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(loaded.module, out, eca_recipe, loaded.layout, force=True)
    assert out.read_bytes() == b"precious" and sorted(p.name for p in tmp_path.iterdir()) == ["out.pt", "r18.pt"]


def test_read_only_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(directory, os.W_OK):  # root ignores permission bits: use sysfs, which not even root can write
            directory = Path("/sys")
            if not directory.is_dir():
                pytest.skip("no unwritable directory available")
        with pytest.raises(CheckpointError) as info:
            atomic_write(directory / "out.pt", lambda file: file.write(b"x"))
        assert str(info.value) == f"{directory / 'out.pt'}: cannot write in {directory} (Permission denied)"
    finally:
        (tmp_path / "ro").chmod(stat.S_IRWXU)
    assert not list((tmp_path / "ro").iterdir()) and not (directory / "out.pt").exists()


def test_no_overwrite_without_force_and_never_the_input(r18, tmp_path: Path, eca_recipe) -> None:
    src, out = tmp_path / "r18.pt", tmp_path / "out.pt"
    torch.save(r18, src)
    digest = file_digest(src)
    out.write_bytes(b"precious")
    loaded = load_model(src, LoadOptions(arch="torchvision:resnet18"))
    with pytest.raises(OutputExistsError) as info:
        save_model(loaded.module, out, eca_recipe, loaded.layout)
    assert str(info.value) == f"{out}: exists; pass --force to overwrite it" and out.read_bytes() == b"precious"
    with pytest.raises(OutputExistsError) as info:
        save_model(loaded.module, src, eca_recipe, loaded.layout, force=True, protect=(src,))
    assert str(info.value) == f"{src}: is the input file; choose another output path"
    assert file_digest(src) == digest
