"""Ultralytics YOLO round trip through Ultralytics' own entry points: load, predict, fuse, val, export, train
(``YOLO.train``, the ``yolo`` command, resume, another class count, the DDP launcher's child script).

Nothing may reach the network: Ultralytics' download functions and name resolution are replaced for the whole
module by ones that record the attempt and raise, and the module fails if any attempt was recorded (Ultralytics
swallows some errors). Training runs one epoch at 32 px on four synthetic images with plots and AMP off.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import surgeon
from examples.yolo.tiny_dataset import write_classify_dataset, write_detect_dataset
from surgeon.errors import CheckpointError, ModelLoadError
from surgeon.integrations import ultralytics as integration
from surgeon.integrations.ultralytics import training as hook
from surgeon.io import LoadOptions, build_arch, read_model
from surgeon.pipeline import load_model
from tests._util import REPO, run_cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="ultralytics not installed")


TRAIN = {"epochs": 1, "imgsz": 32, "batch": 4, "workers": 0, "plots": False, "amp": False, "device": "cpu",
         "verbose": False, "exist_ok": True, "seed": 0}
PROBE = "1,3,64,64"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "", None)


def _caller() -> str:
    import traceback

    frames = [f for f in traceback.extract_stack()[:-2] if "ultralytics" in f.filename]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[-4:][::-1]) or "?"


class _Offline:
    """Records and refuses every download and every name lookup of a non-local host."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def refuse(self, name: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> Any:
            self.attempts.append(f"{name}{args[:2]!r} from {_caller()}")
            raise RuntimeError(f"test_ultralytics: {name} tried to reach the network")

        return refused


def _provide_fonts() -> None:
    """Checking a data set makes Ultralytics fetch Arial for its plots unless the font is in its config directory
    (a temporary one here, see conftest): put matplotlib's own font there under that name."""
    import shutil

    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    assert "ultralytics-config" in str(USER_CONFIG_DIR), USER_CONFIG_DIR  # never the user's own directory
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (USER_CONFIG_DIR / name).exists():
            shutil.copyfile(font, USER_CONFIG_DIR / name)


@pytest.fixture(scope="module", autouse=True)
def offline() -> Any:
    import ultralytics.utils.downloads as downloads

    guard, patch = _Offline(), pytest.MonkeyPatch()
    _provide_fonts()
    original_asset, original_lookup = downloads.attempt_download_asset, socket.getaddrinfo

    def local_asset(file: Any, *args: Any, **kwargs: Any) -> str:
        if Path(str(file)).exists():
            return original_asset(file, *args, **kwargs)
        return guard.refuse("attempt_download_asset")(file)

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in _LOCAL_HOSTS:
            return original_lookup(host, *args, **kwargs)
        return guard.refuse("socket.getaddrinfo")(host)

    replacements = {"safe_download": guard.refuse("safe_download"), "get_github_assets": guard.refuse("github"),
                    "attempt_download_asset": local_asset, "download": guard.refuse("download")}
    for name, module in list(sys.modules.items()):
        if name == "ultralytics" or name.startswith("ultralytics."):
            for attribute, replacement in replacements.items():
                if getattr(module, attribute, None) is getattr(downloads, attribute):
                    patch.setattr(module, attribute, replacement)
    patch.setattr(socket, "getaddrinfo", lookup)
    yield guard
    patch.undo()
    assert not guard.attempts, f"tried to download: {guard.attempts}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("yolo")


@pytest.fixture(scope="module")
def data(workdir: Path) -> Path:
    return write_detect_dataset(workdir / "data", classes=2)


@pytest.fixture(scope="module")
def plain(workdir: Path) -> Path:
    """A checkpoint exactly as Ultralytics writes one (``YOLO(...).save``: the model pickled, half precision)."""
    from ultralytics import YOLO

    path = workdir / "yolov8n.pt"
    yolo = YOLO("yolov8n.yaml")
    yolo.ckpt = yolo.ckpt or {}  # Ultralytics 8.3.0 leaves it None for a model built from a yaml, and save() fails
    yolo.save(path)
    return path


@pytest.fixture(scope="module")
def patched(workdir: Path, plain: Path) -> tuple[Path, str]:
    out = workdir / "yolov8n_cbam.pt"
    result = run_cli("apply", str(plain), "yolo_backbone_cbam", "--trust-pickle",
                     "--input-shape", PROBE, "--profile", "off", "-o", str(out))
    assert result.exit_code == 0, result.output
    return out, result.output


def _blocks(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if type(module).__name__ == "CBAM"]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _saved_model(path: Path) -> torch.nn.Module:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return (checkpoint.get("ema") or checkpoint["model"]).float()


def _body_params(model: torch.nn.Module) -> int:
    """Parameters outside the head (its width follows the class count and the source model) and the blocks."""
    head = f"model.{len(model.model) - 1}."
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(head) and "cbam" not in name)


def _block_params(model: torch.nn.Module) -> dict[str, int]:
    return {block: _params(model.get_submodule(block)) for block in _blocks(model)}


def _assert_trained_with_blocks(run: Path, patched: Path, nc: int = 2) -> None:
    """Every block of the patched checkpoint, the same size; the rest a plain YOLOv8n; a head for ``nc`` classes."""
    from ultralytics.nn.tasks import DetectionModel

    inserted = _block_params(_saved_model(patched))
    assert list(inserted) == ["model.2.cbam_after", "model.4.cbam_after", "model.6.cbam_after", "model.8.cbam_after"]
    for name in ("last.pt", "best.pt"):
        model = _saved_model(run / "weights" / name)
        assert _block_params(model) == inserted
        assert _body_params(model) == _body_params(DetectionModel("yolov8n.yaml", nc=nc, verbose=False))
        assert model.model[-1].nc == model.yaml["nc"] == nc
        assert surgeon.recipe_of(model) is not None and integration.YAML_KEY in model.yaml


# ---------------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(("spec", "cls", "places"), [
    ("yolov8n.yaml", "DetectionModel", {"model.2": "backbone C2f", "model.9": "SPPF", "model.21": "P5 head input"}),
    ("yolo11n.yaml", "DetectionModel", {"model.8": "backbone C3k2", "model.16": "P3 head input"}),
    ("yolov8n-seg.yaml", "SegmentationModel", {"model.15": "P3 head input", "model.18": "P4 head input"}),
    ("yolo11n-cls.yaml", "ClassificationModel", {"model.4": "backbone C3k2"}),
])
def test_specs_build_from_ultralytics_yaml(spec: str, cls: str, places: dict[str, str]) -> None:
    model = build_arch(f"ultralytics:{spec}")
    assert type(model).__name__ == cls
    assert places.items() <= integration.places(model).items()
    loaded = load_model(f"ultralytics:{spec}")
    assert loaded.layout.framework == "ultralytics" and loaded.layout.key == "model" and loaded.layout.pickled


def test_sites_names_the_yolo_places() -> None:
    result = run_cli("sites", "ultralytics:yolov8n.yaml", "--input-shape", PROBE, "--json")
    assert result.exit_code == 0, result.output
    places = {site["name"]: site["place"] for site in json.loads(result.output)["sites"] if site["place"]}
    assert places == {"model.2": "backbone C2f", "model.4": "backbone C2f", "model.6": "backbone C2f",
                      "model.8": "backbone C2f", "model.9": "SPPF", "model.15": "P3 head input",
                      "model.18": "P4 head input", "model.21": "P5 head input"}


def test_spec_errors_are_one_line() -> None:
    with pytest.raises(ModelLoadError, match=r"give a model yaml .*--trust-pickle"):
        build_arch("ultralytics:yolov8n.pt")
    with pytest.raises(ModelLoadError, match="has no model yaml by that name"):
        build_arch("ultralytics:yolov99z.yaml")


def test_checkpoint_is_named_and_needs_trust_pickle(plain: Path) -> None:
    with pytest.raises(CheckpointError, match=r"is an Ultralytics checkpoint: .* Pass --trust-pickle"):
        load_model(plain)
    # Ultralytics' restricted loader now allows its classes in this process
    load_model(plain, LoadOptions(trust_pickle=True))
    with pytest.raises(CheckpointError, match=r"is an Ultralytics checkpoint: .* Pass --trust-pickle"):
        load_model(plain)
    result = run_cli("insert", str(plain), "--block", "cbam", "--after", "C2f")
    assert result.exit_code == 1
    assert f"{plain}: is an Ultralytics checkpoint" in result.output


def test_trusted_checkpoint_is_read_by_a_restricted_loader(plain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --trust-pickle, a plain Ultralytics checkpoint is read by a restricted loader first: Ultralytics' own, or
    torch's weights-only one once that loader has allowed Ultralytics' classes in this process. From 8.4.67 on
    (torch's weights-only unpickler with Ultralytics' classes allowed) that reads it whole, so nothing is fully
    unpickled; before, its allow-list unpickler stands placeholders in for the model's classes, and the file trusted
    with --trust-pickle is then unpickled in full."""
    import pickle

    import ultralytics
    import ultralytics.nn.tasks as tasks

    safe_only, loads = [], []
    original_safe_load, original_load = tasks.torch_safe_load, torch.load

    def spy_safe_load(weight: Any, safe_only_flag: Any = None, **kwargs: Any) -> Any:
        safe_only.append(kwargs.get("safe_only", safe_only_flag))
        return original_safe_load(weight, safe_only=kwargs.get("safe_only", safe_only_flag))

    def spy_load(*args: Any, **kwargs: Any) -> Any:
        loads.append((kwargs.get("weights_only"), kwargs.get("pickle_module", pickle)))
        return original_load(*args, **kwargs)

    monkeypatch.setattr(tasks, "torch_safe_load", spy_safe_load)
    monkeypatch.setattr(torch, "load", spy_load)
    loaded = load_model(plain, LoadOptions(trust_pickle=True))
    restricted = [weights_only is not False or module is not pickle for weights_only, module in loads]
    assert loads and all(safe_only) and restricted[0], loads
    if tuple(int(part) for part in ultralytics.__version__.split(".")[:3]) >= (8, 4, 67):
        assert all(restricted), loads
    assert type(loaded.module).__name__ == "DetectionModel" and loaded.layout.framework == "ultralytics"
    assert next(loaded.module.parameters()).dtype == torch.float32


def test_reading_installs_nothing_the_pipeline_installs_the_hook(patched: tuple[Path, str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a patched checkpoint leaves the training hook alone; loading it through the pipeline installs it,
    handing over the one replay path."""
    handed: list[Any] = []
    monkeypatch.setattr(integration.UltralyticsAdapter, "install_training_hooks",
                        lambda self, replay: handed.append(replay))
    read = read_model(patched[0], LoadOptions(trust_pickle=True))
    assert read.recipe is not None and read.layout.framework == "ultralytics" and handed == []
    load_model(patched[0], LoadOptions(trust_pickle=True))
    assert handed == [surgeon.replay]


# ---------------------------------------------------------------------------------------------------- output


def test_patching_reports_every_original_tensor(patched: tuple[Path, str], plain: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    original = len(DetectionModel("yolov8n.yaml", verbose=False).state_dict())
    found = re.search(r"transferred (\d+)/(\d+) original tensors, (\d+) new", patched[1])
    assert found and int(found[1]) == int(found[2]) == original and int(found[3]) > 0


def test_output_is_an_ultralytics_checkpoint(patched: tuple[Path, str], plain: Path) -> None:
    from ultralytics import YOLO

    written = torch.load(patched[0], map_location="cpu", weights_only=False)
    assert set(torch.load(plain, map_location="cpu", weights_only=False)) <= set(written)
    assert next(written["model"].parameters()).dtype == torch.float16  # as YOLO.save() writes it
    yolo = YOLO(patched[0])
    assert len(_blocks(yolo.model)) == 4 and yolo.task == "detect"
    results = yolo.predict(np.zeros((64, 64, 3), dtype=np.uint8), imgsz=64, verbose=False)
    assert len(results) == 1


def test_format_does_not_apply_to_an_ultralytics_checkpoint(tmp_path: Path) -> None:
    result = run_cli("insert", "ultralytics:yolov8n.yaml", "--block", "se", "--after", "SPPF",
                     "--input-shape", PROBE, "--profile", "off", "--format", "safetensors",
                     "-o", str(tmp_path / "out.safetensors"))
    assert result.exit_code == 1
    assert ("a model of ultralytics is saved in that framework's own layout; --format safetensors does not apply"
            in result.output)
    assert not (tmp_path / "out.safetensors").exists()


def test_surgeon_save_writes_an_ultralytics_checkpoint(tmp_path: Path) -> None:
    """``surgeon.save`` of a YOLO patched in memory writes what ``YOLO(path)`` loads, blocks and recipe included."""
    from ultralytics import YOLO

    model = build_arch("ultralytics:yolov8n.yaml")
    surgeon.apply(model, "yolo_sppf_cbam", input_shape=(1, 3, 64, 64))
    surgeon.save(model, tmp_path / "sppf.pt")
    yolo = YOLO(tmp_path / "sppf.pt")
    assert _blocks(yolo.model) == ["model.9.cbam_after"] and integration.YAML_KEY in yolo.model.yaml
    assert surgeon.recipe_of(yolo.model) is not None


def test_ultralytics_fusion_keeps_the_blocks(patched: tuple[Path, str]) -> None:
    from ultralytics import YOLO

    model = YOLO(patched[0]).model.eval()
    torch.nn.init.normal_(model.get_submodule("model.4.cbam_after").channel_gate.fc2.weight)  # not the identity
    image = torch.rand(1, 3, 64, 64)
    reference = model(image)[0]
    model.fuse(verbose=False)
    assert model.is_fused() and len(_blocks(model)) == 4
    torch.testing.assert_close(model(image)[0], reference, atol=1e-3, rtol=1e-3)


def test_fusing_a_rewritten_conv_raises_instead_of_dropping_its_block() -> None:
    """A block inside a Conv layer's own rewritten graph cannot survive Ultralytics' fuse (it deletes the BatchNorm
    and swaps in ``forward_fuse``): it fails loudly instead of predicting without the block."""
    from surgeon.errors import RewriteError

    model = build_arch("ultralytics:yolov8n.yaml")
    surgeon.insert(model, "cbam", after="model.1", input_shape=(1, 3, 64, 64))
    with pytest.raises(RewriteError, match="Conv.forward_fuse would replace the forward"):
        model.fuse(verbose=False)


# ---------------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(workdir: Path, patched: tuple[Path, str], data: Path) -> Path:
    """``YOLO('patched.pt').train(...)`` on a 2-class data set: the 80-class head is rebuilt, the blocks must stay."""
    from ultralytics import YOLO

    YOLO(patched[0]).train(data=str(data), project=str(workdir / "runs"), name="train", **TRAIN)
    return workdir / "runs" / "train"


def test_yolo_train_keeps_blocks_with_a_new_class_count(trained: Path, patched: tuple[Path, str]) -> None:
    _assert_trained_with_blocks(trained, patched[0], nc=2)


def test_trained_checkpoint_validates_predicts_and_exports(trained: Path, data: Path) -> None:
    from ultralytics import YOLO

    best = trained / "weights" / "best.pt"
    metrics = YOLO(best).val(data=str(data), imgsz=32, batch=4, workers=0, plots=False, device="cpu", verbose=False)
    assert hasattr(metrics, "box")
    yolo = YOLO(best)
    assert len(_blocks(yolo.model)) == 4
    assert len(yolo.predict(np.zeros((32, 32, 3), dtype=np.uint8), imgsz=32, verbose=False)) == 1


def test_onnx_export_runs_the_patched_network(trained: Path) -> None:
    if importlib.util.find_spec("onnxscript") is None:
        pytest.skip("onnxscript is not installed (the onnx and test extras add it)")
    import onnx
    from ultralytics import YOLO

    exported = YOLO(trained / "weights" / "best.pt").export(format="onnx", imgsz=64, simplify=False)
    nodes = [node.name for node in onnx.load(exported).graph.node]
    for block in ("model.2/cbam_after", "model.4/cbam_after", "model.6/cbam_after", "model.8/cbam_after"):
        assert any(f"/{block}/" in name for name in nodes), block


def test_plain_checkpoint_trains_as_before(workdir: Path, plain: Path, data: Path) -> None:
    """The hook is transparent to models attn-surgeon never patched."""
    from ultralytics import YOLO

    YOLO(plain).train(data=str(data), project=str(workdir / "runs"), name="plain", **TRAIN)
    model = _saved_model(workdir / "runs" / "plain" / "weights" / "last.pt")
    assert not _blocks(model) and surgeon.recipe_of(model) is None and integration.YAML_KEY not in model.yaml
    assert type(model).__mro__[1].__name__ == "BaseModel" and model.yaml["nc"] == 2


def test_model_a_yolo_holds_trains_with_blocks_patched_in_memory(workdir: Path, plain: Path, data: Path) -> None:
    """The README's Python route: patch the model a ``YOLO`` holds, then train it with Ultralytics."""
    from ultralytics import YOLO

    yolo = YOLO(plain)
    surgeon.apply(yolo.model, "yolo_sppf_cbam", input_shape=(1, 3, 64, 64))
    yolo.train(data=str(data), project=str(workdir / "runs"), name="in_memory", **TRAIN)
    for name in ("last.pt", "best.pt"):
        model = _saved_model(workdir / "runs" / "in_memory" / "weights" / name)
        assert _blocks(model) == ["model.9.cbam_after"] and integration.YAML_KEY in model.yaml


def test_yolo_command_trains_the_patched_network(workdir: Path, patched: tuple[Path, str], data: Path) -> None:
    from ultralytics.cfg import entrypoint

    run = workdir / "runs" / "cli"
    args = " ".join(f"{k}={v}" for k, v in {**TRAIN, "data": data, "project": run.parent, "name": run.name}.items())
    entrypoint(f"train model={patched[0]} {args}")
    _assert_trained_with_blocks(run, patched[0])


def test_resume_keeps_blocks(workdir: Path, patched: tuple[Path, str], data: Path) -> None:
    from ultralytics import YOLO

    class Interrupted(Exception):
        pass

    def stop_after_first_epoch(trainer: Any) -> None:
        if trainer.epoch == 1:
            raise Interrupted

    yolo = YOLO(patched[0])
    yolo.add_callback("on_train_epoch_start", stop_after_first_epoch)
    with pytest.raises(Interrupted):
        yolo.train(data=str(data), project=str(workdir / "runs"), name="resume", **{**TRAIN, "epochs": 2})
    last = workdir / "runs" / "resume" / "weights" / "last.pt"
    assert torch.load(last, map_location="cpu", weights_only=False)["optimizer"] is not None
    YOLO(last).train(resume=True)
    _assert_trained_with_blocks(workdir / "runs" / "resume", patched[0])


def test_ddp_child_script_rebuilds_the_patched_network(workdir: Path, patched: tuple[Path, str], data: Path) -> None:
    """The script Ultralytics' multi-GPU launcher runs in each child, run as is in a fresh process (on CPU it trains
    in that one process): it rebuilds the model from the checkpoint with no surgeon imported beforehand."""
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.dist import generate_ddp_file

    run = workdir / "runs" / "ddp"
    trainer = DetectionTrainer(overrides={**TRAIN, "model": str(patched[0]), "data": str(data),
                                          "project": str(run.parent), "name": run.name})
    script = generate_ddp_file(trainer)
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, script], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        Path(script).unlink(missing_ok=True)
        Path(script).with_suffix(".pt").unlink(missing_ok=True)
    _assert_trained_with_blocks(run, patched[0])


# ---------------------------------------------------------------------------------------------------- the hook


def test_ddp_state_file_carries_a_built_patched_model(patched: tuple[Path, str]) -> None:
    """``YOLO.train`` hands the launcher a model already built; the state file pickles it with cloudpickle."""
    cloudpickle = pytest.importorskip("cloudpickle")
    model = _saved_model(patched[0]).eval()
    copy = cloudpickle.loads(cloudpickle.dumps(model))
    image = torch.rand(1, 3, 64, 64)
    assert _blocks(copy) == _blocks(model) and len(_blocks(copy)) == 4
    torch.testing.assert_close(copy(image)[0], model(image)[0])


def test_model_built_from_a_patched_yaml_gets_its_blocks(patched: tuple[Path, str]) -> None:
    from ultralytics.nn.tasks import DetectionModel

    rebuilt = DetectionModel(_saved_model(patched[0]).yaml, nc=3, verbose=False)
    assert len(_blocks(rebuilt)) == 4 and surgeon.recipe_of(rebuilt) is not None


def test_model_patched_in_memory_gives_its_blocks_to_the_trainers_model() -> None:
    from ultralytics.nn.tasks import ClassificationModel

    source = build_arch("ultralytics:yolov8n-cls.yaml")
    surgeon.apply(source, "yolo_c2f_cbam", input_shape=(1, 3, 32, 32))
    target = ClassificationModel(build_arch("ultralytics:yolov8n-cls.yaml").yaml, nc=5, verbose=False)
    target.load(source)  # what every trainer's get_model does with the model it was given
    assert _blocks(target) == _blocks(source) and len(_blocks(target)) == 6
    assert integration.YAML_KEY in target.yaml


def test_weights_never_go_silently_into_a_model_without_blocks(patched: tuple[Path, str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics.nn.tasks import DetectionModel

    source = _saved_model(patched[0])
    target = DetectionModel("yolov8n.yaml", verbose=False)
    monkeypatch.setattr(hook, "_replay", lambda *args: None)  # as if replaying had been bypassed
    with pytest.raises(integration.UltralyticsHookError, match="without its blocks"):
        target.load(source)


def test_unknown_model_subclass_is_refused(patched: tuple[Path, str]) -> None:
    from ultralytics.nn.tasks import DetectionModel

    class Custom(DetectionModel):
        def __init__(self, cfg: Any, ch: int = 3, nc: int | None = None, verbose: bool = False) -> None:
            super().__init__(cfg, ch, nc, verbose)

    with pytest.raises(integration.UltralyticsHookError, match="replays them only in"):
        Custom(_saved_model(patched[0]).yaml)


def test_unchecked_ultralytics_version_fails_loudly(patched: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import ultralytics
    from ultralytics.nn.tasks import load_checkpoint

    monkeypatch.setattr(hook, "_installed", False)
    monkeypatch.setattr(ultralytics, "__version__", "9.1.0")
    with pytest.raises(integration.UltralyticsHookError, match="checked against Ultralytics 8.3, 8.4, not 9.1.0"):
        load_checkpoint(patched[0])
    monkeypatch.setenv("ATTN_SURGEON_ULTRALYTICS_UNCHECKED", "1")
    model, _ = load_checkpoint(patched[0])
    assert len(_blocks(model)) == 4


def test_importing_surgeon_does_not_import_ultralytics_but_hooks_it_once_imported() -> None:
    code = ("import sys, surgeon\n"
            "assert 'ultralytics' not in sys.modules, 'imported'\n"
            "from ultralytics.nn.tasks import BaseModel, DetectionModel\n"
            "from surgeon.integrations.ultralytics.training import _WRAPPED\n"
            "assert hasattr(vars(DetectionModel)['__init__'], _WRAPPED) and hasattr(BaseModel.load, _WRAPPED)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------------------------- presets


def _expected(preset: str, model: torch.nn.Module) -> int:
    places = integration.places(model)
    if preset == "yolo_c2f_cbam":
        return sum(type(m).__name__ == "Bottleneck" and m.add for m in model.modules())
    role = {"yolo_backbone_cbam": "backbone", "yolo_sppf_cbam": "SPPF", "yolo_neck_cbam": "head input"}[preset]
    return sum(role in value for value in places.values())


PRESETS = ("yolo_backbone_cbam", "yolo_c2f_cbam", "yolo_sppf_cbam", "yolo_neck_cbam")


@pytest.mark.parametrize("spec", ["yolov8n.yaml", "yolov8s.yaml", "yolov8s-seg.yaml", "yolo11n.yaml",
                                  "yolo11n-seg.yaml", "yolo11s.yaml"])
def test_presets_put_blocks_where_named(spec: str) -> None:
    from surgeon.rules import load_rules

    model = build_arch(f"ultralytics:{spec}")
    expected = {preset: _expected(preset, model) for preset in PRESETS}
    rules = {preset: load_rules(preset) for preset in PRESETS}
    surgeon.run_surgery(model, [rule for preset in PRESETS for rule in rules[preset]], input_shape=(1, 3, 64, 64))
    steps = surgeon.recipe_of(model).steps
    for preset in PRESETS:
        mine = [step for step in steps if step.rule == rules[preset][0].name]
        assert len(mine) == expected[preset] > 0, preset
        if preset != "yolo_c2f_cbam":
            assert {step.site for step in mine} <= set(integration.places(model)), preset


# The newer blocks at the places of the CBAM presets: (preset, block, CBAM preset whose places it takes)
NEWER = (("yolo_c2f_ema", "ema", "yolo_c2f_cbam"), ("yolo_sppf_lska", "lska", "yolo_sppf_cbam"),
         ("yolo_neck_scsa", "scsa", "yolo_neck_cbam"))


@pytest.mark.parametrize("spec", ["yolov8n.yaml", "yolo11n.yaml", "yolov8s-seg.yaml"])
def test_newer_block_presets_take_the_cbam_presets_places(spec: str) -> None:
    from surgeon.rules import load_rules

    base = build_arch(f"ultralytics:{spec}").eval()
    x = torch.rand(1, 3, 256, 256)  # SCSA's 7x7 windows need P5 >= 7x7
    with torch.no_grad():
        expected = base(x)
    for preset, block, places_of in NEWER:
        model = build_arch(f"ultralytics:{spec}")
        model.load_state_dict(base.state_dict())
        surgeon.apply(model, preset, input_shape=(1, 3, 256, 256), init="identity")
        steps = surgeon.recipe_of(model).steps
        assert len(steps) == _expected(places_of, model) > 0, preset
        assert {step.block for step in steps} == {block}, preset
        assert [step.rule for step in steps] == [load_rules(preset)[0].name] * len(steps)
        with torch.no_grad():  # identity init: the same detections as the plain model
            torch.testing.assert_close(model.eval()(x)[0], expected[0])


# rules/README.md's table: (blocks, parameters added) per preset on YOLOv8n and YOLO11n, identity init
ADDED = {"yolov8n.yaml": {"yolo_backbone_cbam": (4, 11_794), "yolo_c2f_cbam": (6, 4_323), "yolo_sppf_cbam": (1, 8_565),
                          "yolo_neck_cbam": (3, 11_531), "yolo_c2f_ema": (6, 4_374), "yolo_sppf_lska": (1, 69_888),
                          "yolo_neck_scsa": (3, 7_171)},
         "yolo11n.yaml": {"yolo_backbone_cbam": (4, 13_816), "yolo_c2f_cbam": (11, 5_288), "yolo_sppf_cbam": (1, 8_565),
                          "yolo_neck_cbam": (3, 11_531), "yolo_c2f_ema": (11, 4_795), "yolo_sppf_lska": (1, 69_888),
                          "yolo_neck_scsa": (3, 7_171)}}


@pytest.mark.parametrize("spec", list(ADDED))
def test_preset_parameter_counts_as_documented(spec: str) -> None:
    for preset, (blocks, added) in ADDED[spec].items():
        model = build_arch(f"ultralytics:{spec}")
        before = sum(p.numel() for p in model.parameters())
        surgeon.apply(model, preset, input_shape=(1, 3, 256, 256))
        assert len(surgeon.recipe_of(model).steps) == blocks, preset
        assert sum(p.numel() for p in model.parameters()) - before == added, preset


@pytest.mark.parametrize("preset", ["yolo_backbone_cbam", "yolo_c2f_cbam"])
def test_classification_presets(preset: str) -> None:
    model = build_arch("ultralytics:yolo11n-cls.yaml")
    expected = _expected(preset, model)
    surgeon.apply(model, preset, input_shape=(1, 3, 32, 32))
    assert len(surgeon.recipe_of(model).steps) == expected > 0


@pytest.mark.slow
def test_classification_training_keeps_blocks(workdir: Path) -> None:
    from ultralytics import YOLO

    out = workdir / "cls_cbam.pt"
    result = run_cli("apply", "ultralytics:yolov8n-cls.yaml", "yolo_c2f_cbam", "--input-shape",
                     "1,3,32,32", "--profile", "off", "-o", str(out))
    assert result.exit_code == 0, result.output
    root = write_classify_dataset(workdir / "cls", classes=3)
    YOLO(out).train(data=str(root), project=str(workdir / "runs"), name="cls", **TRAIN)
    model = _saved_model(workdir / "runs" / "cls" / "weights" / "last.pt")
    assert len(_blocks(model)) == 6 and model.yaml["nc"] == 3


def test_profile_states_gflops_as_model_info_does(patched: tuple[Path, str]) -> None:
    from ultralytics import YOLO

    result = run_cli("profile", "ultralytics:yolov8n.yaml", "--compare", str(patched[0]),
                     "--trust-pickle", "--runs", "0", "--input-shape", PROBE, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    reported = YOLO(patched[0]).info()[3]  # (layers, parameters, gradients, GFLOPs) at 640, as it prints them
    for row in report["models"]:
        counted = row["framework_flops"]
        assert counted["framework"] == "ultralytics" and counted["counter"] == "model.info()"
        assert counted["input_shape"] == [3, 640, 640] and counted["gflops"] > 0 and counted["reported_gflops"] > 0
    assert report["models"][1]["framework_flops"]["reported_gflops"] == pytest.approx(reported)
    assert any("model.info() reports" in note for note in report["notes"])


@pytest.mark.slow
def test_yolo_example_runs(tmp_path: Path) -> None:
    """examples/yolo/run.py: the README's three commands, each in a fresh process, on CPU."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "examples" / "yolo" / "run.py"), "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Weights: transferred 355/355 original tensors, 66 new" in done.stdout  # as the README quotes it
    assert "6 CBAM blocks after Ultralytics' training" in done.stdout
    seconds = re.search(r"; (\d+) s in all", done.stdout)
    assert seconds and int(seconds[1]) < 60, "the README promises under a minute on CPU"
