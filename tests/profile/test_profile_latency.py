"""Latency and peak memory: sane fields, restored state, and no assertion on absolute speed."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from surgeon.profile.measure.latency import LatencyResult, compare_latency, measure_latency
from surgeon.profile.measure.memory import peak_memory


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1), nn.Dropout(0.5)
    )


def _training_flags(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def _check_sane(result: LatencyResult, runs: int, warmup: int, batch_size: int) -> None:
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert min(result.samples_ms) <= result.mean_ms <= max(result.samples_ms)
    assert result.std_ms >= 0
    assert (result.runs, result.warmup, result.batch_size, len(result.samples_ms)) == (runs, warmup, batch_size, runs)
    assert result.images_per_s == pytest.approx(batch_size * 1000 / result.median_ms)
    assert result.device == "cpu"
    assert result.torch_version == torch.__version__
    assert result.machine


def test_measure_latency_fields_and_restored_state() -> None:
    model = _small_net().train()
    model[1].eval()
    flags, threads = _training_flags(model), torch.get_num_threads()
    result = measure_latency(model, torch.randn(2, 3, 16, 16), runs=7, warmup=2, threads=1)
    _check_sane(result, runs=7, warmup=2, batch_size=2)
    assert result.threads == 1
    assert torch.get_num_threads() == threads
    assert _training_flags(model) == flags
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_default_threads_are_the_current_ones() -> None:
    result = measure_latency(_small_net(), (torch.randn(1, 3, 8, 8),), runs=3, warmup=0)
    assert result.threads == torch.get_num_threads()
    assert result.std_ms >= 0


def test_single_run_has_no_spread() -> None:
    result = measure_latency(_small_net(), torch.randn(1, 3, 8, 8), runs=1, warmup=0)
    assert result.p10_ms == result.median_ms == result.p90_ms == result.mean_ms
    assert result.std_ms == 0


def test_compare_latency_interleaves_both_models() -> None:
    calls: list[str] = []

    class Recorder(nn.Module):
        def __init__(self, label: str) -> None:
            super().__init__()
            self.label = label
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.label)
            return self.conv(x)

    model_a, model_b = Recorder("a").train(), Recorder("b").eval()
    result_a, result_b = compare_latency(model_a, model_b, torch.randn(2, 3, 8, 8), runs=4, warmup=1, threads=1)
    assert calls == ["a", "b"] * 5
    for result in (result_a, result_b):
        _check_sane(result, runs=4, warmup=1, batch_size=2)
    assert model_a.training and not model_b.training


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"runs": 0}, "runs"),
    ({"warmup": -1}, "warmup"),
    ({"threads": 0}, "threads"),
    ({"device": "cuda:0"}, "move the model"),
])
def test_bad_arguments_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        measure_latency(_small_net(), torch.randn(1, 3, 8, 8), **kwargs)


def test_peak_memory_covers_the_output() -> None:
    model = _small_net().train()
    flags = _training_flags(model)
    image = torch.randn(2, 3, 32, 32)
    peak = peak_memory(model, image)
    output_bytes = 2 * 4 * 32 * 32 * 4  # float32 (2, 4, 32, 32)
    activation_bytes = 2 * 8 * 32 * 32 * 4  # the widest intermediate, alive while the second conv runs
    assert peak >= output_bytes + activation_bytes > 0
    assert _training_flags(model) == flags


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_latency_and_memory() -> None:
    model = _small_net().cuda()
    image = torch.randn(2, 3, 32, 32)
    result = measure_latency(model, image, runs=5, warmup=2)
    assert result.device.startswith("cuda") and 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert peak_memory(model, image) >= 2 * 4 * 32 * 32 * 4


def test_profiler_logs_are_quieted_unless_the_user_chose_a_level(monkeypatch: pytest.MonkeyPatch) -> None:
    from surgeon.profile.measure import memory as latency

    monkeypatch.setattr(latency, "_USER_KINETO_LOG_LEVEL", None)
    monkeypatch.setenv("KINETO_LOG_LEVEL", "5")  # what `import ultralytics` sets, which still logs every profile
    latency.quiet_profiler_logs()
    assert os.environ["KINETO_LOG_LEVEL"] == "6"
    monkeypatch.setattr(latency, "_USER_KINETO_LOG_LEVEL", "3")  # set before attn-surgeon was imported: the user's
    monkeypatch.setenv("KINETO_LOG_LEVEL", "3")
    latency.quiet_profiler_logs()
    assert os.environ["KINETO_LOG_LEVEL"] == "3"
