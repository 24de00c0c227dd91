"""The zoo benchmark (``benchmarks/zoo.py``): its records and bookkeeping, and surgery on a representative subset.

The subset (marker ``zoo``, run with ``pytest -m zoo tests/test_zoo.py``) covers residual CNNs from torchvision and
timm, a hybrid, CNNs without residual units (conv3x3 fallback), a pure ViT answered with the reason, a detector
fed through its backbone, and YOLOv8n where Ultralytics is installed. The unmarked tests run by default.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from surgeon.errors import TraceError

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"
_spec = importlib.util.spec_from_file_location("zoo_benchmark", _PATH)
zoo = importlib.util.module_from_spec(_spec)
sys.modules["zoo_benchmark"] = zoo
_spec.loader.exec_module(zoo)


class _Residual(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(self.conv(x))


class _Plain(nn.Module):
    """A model whose convolutions sit in a Sequential, as in VGG (a bare root Sequential is a container)."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _Residual(), _Residual(), nn.AdaptiveAvgPool2d(1))


def _crash() -> nn.Module:
    os._exit(3)


def _hang() -> nn.Module:
    time.sleep(60)
    return _tiny_cnn()


def _entry(build, name: str = "tiny", **kwargs) -> zoo.Entry:
    return zoo.Entry("torchvision", "test", name, build, **kwargs)


def _assert_patched(record: dict, selector: str) -> None:
    assert record["status"] == "patched", record["error"]
    assert record["selector"] == selector
    assert record["forward_ok"] and record["keys_preserved"] and record["loads_original"]
    assert record["patched"] == record["matched"] > 0
    assert record["max_abs_diff"] <= zoo.TOLERANCE


def test_record_of_a_patched_model() -> None:
    record = zoo.run_entry(_entry(_tiny_cnn, sizes=(32,)))
    _assert_patched(record, "bottleneck")
    assert record["sites"]["block"] == 2 and record["patched"] == 2
    assert record["inserted_under"] == ["1", "2"] and record["input_shape"] == [1, 3, 32, 32]


def test_conv3x3_fallback_when_no_residual_unit() -> None:
    record = zoo.run_entry(_entry(lambda: _Plain(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))),
                                  sizes=(16,)))
    _assert_patched(record, "conv3x3")
    assert record["sites"]["block"] == 0 and record["patched"] == 2


def test_answered_when_nothing_matches() -> None:
    record = zoo.run_entry(_entry(lambda: _Plain(nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Flatten())),
                                  sizes=(16,)))
    assert record["status"] == "answered"
    assert record["error"].startswith("rule '--block eca --after bottleneck': this model has no residual units")


def test_input_size_falls_back_to_the_first_that_runs() -> None:
    class FixedSize(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] != 48:
                raise ValueError("expects 48x48 images")
            return super().forward(x)

    record = zoo.run_entry(_entry(lambda: FixedSize(nn.Conv2d(3, 4, 3), _Residual(4)), sizes=(32, 48)))
    assert record["input_shape"] == [1, 3, 48, 48] and record["status"] == "patched"
    record = zoo.run_entry(_entry(lambda: FixedSize(nn.Conv2d(3, 4, 3)), sizes=(32, 64)))
    assert record["status"] == "skipped"
    assert record["error"].startswith("the unpatched model fails at 32, 64px: ValueError: expects 48x48 images at")


def test_library_errors_are_recorded_as_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise TraceError("layer3.1: data-dependent control flow at resnet_x.py:88\n(tried layer3.1, layer3)")

    monkeypatch.setattr(zoo.surgeon, "run_surgery", refuse)
    record = zoo.run_entry(_entry(_tiny_cnn, sizes=(32,)))
    assert record["status"] == "failed"
    assert record["error"] == "layer3.1: data-dependent control flow at resnet_x.py:88 (tried layer3.1, layer3)"
    # counted, to tell residual models apart; the global pool's 1x1 output is no feature map, so no module site
    assert record["sites"] == {"block": 2, "conv": 3, "module": 2}


def test_norm_stats_are_randomized_so_identity_checks_bite() -> None:
    model = _tiny_cnn()
    zoo.randomize_norm_stats(model)
    bn = model[1].bn
    assert not torch.equal(bn.running_var, torch.ones(8)) and not torch.equal(bn.weight, torch.ones(8))
    assert bool((bn.running_var > 0).all())


def test_worker_crash_and_hang_become_records() -> None:
    crashed = zoo.run_isolated(_entry(_crash, name="crash"), timeout=60, threads=1)
    assert (crashed["status"], crashed["error"]) == ("failed", "worker died with exit code 3")
    hung = zoo.run_isolated(_entry(_hang, name="hang"), timeout=1, threads=1)
    assert (hung["status"], hung["error"]) == ("failed", "timed out after 1s")
    fine = zoo.run_isolated(_entry(_tiny_cnn, sizes=(32,)), timeout=60, threads=1)
    assert fine["status"] == "patched"


def test_summary_counts_and_merged_output(tmp_path: Path) -> None:
    records = {
        "a": {"key": "a", "source": "timm", "family": "f/a", "name": "a", "block": "eca", "status": "patched",
              "selector": "bottleneck", "max_abs_diff": 0.0, "surgery_s": 1.0, "sites": {"block": 3}},
        "b": {"key": "b", "source": "timm", "family": "f/b", "name": "b", "block": "eca", "status": "failed",
              "error": "x", "sites": {"block": 2}},
        "e": {"key": "e", "source": "timm", "family": "f/e", "name": "e", "block": "eca", "status": "failed",
              "error": "z", "sites": {"block": 0}},
        "c": {"key": "c", "source": "timm", "family": "f/c", "name": "c", "block": "eca", "status": "answered",
              "error": "y", "sites": {"block": 0}},
        "d": {"key": "d", "source": "timm", "family": "f/d", "name": "d", "block": "eca", "status": "patched",
              "selector": "conv3x3", "max_abs_diff": 2e-5, "surgery_s": 3.0, "sites": {"block": 0}},
    }
    summary = zoo.summarize(list(records.values()))["timm"]
    assert summary["models"] == 5 and summary["patched"] == 2 and summary["answered"] == 1 and summary["failed"] == 2
    assert summary["patched_by"] == {"bottleneck": 1, "conv3x3": 1}
    assert summary["within_tolerance"] == 1 and summary["max_abs_diff"] == 2e-5 and summary["median_surgery_s"] == 2
    # the target's denominator: families with residual units, patched or not (e has none: not counted)
    assert (summary["residual_families"], summary["residual_patched"]) == (2, 1)
    path = tmp_path / "zoo.json"
    zoo._write(path, records)
    data = json.loads(path.read_text())
    assert data["schema"] == zoo.SCHEMA and [r["key"] for r in data["models"]] == ["a", "b", "c", "d", "e"]
    assert data["versions"]["torch"] == torch.__version__


def test_timm_families_group_by_module_and_leading_word() -> None:
    families = zoo.timm_families()
    assert "resnet18" in families["resnet/resnet"] and "seresnext26d_32x4d" in families["resnet/seresnext"]
    assert "tf_efficientnet_b0" in families["efficientnet/tf_efficientnet"]
    assert not any(name.startswith("test_") for names in families.values() for name in names)
    assert len(families) > 150


# --- the representative subset: real architectures, marked zoo -----------------------------------------------------

def _timm(name: str) -> zoo.Entry:
    import timm

    return zoo.Entry("timm", "subset", name, lambda: timm.create_model(name, pretrained=False))


def _torchvision(name: str) -> zoo.Entry:
    return next(e for e in zoo.torchvision_entries() if e.name == name)


SUBSET = [
    ("torchvision:resnet18", lambda: _torchvision("resnet18"), "bottleneck"),
    ("torchvision:mobilenet_v3_small", lambda: _torchvision("mobilenet_v3_small"), "bottleneck"),
    ("torchvision:squeezenet1_1", lambda: _torchvision("squeezenet1_1"), "conv3x3"),
    ("torchvision:densenet121", lambda: _torchvision("densenet121"), "conv3x3"),
    ("timm:resnet10t", lambda: _timm("resnet10t"), "bottleneck"),
    ("timm:efficientnet_lite0", lambda: _timm("efficientnet_lite0"), "bottleneck"),
    ("timm:convnext_zepto_rms", lambda: _timm("convnext_zepto_rms"), "bottleneck"),
    ("timm:regnetx_002", lambda: _timm("regnetx_002"), "bottleneck"),
    ("timm:mobilevit_xxs", lambda: _timm("mobilevit_xxs"), "bottleneck"),
    ("timm:dla34", lambda: _timm("dla34"), "bottleneck"),  # units called with shortcut=tensor are left out
]


@pytest.mark.zoo
@pytest.mark.parametrize("make, selector", [case[1:] for case in SUBSET], ids=[case[0] for case in SUBSET])
def test_subset_is_patched_with_identity(make, selector: str) -> None:
    _assert_patched(zoo.run_entry(make()), selector)


@pytest.mark.zoo
def test_pure_vit_is_answered_with_the_reason() -> None:
    record = zoo.run_entry(replace(_timm("vit_tiny_patch16_224"), sizes=(224,)))
    assert record["status"] == "answered"
    assert "no residual units with convolutions (a pure transformer" in record["error"]
    assert "--after ClassName" in record["error"] and "\n" not in record["error"]


@pytest.mark.zoo
def test_detector_is_patched_in_its_backbone() -> None:
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    entry = next(e for e in zoo.detection_entries() if e.name == "fasterrcnn_resnet50_fpn")
    # The default transform resizes every image to 800px; 128 keeps the test fast and the architecture the same.
    entry = replace(entry, build=lambda: fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                   min_size=128, max_size=128))
    record = zoo.run_entry(entry)
    _assert_patched(record, "bottleneck")
    assert record["inserted_under"] == ["backbone"] and record["patched"] == 16
    assert record["feature_abs_diff"] <= zoo.TOLERANCE


@pytest.mark.zoo
@pytest.mark.parametrize("block", ["cbam", "ca"])
def test_yolov8n_c2f_keeps_routing_and_weights(block: str) -> None:
    pytest.importorskip("ultralytics")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    entry = next(e for e in zoo.yolo_entries() if e.block == block)
    record = zoo.run_entry(entry)
    _assert_patched(record, "C2f")
    assert record["patched"] == 8 and record["routing_kept"] and record["modes"] == {"wrapper": 8}
