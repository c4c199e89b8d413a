"""The objectives a study can optimize, each defined once: name, direction, the metric it reads, its label."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Objective", "OBJECTIVES"]


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "maximize" | "minimize"
    metric: str  # key in EvalResult.metrics (and of nas_core.training.measure.COSTS for a cost objective)
    label: str
    axis_label: str  # how a chart's axis names it


OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective("accuracy", "maximize", "val_accuracy", "validation accuracy", "validation accuracy"),
    "latency_ms": Objective("latency_ms", "minimize", "latency_ms", "CPU latency (ms, batch 1)", "latency (ms, batch 1, CPU)"),
    "params": Objective("params", "minimize", "params", "parameters", "parameters"),
    "flops": Objective("flops", "minimize", "flops", "FLOPs (batch 1)", "FLOPs (batch 1)"),
    "size_mb": Objective("size_mb", "minimize", "size_mb", "model size (MB)", "model size (MB)"),
}
