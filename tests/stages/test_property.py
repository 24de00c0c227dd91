"""Property-based surgery on random small CNNs: every block at every position either patches correctly or raises a
SurgeonError — never another exception — and a successful identity patch keeps the function, the keys and survives
a recipe round trip."""

from __future__ import annotations

import copy

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import surgeon
from surgeon.blocks import list_blocks
from surgeon.errors import SurgeonError

INSERTS = [info.name for info in list_blocks("insert")]


class Unit(nn.Module):
    """conv → (norm) → (activation), optionally wrapped in a residual connection with a projection shortcut."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, depthwise: bool, norm: bool, act: bool,
                 residual: bool) -> None:
        super().__init__()
        groups = cin if depthwise and cin == cout else 1
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=not norm)
        self.norm = nn.BatchNorm2d(cout) if norm else nn.Identity()
        self.act = nn.ReLU() if act else nn.Identity()
        self.residual = residual
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False) if (cin != cout or stride != 1) and residual
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm(self.conv(x)))
        if self.residual:
            out = out + self.shortcut(x)
        return out


class Net(nn.Module):
    def __init__(self, specs: list[dict], in_channels: int = 3) -> None:
        super().__init__()
        units, cin = [], in_channels
        for spec in specs:
            units.append(Unit(cin, **spec))
            cin = spec["cout"]
        self.body = nn.Sequential(*units)
        self.head = nn.Conv2d(cin, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).mean((2, 3))


unit_specs = st.fixed_dictionaries({
    "cout": st.sampled_from([1, 2, 3, 8, 16]),
    "kernel": st.sampled_from([1, 3, 5]),
    "stride": st.sampled_from([1, 1, 2]),
    "depthwise": st.booleans(),
    "norm": st.booleans(),
    "act": st.booleans(),
    "residual": st.booleans(),
})


def _randomize(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(unit_specs, min_size=1, max_size=4),
    size=st.integers(min_value=1, max_value=12),
    block=st.sampled_from(INSERTS),
    site=st.sampled_from(["bottleneck", "conv", "conv3x3", "Unit"]),
    position=st.sampled_from([None, "residual", "after", "before"]),
    seed=st.integers(0, 2**16),
)
def test_random_cnn_surgery(specs, size, block, site, position, seed) -> None:
    torch.manual_seed(seed)
    original = Net(specs).eval()
    _randomize(original, seed)
    patched = copy.deepcopy(original)
    try:
        surgeon.insert(patched, block, after=site, position=position, input_shape=(1, 3, size, size))
    except SurgeonError:
        assert [type(m) for m in patched.modules()] == [type(m) for m in original.modules()]
        return

    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(patched.eval()(x), original(x), rtol=0, atol=1e-5)
    before, after = original.state_dict(), patched.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())

    rebuilt = surgeon.apply(copy.deepcopy(original), surgeon.recipe_of(patched))
    rebuilt.load_state_dict(after, strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), patched(x))
