"""GFLOPs as a framework reports them for one of its models, stated beside attn-surgeon's count at the same input.

Users know their model's cost from their framework's own summary (Ultralytics' ``model.info()``: thop, 2 x the MACs
of convolutions and linear layers, at 640x640), which leaves out the element-wise, pooling and normalisation work that
attention blocks are made of and counts at another input than the profile's. The report gives both numbers at the
framework's input, so the figures users already know can be compared with ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ...io.registry import reference_flops
from ...tensors import probe_guard, probe_input
from .counting import count_ops

__all__ = ["add_framework_flops"]


def add_framework_flops(report: dict[str, Any], models: Sequence[nn.Module], names: Sequence[str | None]) -> None:
    """Add to each model row of ``report`` whose model a registered framework reports GFLOPs for a
    ``framework_flops`` entry (the framework, its counter and method, the input, its GFLOPs and ours), and a note."""
    for row, model, name in zip(report["models"], models, names):
        found = reference_flops(model)
        if found is None:
            continue
        framework, reference = found
        probe = probe_input((1, *reference.image_shape), model)
        with probe_guard(model, probe.shape, name):
            ours = count_ops(model, (probe,)).flops / 1e9
        row["framework_flops"] = {"framework": framework, "counter": reference.counter, "method": reference.method,
                                  "input_shape": list(reference.image_shape), "reported_gflops": reference.gflops,
                                  "gflops": ours}
        stated = "cannot count here" if reference.gflops is None else f"reports {reference.gflops:.1f} GFLOPs"
        report["notes"].append(f"{name} at {reference.input_label}: {reference.counter} {stated} "
                               f"({reference.method}); attn-surgeon counts {ours:.2f} GFLOPs (2 x MACs plus "
                               "element-wise, pooling, softmax and normalisation work).")
