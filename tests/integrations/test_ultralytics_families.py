"""Every Ultralytics generation and task, RT-DETR with its own trainer, and the attention inside their own blocks.

One model of each generation (YOLOv3u, v5u, v6, v8, v9, v10, YOLO11, YOLO12, YOLO26, RT-DETR) and of each task
(segment, pose, OBB, classify) is patched by the command line, trained by Ultralytics' own entry points on a
generated data set with another class count, and checked: every block in ``last.pt`` and ``best.pt`` (which
Ultralytics validated fused), predictions, ONNX export. The full round trips are ``slow``; the default run keeps
what a change is likeliest to break: the specs, the places, the swaps, RT-DETR's trainer and a swapped YOLO11.
Nothing reaches the network (test_ultralytics' module guard); training is one epoch at 32 px, AMP off.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import surgeon
from examples.yolo import tiny_dataset
from surgeon.integrations.ultralytics.reporting import places
from surgeon.io import build_arch
from tests._util import REPO, run_cli
from tests.integrations.test_ultralytics import offline  # noqa: F401  the module-wide no-network guard (autouse)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="ultralytics not installed")

TRAIN = {"epochs": 1, "imgsz": 32, "batch": 4, "workers": 0, "plots": False, "amp": False, "device": "cpu",
         "verbose": False, "exist_ok": True, "seed": 0}
PROBE = "1,3,64,64"
# YOLOv3-tiny's head reads strides 16 and 32 only: at 32 px that is 5 anchors, fewer than its assigner's top 10
IMGSZ = {"yolov3-tinyu.yaml": 64}
CLASSES = 3  # not the yaml's 80: the head is rebuilt, the blocks must stay

# One model of each generation: (spec, model class, where the CBAM goes, the places `sites` names there)
GENERATIONS = [
    ("yolov3-tinyu.yaml", "DetectionModel", "model.17", {}),  # its neck's upsampling: its Convs fuse (forward_fuse)
    ("yolov5nu.yaml", "DetectionModel", "SPPF", {"model.2": "backbone C3", "model.9": "SPPF"}),
    ("yolov6n.yaml", "DetectionModel", "SPPF", {"model.9": "SPPF", "model.19": "P3 head input"}),
    ("yolov8n.yaml", "DetectionModel", "bottleneck", {"model.2": "backbone C2f", "model.21": "P5 head input"}),
    ("yolov9t.yaml", "DetectionModel", "SPPELAN", {"model.4": "backbone RepNCSPELAN4", "model.9": "SPPELAN"}),
    ("yolov10n.yaml", "DetectionModel", "bottleneck",
     {"model.10": "PSA attention", "model.10.attn": "Attention in PSA"}),
    ("yolo11n.yaml", "DetectionModel", "SPPF", {"model.10.m.0.attn": "Attention in C2PSA"}),
    ("yolo12n.yaml", "DetectionModel", "model.6", {"model.6": "backbone A2C2f", "model.6.m.0.0.attn": "AAttn in A2C2f",
                                                   "model.14": "P3 head input"}),
    ("yolo26n.yaml", "DetectionModel", "SPPF", {"model.9": "SPPF", "model.10": "C2PSA attention"}),
    ("rtdetr-l.yaml", "RTDETRDetectionModel", "bottleneck",
     {"model.1": "backbone HGBlock", "model.11": "AIFI attention", "model.27": "P5 head input"}),
]
# One model of each other task: (spec, task, where the CBAM goes)
TASKS = [("yolo26n-seg.yaml", "segment", "SPPF"), ("yolo11n-pose.yaml", "pose", "SPPF"),
         ("yolov8n-obb.yaml", "obb", "bottleneck"), ("yolo12n-cls.yaml", "classify", "model.2")]
WRITERS = {"detect": tiny_dataset.write_detect_dataset, "segment": tiny_dataset.write_segment_dataset,
           "pose": tiny_dataset.write_pose_dataset, "obb": tiny_dataset.write_obb_dataset,
           "classify": tiny_dataset.write_classify_dataset}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


def _data(workdir: Path, task: str) -> Path:
    """The generated data set of ``task`` (written once per module)."""
    root = workdir / f"data-{task}"
    written = root / "data.yaml" if task != "classify" else root
    return written if written.exists() else WRITERS[task](root, classes=CLASSES)


def _patch(workdir: Path, spec: str, *args: str) -> Path:
    """``attn-surgeon ARGS`` on ``ultralytics:SPEC``, writing an Ultralytics checkpoint; its path."""
    out = workdir / f"{Path(spec).stem}-{re.sub(r'[^A-Za-z0-9]+', '_', '-'.join(args))}.pt"
    result = run_cli(*args[:1], f"ultralytics:{spec}", *args[1:], "--input-shape", PROBE, "--profile", "off",
                     "-o", out, "--force")
    assert result.exit_code == 0, result.output
    return out


def _saved(path: Path) -> torch.nn.Module:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return (checkpoint.get("ema") or checkpoint["model"]).float()


def _inserted(model: torch.nn.Module) -> dict[str, int]:
    """The blocks the recipe put in, by qualified name, with their parameter counts."""
    recipe = surgeon.recipe_of(model)
    assert recipe is not None
    modules = dict(model.named_modules())
    return {step.module: sum(p.numel() for p in modules[step.module].parameters()) for step in recipe.steps}


def _engine(spec: str) -> Any:
    from ultralytics import RTDETR, YOLO

    return RTDETR if "rtdetr" in spec else YOLO


def _train(workdir: Path, spec: str, patched: Path, task: str, name: str) -> Path:
    """``YOLO(patched).train(...)`` (``RTDETR`` for RT-DETR) on the task's generated data; the run directory."""
    run = workdir / "runs" / name
    train = {**TRAIN, "imgsz": IMGSZ.get(spec, TRAIN["imgsz"])}
    _engine(spec)(patched).train(data=str(_data(workdir, task)), project=str(run.parent), name=run.name, **train)
    return run


def _assert_kept(run: Path, patched: Path, task: str) -> None:
    """Every block of ``patched`` in both checkpoints of the run, the same size, on a head for the new classes."""
    blocks = _inserted(_saved(patched))
    assert blocks
    for name in ("last.pt", "best.pt"):
        model = _saved(run / "weights" / name)
        assert _inserted(model) == blocks, name
        assert len(model.names) == CLASSES, name


# ---------------------------------------------------------------------------------------------------- specs


@pytest.mark.parametrize(("spec", "cls", "after", "named"), GENERATIONS, ids=[g[0] for g in GENERATIONS])
def test_every_generation_builds_with_its_class_and_places(spec: str, cls: str, after: str,
                                                          named: dict[str, str]) -> None:
    model = build_arch(f"ultralytics:{spec}")
    assert type(model).__name__ == cls
    assert named.items() <= places(model).items()


def test_rtdetr_sites_and_insert_from_the_command_line(workdir: Path) -> None:
    """The issue's commands: RT-DETR is built by ``RTDETR``, not ``YOLO`` (which has no task for it)."""
    shown = run_cli("sites", "ultralytics:rtdetr-l.yaml", "--input-shape", PROBE, "--kind", "all")
    assert shown.exit_code == 0, shown.output
    assert "AIFI attention" in shown.output and "backbone HGBlock" in shown.output
    model = _saved(_patch(workdir, "rtdetr-l.yaml", "insert", "--block", "cbam", "--after", "bottleneck"))
    assert type(model).__name__ == "RTDETRDetectionModel"
    # RepC3's RepConv adds parallel conv branches that Ultralytics' fuse() folds into one conv: no residual unit
    assert not any(type(model.get_submodule(name.rpartition(".")[0])).__name__ == "RepConv"
                   for name in _inserted(model))


def test_presets_on_yolo12_and_yolo26() -> None:
    """Every YOLO preset fits YOLO26 (YOLO11's layout); on YOLO12 the backbone and C2f presets fit, and the others
    refuse in one line: it has no SPPF and no C2PSA, and its head inputs are other layers (14, 17, 20)."""
    from surgeon.errors import SurgeonError

    presets = ("yolo_backbone_cbam", "yolo_c2f_cbam", "yolo_sppf_cbam", "yolo_neck_cbam", "yolo_c2f_ema",
               "yolo_sppf_lska", "yolo_neck_scsa", "yolo_c2psa_ema")
    refused_on_yolo12 = {"yolo_sppf_cbam", "yolo_neck_cbam", "yolo_sppf_lska", "yolo_neck_scsa", "yolo_c2psa_ema"}
    for spec in ("yolo12n.yaml", "yolo26n.yaml"):
        for preset in presets:
            model = build_arch(f"ultralytics:{spec}")
            if spec == "yolo12n.yaml" and preset in refused_on_yolo12:
                with pytest.raises(SurgeonError, match="no site matches") as refused:
                    surgeon.apply(model, preset, input_shape=(1, 3, 64, 64))
                assert "\n" not in str(refused.value)
                continue
            surgeon.apply(model, preset, input_shape=(1, 3, 64, 64))
            assert surgeon.recipe_of(model).steps, (spec, preset)


# ---------------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize(("spec", "cls", "block", "count"), [
    ("yolo11n.yaml", "Attention", "ema", 1), ("yolo12n.yaml", "AAttn", "scsa", 8), ("rtdetr-l.yaml", "AIFI", "ema", 1),
])
def test_swap_replaces_the_attention_inside_their_blocks(spec: str, cls: str, block: str, count: int) -> None:
    """``sites`` calls these residual units (they add a conv branch or their input to their output); ``swap
    --module`` takes every module of the class whatever its kind, and keeps every other key."""
    model = build_arch(f"ultralytics:{spec}")
    before = set(model.state_dict())
    surgeon.swap(model, block, module=cls, input_shape=(1, 3, 64, 64))
    steps = surgeon.recipe_of(model).steps
    assert len(steps) == count and {step.op for step in steps} == {"replace"}
    assert all(type(model.get_submodule(step.module)).__name__ != cls for step in steps)
    removed = {key for step in steps for key in step.removed_keys}
    assert removed and all(any(key.startswith(f"{step.site}.") for step in steps) for key in removed)
    after = set(model.state_dict())
    assert before - removed <= after and not removed & after
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 64, 64))


def test_c2psa_ema_preset_parameter_counts() -> None:
    """rules/yolo_c2psa_ema.yaml, as rules/README.md lists it: (blocks, parameters added) per model."""
    expected = {"yolo11n.yaml": (1, -48_704), "yolo26n.yaml": (2, -97_408), "yolov10n.yaml": (1, -48_704)}
    for spec, (blocks, added) in expected.items():
        model = build_arch(f"ultralytics:{spec}")
        count = sum(p.numel() for p in model.parameters())
        surgeon.apply(model, "yolo_c2psa_ema", input_shape=(1, 3, 64, 64))
        assert len(surgeon.recipe_of(model).steps) == blocks, spec
        assert sum(p.numel() for p in model.parameters()) - count == added, spec


# ---------------------------------------------------------------------------------------------------- training


def test_rtdetr_trains_with_its_own_trainer_and_keeps_its_blocks(workdir: Path) -> None:
    from ultralytics.models.rtdetr.train import RTDETRTrainer

    patched = _patch(workdir, "rtdetr-l.yaml", "insert", "--block", "cbam", "--after", "bottleneck")
    engine = _engine("rtdetr-l.yaml")(patched)
    assert engine.task_map["detect"]["trainer"] is RTDETRTrainer
    run = workdir / "runs" / "rtdetr"
    engine.train(data=str(_data(workdir, "detect")), project=str(run.parent), name=run.name, **TRAIN)
    _assert_kept(run, patched, "detect")
    assert type(engine.trainer).__name__ == "RTDETRTrainer"


def test_swapped_attention_trains(workdir: Path) -> None:
    """EMA in place of C2PSA's Attention (the preset), through ``YOLO.train``: the replaced keys stay gone."""
    patched = _patch(workdir, "yolo11n.yaml", "apply", "yolo_c2psa_ema")
    run = _train(workdir, "yolo11n.yaml", patched, "detect", "c2psa-ema")
    _assert_kept(run, patched, "detect")
    model = _saved(run / "weights" / "last.pt")
    assert type(model.get_submodule("model.10.m.0.attn")).__name__ == "EfficientMultiScaleAttention"
    assert not any(key.startswith("model.10.m.0.attn.qkv") for key in model.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "cls", "block"),
                         [("yolo12n.yaml", "AAttn", "scsa"), ("rtdetr-l.yaml", "AIFI", "ema")])
def test_swapped_attention_trains_in_yolo12_and_rtdetr(workdir: Path, spec: str, cls: str, block: str) -> None:
    patched = _patch(workdir, spec, "swap", "--module", cls, "--with", block)
    run = _train(workdir, spec, patched, "detect", f"swap-{cls}")
    _assert_kept(run, patched, "detect")
    model = _saved(run / "weights" / "best.pt")
    assert not any(type(module).__name__ == cls for module in model.modules())


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "cls", "after", "named"), GENERATIONS, ids=[g[0] for g in GENERATIONS])
def test_every_generation_round_trip(workdir: Path, spec: str, cls: str, after: str, named: dict[str, str]) -> None:
    """Patch, train with another class count, validate fused, predict, export to ONNX."""
    patched = _patch(workdir, spec, "insert", "--block", "cbam", "--after", after)
    run = _train(workdir, spec, patched, "detect", Path(spec).stem)
    _assert_kept(run, patched, "detect")
    _predicts_validates_exports(workdir, spec, run / "weights" / "best.pt", "detect")


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "task", "after"), TASKS, ids=[t[1] for t in TASKS])
def test_every_task_round_trip(workdir: Path, spec: str, task: str, after: str) -> None:
    patched = _patch(workdir, spec, "insert", "--block", "cbam", "--after", after)
    run = _train(workdir, spec, patched, task, task)
    _assert_kept(run, patched, task)
    _predicts_validates_exports(workdir, spec, run / "weights" / "best.pt", task)


def _predicts_validates_exports(workdir: Path, spec: str, best: Path, task: str) -> None:
    engine = _engine(spec)
    size = 32 if task == "classify" else 64
    metrics = engine(best).val(data=str(_data(workdir, task)), imgsz=size, batch=4, workers=0, plots=False,
                               device="cpu", verbose=False)
    assert metrics is not None
    model = engine(best)
    assert len(model.predict(np.zeros((size, size, 3), dtype=np.uint8), imgsz=size, verbose=False)) == 1
    fused = _saved(best).fuse(verbose=False)  # Ultralytics' conv+BN fusion keeps every block
    assert set(_inserted(fused)) == set(_inserted(_saved(best)))
    if importlib.util.find_spec("onnxscript") is None:
        return
    import onnx

    exported = engine(best).export(format="onnx", imgsz=size, simplify=False)
    nodes = [node.name for node in onnx.load(exported).graph.node]
    for block in _inserted(_saved(best)):  # the exporter names nodes by module scope: .../model.9/cbam_after/...
        assert any(f"/{block.rpartition('.')[2]}/" in name for name in nodes), block


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["rtdetr-l.yaml", "yolo12n.yaml"])
def test_yolo_command_trains_and_resumes(workdir: Path, spec: str) -> None:
    """``yolo train`` (RT-DETR's stem picks RTDETR there too), then a resumed run: the blocks stay."""
    from ultralytics.cfg import entrypoint

    patched = _patch(workdir, spec, "insert", "--block", "cbam", "--after", "bottleneck")
    run = workdir / "runs" / f"cli-{Path(spec).stem}"
    args = {**TRAIN, "epochs": 2, "data": _data(workdir, "detect"), "project": run.parent, "name": run.name}

    class Interrupted(Exception):
        pass

    def stop_after_first_epoch(trainer: Any) -> None:
        if trainer.epoch == 1:
            raise Interrupted

    engine = _engine(spec)(patched)
    engine.add_callback("on_train_epoch_start", stop_after_first_epoch)
    with pytest.raises(Interrupted):
        engine.train(**{key: str(value) if isinstance(value, Path) else value for key, value in args.items()})
    entrypoint(f"train resume model={run / 'weights' / 'last.pt'}")
    _assert_kept(run, patched, "detect")
    fresh = workdir / "runs" / f"cli-fresh-{Path(spec).stem}"
    line = " ".join(f"{k}={v}" for k, v in {**args, "epochs": 1, "project": fresh.parent, "name": fresh.name}.items())
    entrypoint(f"train model={patched} {line}")
    _assert_kept(fresh, patched, "detect")


# ---------------------------------------------------------------------------------------------------- user blocks

_USER_BLOCK = '''
import torch
from torch import nn


class Gain(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
'''


@pytest.fixture(scope="module")
def user_block(workdir: Path) -> tuple[Path, Path]:
    """A YOLO11n checkpoint with a block from the user's own module (``famblocks:Gain``), and that module's folder."""
    folder = workdir / "userpkg"
    folder.mkdir()
    (folder / "famblocks.py").write_text(_USER_BLOCK)
    sys.path.insert(0, str(folder))
    try:
        out = _patch(workdir, "yolo11n.yaml", "insert", "--block", "famblocks:Gain", "--after", "SPPF",
                     "--trust-code")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("famblocks", None)
    return out, folder


def _python(code: str, cwd: Path, *path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (REPO, *path)))}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_user_block_missing_its_module_fails_in_one_line(user_block: tuple[Path, Path], workdir: Path) -> None:
    """Where the user's module cannot be imported, loading the model names it; Ultralytics never gets to try
    installing a package of that name."""
    done = _python(f"from ultralytics import YOLO\nYOLO({str(user_block[0])!r})", workdir)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("surgeon.errors.BlockError: this model holds the block famblocks:Gain, and its module "
                           "'famblocks' cannot be imported here"), done.stderr[-2000:]
    assert "AutoInstall" not in done.stderr


@pytest.mark.slow
def test_user_block_survives_every_way_ultralytics_trains(user_block: tuple[Path, Path], workdir: Path) -> None:
    """``YOLO.train``, ``yolo train`` and the DDP launcher's child script, each in a process that imports the
    user's module from PYTHONPATH, as a user's project would."""
    patched, folder = user_block
    data = _data(workdir, "detect")
    run = workdir / "runs" / "user"
    train = {**TRAIN, "data": str(data), "project": str(run)}
    code = f"""
from ultralytics import YOLO
from ultralytics.cfg import entrypoint
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils.dist import generate_ddp_file
import subprocess, sys
train = {train!r}
YOLO({str(patched)!r}).train(name="python", **train)
entrypoint("train model={patched} name=cli " + " ".join(f"{{k}}={{v}}" for k, v in train.items()))
script = generate_ddp_file(DetectionTrainer(overrides={{**train, "model": {str(patched)!r}, "name": "ddp"}}))
subprocess.run([sys.executable, script], check=True)
"""
    done = _python(code, workdir, folder)
    assert done.returncode == 0, done.stderr[-3000:]
    sys.path.insert(0, str(folder))
    try:
        for name in ("python", "cli", "ddp"):
            _assert_kept(run / name, patched, "detect")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("famblocks", None)
