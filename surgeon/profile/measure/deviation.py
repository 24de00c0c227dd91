"""How far a patched model's outputs are from the original's, and whether the comparison is a fair one.

The deviation is measured on the probe batch; the note says whether the two models share their original tensors
(then the deviation measures the surgery alone) or not (different random draws, unrelated models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...tensors import device_of, output_deviation, probe_guard, probe_input, run_outputs

__all__ = ["deviation_entry", "output_deviation_entry"]


def _outputs(model: nn.Module, probe: torch.Tensor, name: str | None) -> list[torch.Tensor]:
    with probe_guard(model, probe.shape, name):
        return run_outputs(model, probe)


def _weights_in_common(model: nn.Module, other: nn.Module) -> dict[str, int]:
    theirs = other.state_dict()
    common = differ = 0
    for key, tensor in model.state_dict().items():
        value = theirs.get(key)
        if value is None or value.shape != tensor.shape:
            continue
        common += 1
        differ += not torch.equal(tensor, value.to(tensor.device))
    return {"common": common, "differ": differ}


def output_deviation_entry(model: nn.Module, other: nn.Module, input_shape: Sequence[int], adopted: int | None,
                           names: tuple[str | None, str | None]) -> dict[str, Any]:
    """The report's ``deviation`` entry: ``other``'s outputs against ``model``'s on a probe of ``input_shape``."""
    probe = probe_input(tuple(input_shape), model)
    deviation = output_deviation(_outputs(model, probe, names[0]),
                                 _outputs(other, probe.to(device_of(other)), names[1]))
    entry = deviation_entry(input_shape, deviation, _weights_in_common(model, other))
    if adopted is not None:
        entry["weights"]["adopted"] = adopted
        entry["note"] = (f"the first model, built with random weights, took the second's {adopted} original tensors; "
                         + entry["note"])
    return entry


def deviation_entry(input_shape: Sequence[int], deviation: tuple[float, float],
                    weights: dict[str, int | None]) -> dict[str, Any]:
    """The entry for a measured ``(max_abs, relative)`` deviation, with the note on the weights the models share."""
    max_abs, relative = deviation
    if weights["common"] is None:
        kept = "every original tensor" + (" but the swapped units'" if weights.get("replaced") else "")
        note = f"the patched model keeps {kept} (verified): the deviation measures the surgery alone"
    elif weights["common"] == 0:
        note = "the two models share no tensor: the deviation compares unrelated models"
    elif weights["differ"]:
        note = (f"{weights['differ']} of the {weights['common']} tensors the models have in common differ: the "
                "deviation measures different weights, not only the surgery")
    else:
        note = "every tensor the models have in common is equal: the deviation measures the surgery alone"
    if not math.isfinite(max_abs):
        note = "the outputs differ in structure or shape"
    return {"probe_shape": list(input_shape), "max_abs": max_abs, "relative": relative, "weights": weights,
            "note": note}
