"""Train/eval tracing: a module is traced in eval mode too only when the traced code can depend on the mode.

The train-mode trace watches every read of a module's ``training`` flag; a module that reads none (and whose
modules do not override ``train()``) traces to the same graph in both modes, so the second trace is skipped. Any
read, or a ``train()`` override, keeps both traces and the dispatch on ``self.training``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import surgeon
from surgeon import trace


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(self.conv(x))


class ReadsTraining(Plain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if self.training:
            y = y * 0.5
        return x + y


class Child(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 if self.training else x


class ChildReadsTraining(Plain):
    def __init__(self) -> None:
        super().__init__()
        self.child = Child()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.child(self.bn(self.conv(x)))


class TrainOverride(Plain):
    """Switches a plain flag in ``train()`` and never reads ``training`` (LeViT-style caches do the like)."""

    def __init__(self) -> None:
        super().__init__()
        self.halve = True

    def train(self, mode: bool = True) -> TrainOverride:
        super().train(mode)
        self.halve = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return x + (y * 0.5 if self.halve else y)


class ClassLevelTraining(Plain):
    training = True  # hides reads from a watcher on nn.Module


@pytest.fixture
def trace_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The mode of every single trace that ``trace_module`` runs."""
    calls: list[bool] = []
    original = trace._trace_once

    def counting(module: nn.Module, through):  # type: ignore[no-untyped-def]
        calls.append(module.__dict__["training"])
        return original(module, through)

    monkeypatch.setattr(trace, "_trace_once", counting)
    return calls


@pytest.mark.parametrize("nested", [False, True])
def test_a_module_that_reads_no_training_flag_is_traced_once(trace_calls: list[bool], nested: bool) -> None:
    module = Plain().eval()
    if nested:
        with trace.watch_training_reads() as outer:
            assert module.training is False and outer.read  # reads before the trace do not count for it
            traced = trace.trace_module(module)
    else:
        traced = trace.trace_module(module)
    assert trace_calls == [True] and not traced.mode_dependent
    assert module.training is False and "training" not in nn.Module.__dict__


@pytest.mark.parametrize("cls", [ReadsTraining, ChildReadsTraining, TrainOverride, ClassLevelTraining])
@pytest.mark.parametrize("nested", [False, True])
def test_a_module_that_may_depend_on_the_mode_is_traced_in_both(trace_calls: list[bool], cls: type, nested: bool
                                                                 ) -> None:
    through = {"child"} if cls is ChildReadsTraining else set()
    if nested:
        with trace.watch_training_reads():
            traced = trace.trace_module(cls(), through)
    else:
        traced = trace.trace_module(cls(), through)
    assert trace_calls == [True, False]
    assert traced.mode_dependent is (cls is not ClassLevelTraining)  # its forward is the same in both modes


def test_the_watcher_is_removed_when_tracing_fails() -> None:
    class Untraceable(Plain):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow
                return x
            return self.conv(x)

    with pytest.raises(torch.fx.proxy.TraceError):
        trace.trace_module(Untraceable())
    assert "training" not in nn.Module.__dict__
    module = Plain()
    module.training = False
    assert module.__dict__["training"] is False and not module.training


@pytest.mark.parametrize("cls", [Plain, ReadsTraining, TrainOverride])
@pytest.mark.parametrize("train", [True, False])
def test_patched_model_computes_the_original_in_both_modes(cls: type, train: bool) -> None:
    torch.manual_seed(0)
    original = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), cls(), cls())
    patched = surgeon.insert(copy.deepcopy(original), "eca", after="bottleneck", input_shape=(1, 3, 8, 8))
    assert len(surgeon.recipe_of(patched).steps) == 2
    original.train(train), patched.train(train)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(patched(x), original(x), rtol=0, atol=0)
