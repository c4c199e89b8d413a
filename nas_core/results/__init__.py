"""What a study found: its tables, the Pareto front and picks, and the output files of a study folder."""

from __future__ import annotations

from nas_core.results.pareto import dominates, hv_contributions, hypervolume, nondominated_sort, normalizer, pareto_front, pick_points, to_minimize
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
    "dominates",
    "final_results",
    "final_training",
    "record_final_result",
    "hv_contributions",
    "hypervolume",
    "nondominated_sort",
    "normalizer",
    "pareto_front",
    "pareto_rows",
    "pick_points",
    "remeasure_latencies",
    "study_rows",
    "summary_markdown",
    "to_minimize",
    "with_final_results",
    "write_study_outputs",
]
