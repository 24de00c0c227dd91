"""Ablations: does a block help on the user's data? Every arm trained with every seed, compared with statistics.

An experiment is data (:mod:`.plan`), one directory per trial written by the driver alone (:mod:`.store`,
:mod:`.driver`), trials run in fresh processes or as Ray tasks (:mod:`.executors`, :mod:`.trial`), and the paired
statistics are a pure function of the records (:mod:`.stats`, :mod:`.results`). Sits above the pipeline and the
profiler, which it uses; only the CLI and the package import it.
"""

from .driver import REPORT_FORMATS, AblateResult, TrialProgress, ablate, plan_ablation, read_results, render_report
from .options import AblateOptions, Execution, Loading, Placement, parse_seeds, parse_train_args
from .plan import Arm, ExperimentPlan
from .results import RESULTS_SCHEMA, RESULTS_VERSION, build_results

__all__ = ["REPORT_FORMATS", "RESULTS_SCHEMA", "RESULTS_VERSION", "AblateOptions", "AblateResult", "Arm", "Execution",
           "ExperimentPlan", "Loading", "Placement", "TrialProgress", "ablate", "build_results", "parse_seeds",
           "parse_train_args", "plan_ablation", "read_results", "render_report"]
