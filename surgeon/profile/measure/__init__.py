"""Measuring any ``nn.Module``: counts (:mod:`.counting`, :mod:`.formulas`), latency and its precision
(:mod:`.latency`, :mod:`.precision`), peak memory (:mod:`.memory`), the cost of each inserted block
(:mod:`.attribution`), a framework's own FLOP count (:mod:`.framework_flops`), and the profile report that gathers
them (:mod:`.profiling`)."""

from __future__ import annotations

from .counting import CONVENTIONS, CountResult, count_ops
from .intervals import LatencyOptions
from .latency import LatencyResult, compare_latency, machine_name, measure_latency
from .memory import peak_memory, quiet_profiler_logs
from .profiling import (
                        SCHEMA_VERSION,
                        ModelFacts,
                        Step,
                        adopt_original_weights,
                        count_report,
                        model_facts,
                        profile_models,
)

__all__ = ["CONVENTIONS", "SCHEMA_VERSION", "CountResult", "LatencyOptions", "LatencyResult", "ModelFacts", "Step",
           "adopt_original_weights", "compare_latency", "count_ops", "count_report", "machine_name",
           "measure_latency", "model_facts", "peak_memory", "profile_models", "quiet_profiler_logs"]
