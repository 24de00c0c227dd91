"""Check the guarantees of a patched model against a reference taken before surgery.

The reference holds no copy of the weights: for each original tensor it keeps the tensor itself (a view that
shares storage) with its storage pointer and autograd version counter. A tensor still under its key, with the
same storage and an unchanged version counter, cannot have changed; one whose storage was written in place since
(its version counter moved) is reported as changed, since the reference shares that storage and has no old values
to compare with; only a tensor under new storage is compared by value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .tensors import output_deviation, probe_guard, run_outputs

__all__ = ["Reference", "Verification", "capture_reference", "verify", "output_deviation"]


@dataclass
class Reference:
    """Original tensors by key and the original outputs on the probe batch."""

    tensors: dict[str, tuple[torch.Tensor, int, int]]
    outputs: list[torch.Tensor]
    probe: torch.Tensor


@dataclass
class Verification:
    """Result of :func:`verify`.

    Attributes:
        missing_keys: original keys no longer in the state_dict (other than those a swap removed on purpose).
        changed_keys: original keys whose tensor changed value.
        added_keys: keys that are new (the inserted blocks').
        removed_by_swap: original keys that swaps and replaced modules removed, as documented.
        max_abs_diff: largest absolute output difference on the probe batch.
        rel_diff: ``max_abs_diff`` over the largest absolute original output.
        forward_ok: the patched model ran on the probe batch.
        error: the forward's error, if it failed.
    """

    missing_keys: list[str] = field(default_factory=list)
    changed_keys: list[str] = field(default_factory=list)
    added_keys: list[str] = field(default_factory=list)
    removed_by_swap: list[str] = field(default_factory=list)
    max_abs_diff: float = float("nan")
    rel_diff: float = float("nan")
    forward_ok: bool = False
    error: str | None = None

    @property
    def keys_preserved(self) -> bool:
        return not self.missing_keys and not self.changed_keys

    @property
    def ok(self) -> bool:
        return self.forward_ok and self.keys_preserved


def capture_reference(model: nn.Module, probe: torch.Tensor, outputs: list[torch.Tensor] | None = None) -> Reference:
    """Record the original tensors (no copies) and the eval-mode outputs on ``probe`` (run now unless given).

    Raises:
        ModelForwardError: the model raises on ``probe``.
    """
    tensors = {key: (tensor, tensor.data_ptr(), tensor._version) for key, tensor in model.state_dict().items()}
    if outputs is None:
        with probe_guard(model, tuple(probe.shape)):
            outputs = run_outputs(model, probe)
    return Reference(tensors, list(outputs), probe)




def verify(model: nn.Module, reference: Reference, removed_by_swap: Iterable[str] = ()) -> Verification:
    """Compare the patched ``model`` with ``reference``: keys, values, and outputs on the same probe batch."""
    removed = set(removed_by_swap)
    state = model.state_dict()
    result = Verification(removed_by_swap=sorted(removed & set(reference.tensors)))
    for key, (tensor, pointer, version) in reference.tensors.items():
        if key in removed:
            continue
        current = state.get(key)
        if current is None:
            result.missing_keys.append(key)
        elif current.data_ptr() == pointer and current.shape == tensor.shape:
            if current._version != version:
                result.changed_keys.append(key)
        elif current.shape != tensor.shape or current.dtype != tensor.dtype or not torch.equal(current, tensor):
            result.changed_keys.append(key)
    result.added_keys = [key for key in state if key not in reference.tensors]
    try:
        outputs = run_outputs(model, reference.probe)
    except Exception as exc:  # the report states the failure; the caller decides whether it is fatal
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    result.forward_ok = True
    result.max_abs_diff, result.rel_diff = output_deviation(reference.outputs, outputs)
    return result
