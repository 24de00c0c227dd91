"""An arm's model, built from the plan alone: load the source, then apply the arm's surgery through the pipeline.

The same function builds the model in the driver (to count it and to fail early on a block that does not fit) and
in each trial's process, so nothing but the plan's plain data crosses processes, and the one replay path of
:mod:`surgeon.pipeline` is the only surgery there is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..io import LoadOptions
from ..io.registry import reference_flops
from ..pipeline import load_model
from ..pipeline.surgery import insert_rule, resolve, run_surgery, surgery
from ..profile import model_facts
from ..recipe import Recipe
from ..tensors import default_input_shape
from .plan import Arm, ExperimentPlan

__all__ = ["ArmCost", "arm_cost", "build_arm_model"]


@dataclass(frozen=True)
class ArmCost:
    """What an arm's model costs, counted as ``attn-surgeon profile`` counts (one image, batch 1, eval mode).

    Attributes:
        params: parameters.
        flops: FLOPs of one forward pass (see :data:`surgeon.profile.CONVENTIONS`).
        gflops_framework: the GFLOPs the model's framework reports (Ultralytics' ``model.info()``), or ``None``.
        input_shape: the ``(C, H, W)`` image counted.
    """

    params: int
    flops: int
    gflops_framework: float | None
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "flops": self.flops, "gflops_framework": self.gflops_framework,
                "input_shape": list(self.input_shape)}


def build_arm_model(plan: ExperimentPlan, arm: Arm) -> nn.Module:
    """The arm's model, untrained: the baseline as loaded, a candidate patched, a control loaded from its own spec.

    Raises:
        SurgeonError: the model cannot be loaded, or the arm's blocks do not fit it.
    """
    model = plan.model
    trust = {"trust_code": model["trust_code"], "trust_pickle": model["trust_pickle"]}
    if arm.kind == "control":
        return load_model(arm.source or "", LoadOptions(**trust)).module
    loaded = load_model(model["source"], LoadOptions(model["arch"], model["arch_args"], **trust))
    if arm.kind == "baseline":
        return loaded.module
    shape = tuple(model["input_shape"]) if model["input_shape"] else None
    recorded = {"base": loaded.spec, "arch_args": loaded.arch_args}
    if arm.insert is not None:
        rule = insert_rule(**arm.insert, name=f"--blocks {arm.insert['block']}")
        return run_surgery(loaded.module, [rule], input_shape=shape, **recorded).model
    rules_or_recipe = (Recipe.from_dict(arm.recipe) if arm.recipe is not None
                       else resolve(arm.rules, trust_code=model["trust_code"]))
    return surgery(loaded.module, rules_or_recipe, input_shape=shape, where=model["source"], **recorded).model


def arm_cost(plan: ExperimentPlan, arm: Arm, model: nn.Module) -> ArmCost:
    """Count ``model``, the arm's model, at the plan's input shape (else the shape the model declares).

    Raises:
        ModelForwardError: the model refuses an image of that shape.
    """
    shape = tuple(plan.model["input_shape"] or default_input_shape(model))
    facts = model_facts(model, arm.name, shape[1:])
    framework = reference_flops(model)
    return ArmCost(facts.parameters, facts.counts.flops, framework[1].gflops if framework else None, shape[1:])
