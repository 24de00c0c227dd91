"""``ablate``'s Ultralytics trainer on a generated detection set: 1 epoch at 32 px, nothing downloaded.

Seed 0 twice and seed 1 once: the same seed gives the same metrics and the same trained weights, another seed other
weights; the trained checkpoints keep their blocks; the arguments arrive as ``yolo train`` would parse them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import torch

import surgeon
from examples.yolo.tiny_dataset import write_detect_dataset
from surgeon.errors import SurgeonError
from surgeon.io import build_arch
from tests._util import run_cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="ultralytics not installed")

ARGS = {"epochs": "1", "imgsz": "32", "batch": "4", "workers": "0", "plots": "False", "amp": "False", "device": "cpu",
        "verbose": "False"}
BLOCK = "model.9.cbam_after"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "", None)


@pytest.fixture(scope="module", autouse=True)
def offline() -> Any:
    """Name lookups of other hosts are refused and recorded (the module fails on any); Ultralytics finds its plot
    font in its (temporary, see conftest) config directory instead of fetching Arial."""
    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    assert "ultralytics-config" in str(USER_CONFIG_DIR), USER_CONFIG_DIR  # never the user's own directory
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (USER_CONFIG_DIR / name).exists():
            shutil.copyfile(font, USER_CONFIG_DIR / name)
    attempts: list[str] = []
    lookup = socket.getaddrinfo

    def local_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in _LOCAL_HOSTS:
            return lookup(host, *args, **kwargs)
        attempts.append(str(host))
        raise OSError(f"test_ultralytics_trainer: {host} is not reachable from the tests")

    patch = pytest.MonkeyPatch()
    patch.setattr(socket, "getaddrinfo", local_only)
    yield
    patch.undo()
    assert not attempts, f"tried to reach: {attempts}"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainer")


@pytest.fixture(scope="module")
def args(work: Path) -> dict[str, str]:
    return {"data": str(write_detect_dataset(work / "data", classes=2)), **ARGS}


@pytest.fixture(scope="module")
def patched() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_arch("ultralytics:yolov8n.yaml")
    return surgeon.apply(model, "yolo_sppf_cbam", input_shape=(1, 3, 64, 64))


@pytest.fixture(scope="module")
def trials(work: Path, args: dict[str, str], patched: torch.nn.Module) -> dict[str, tuple[dict[str, float], Path]]:
    """``{"0": ..., "0 again": ..., "1": ...}``: each trial's metrics and its workdir."""
    from surgeon.integrations.ultralytics.trainer import train

    before = {key: value.clone() for key, value in patched.state_dict().items()}
    deterministic = torch.are_deterministic_algorithms_enabled()
    runs = {}
    for name, seed in (("0", 0), ("0 again", 0), ("1", 1)):
        workdir = work / f"seed {name}"
        runs[name] = train(patched, seed=seed, workdir=workdir, args=args), workdir
        assert torch.are_deterministic_algorithms_enabled() == deterministic  # the caller's setting is back
    after = patched.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)  # the arm's model itself is not trained
    return runs


def _weights(workdir: Path, name: str = "best.pt") -> dict[str, torch.Tensor]:
    checkpoint = torch.load(workdir / "train" / "weights" / name, map_location="cpu", weights_only=False)
    return (checkpoint.get("ema") or checkpoint["model"]).float().state_dict()


def _curves(workdir: Path) -> list[list[str]]:
    """results.csv without its wall-time column."""
    lines = [line.split(",") for line in (workdir / "train" / "results.csv").read_text().splitlines()]
    keep = [i for i, column in enumerate(lines[0]) if column.strip() != "time"]
    return [[line[i].strip() for i in keep] for line in lines]


def test_returns_the_final_validation_metrics(trials: dict[str, tuple[dict[str, float], Path]]) -> None:
    metrics, _ = trials["0"]
    assert next(iter(metrics)) == "metrics/mAP50-95(B)"  # the compared metric first: the default of a detection model
    assert {"metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)"} <= set(metrics)
    assert all(isinstance(value, float) for value in metrics.values())


def test_same_seed_same_metrics_and_weights(trials: dict[str, tuple[dict[str, float], Path]]) -> None:
    (first, a), (again, b), (_, other) = trials["0"], trials["0 again"], trials["1"]
    assert first == again
    assert _curves(a) == _curves(b)
    weights, repeated, reseeded = _weights(a), _weights(b), _weights(other)
    assert all(torch.equal(weights[key], repeated[key]) for key in weights)
    assert not all(torch.equal(weights[key], reseeded[key]) for key in weights)  # the seed reached the trainer


def test_trained_checkpoints_keep_their_blocks(trials: dict[str, tuple[dict[str, float], Path]]) -> None:
    from ultralytics import YOLO

    _, workdir = trials["1"]
    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(workdir / "train" / "weights" / name, map_location="cpu", weights_only=False)
        model = checkpoint.get("ema") or checkpoint["model"]
        assert type(model.get_submodule(BLOCK)).__name__ == "CBAM" and surgeon.recipe_of(model) is not None
        assert model.yaml["nc"] == 2  # trained on the 2-class set: the head was rebuilt, the block kept
    assert BLOCK in dict(YOLO(workdir / "train" / "weights" / "best.pt").model.named_modules())
    assert surgeon.recipe_of(torch.load(workdir / "initial.pt", weights_only=False)["model"]) is not None


def test_an_unpatched_model_trains_as_ultralytics_writes_it(work: Path, args: dict[str, str]) -> None:
    from surgeon.integrations.ultralytics.trainer import train

    metrics = train(build_arch("ultralytics:yolov8n.yaml"), seed=0, workdir=work / "plain", args=args,
                    metric="metrics/mAP50(B)")
    assert next(iter(metrics)) == "metrics/mAP50(B)" and "metrics/mAP50-95(B)" in metrics
    model = torch.load(work / "plain" / "train" / "weights" / "last.pt", weights_only=False)["model"]
    assert surgeon.recipe_of(model) is None and not any("cbam" in name for name, _ in model.named_modules())


def test_arguments_are_parsed_as_yolo_parses_them(tmp_path: Path) -> None:
    from surgeon.integrations.ultralytics.trainer import train_overrides

    overrides = train_overrides({"data": "coco8.yaml", "epochs": "3", "amp": "False", "lr0": "0.02",
                                 "device": "none", "name_prefix": "x"}, seed=7, workdir=tmp_path)
    assert overrides == {"data": "coco8.yaml", "epochs": 3, "amp": False, "lr0": 0.02, "device": None,
                         "name_prefix": "x", "seed": 7, "deterministic": True, "project": str(tmp_path),
                         "name": "train", "exist_ok": True}


@pytest.mark.parametrize(("given", "message"), [
    ({"data": "d.yaml", "seed": "3"}, ("train args: ablate sets seed itself for every trial; remove it from "
                                      "--train-args")),
    ({"data": "d.yaml", "project": "p", "name": "n"}, "train args: ablate sets name, project itself"),
    ({"epochs": "3"}, "train args: no data; pass the data set as yolo train takes it"),
])
def test_arguments_ablate_sets_are_refused(given: dict[str, str], message: str, tmp_path: Path) -> None:
    from surgeon.integrations.ultralytics.trainer import train_overrides

    with pytest.raises(SurgeonError, match=message.replace("(", r"\(")):
        train_overrides(given, seed=0, workdir=tmp_path)


def test_a_metric_the_trainer_does_not_report_is_refused(work: Path, args: dict[str, str],
                                                         patched: torch.nn.Module) -> None:
    from surgeon.integrations.ultralytics.trainer import train

    with pytest.raises(SurgeonError, match=r"metric 'accuracy' is not one Ultralytics' trainer reports; it reports "
                                           r"metrics/precision\(B\), "):
        train(patched, seed=0, workdir=work / "unknown metric", args=args, metric="accuracy")


def test_a_model_of_another_framework_is_refused(tmp_path: Path) -> None:
    from surgeon.integrations.ultralytics.trainer import train

    with pytest.raises(SurgeonError, match="the ultralytics trainer trains Ultralytics models; this is a Linear"):
        train(torch.nn.Linear(2, 2), seed=0, workdir=tmp_path, args={"data": "d.yaml"})


def test_ablate_trains_each_arm_through_the_adapter(work: Path, args: dict[str, str], tmp_path: Path) -> None:
    """``attn-surgeon ablate`` on a YOLO spec: Ultralytics' trainer by default (the framework adapter's ``train``),
    every trial in its own process, the compared metric mAP50-95, Ultralytics' GFLOPs beside ours, blocks kept."""
    experiment = tmp_path / "ablate"
    train_args = " ".join(f"{key}={value}" for key, value in args.items())
    result = run_cli("ablate", "ultralytics:yolov8n.yaml", "--blocks", "cbam", "--after", "SPPF", "--seeds", "2",
                     "--input-shape", "1,3,64,64", "--train-args", train_args, "-o", experiment)
    assert result.exit_code == 0, result.output
    results = json.loads((experiment / "results.json").read_text())
    arms = {arm["name"]: arm for arm in results["arms"]}
    assert list(arms) == ["baseline", "cbam"] and results["trainer"] == "ultralytics"
    for arm in arms.values():
        assert [trial["status"] for trial in arm["trials"]] == ["done", "done"], arm["trials"]
        assert all("metrics/mAP50-95(B)" in trial["metrics"] for trial in arm["trials"])
        assert arm["gflops_framework"] is not None
    assert arms["cbam"]["params"] > arms["baseline"]["params"]
    trained = sorted((experiment / "trials" / "cbam" / "seed-0").rglob("weights/last.pt"))
    assert len(trained) == 1, trained
    checkpoint = torch.load(trained[0], map_location="cpu", weights_only=False)
    assert any(key.startswith(BLOCK) for key in checkpoint["model"].state_dict())
