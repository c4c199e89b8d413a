"""Old path: config I/O moved to :mod:`nas_core.deploy`, study tables and outputs to :mod:`nas_core.results`."""

from __future__ import annotations

from nas_core.deploy.config import build_model, load_config, package_versions, trial_config
from nas_core.deploy.exporters import EXPORT_FORMATS, export_model
from nas_core.deploy.retraining import rebuild_snippet, retrain
from nas_core.model.weights import load_weights, save_weights
from nas_core.results.tables import (
    final_results,
    final_training,
    pareto_rows,
    record_final_result,
    remeasure_latencies,
    study_rows,
    summary_markdown,
    with_final_results,
    write_study_outputs,
)

__all__ = [
    "trial_config",
    "with_final_results",
    "load_config",
    "build_model",
    "load_weights",
    "save_weights",
    "study_rows",
    "pareto_rows",
    "write_study_outputs",
    "summary_markdown",
    "export_model",
    "EXPORT_FORMATS",
    "retrain",
    "package_versions",
    "rebuild_snippet",
    "final_results",
    "final_training",
    "record_final_result",
    "remeasure_latencies",
]
