"""The same command on the same input gives bit-identical tensors and the same report."""

from __future__ import annotations

import json

import torch
import torchvision

from tests._util import run_cli


def test_same_command_same_bits(tmp_path) -> None:
    torch.manual_seed(0)
    source = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), source)
    outputs = []
    for run in ("a", "b"):
        torch.manual_seed(1234 if run == "a" else 99)  # global RNG state must not leak into the result
        out = tmp_path / f"{run}.pt"
        result = run_cli("insert", str(source), "--arch", "torchvision:resnet18", "--block", "cbam",
                         "--init", "paper", "-o", str(out), "--input-shape", "1,3,32,32")
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / f"{run}.report.json").read_text())
        report.pop("output")
        outputs.append((torch.load(out, weights_only=True), report))
    (state_a, report_a), (state_b, report_b) = outputs
    assert report_a == report_b
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
