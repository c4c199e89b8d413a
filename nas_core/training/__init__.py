"""Training and measuring one network: the loop, recipes (schedules, augmentation, EMA), the measurements."""

from __future__ import annotations

from nas_core.training.loop import cpu_threads, make_optimizer, resolve_device, set_seed, threads, train_model
from nas_core.training.measure import (
    classification_metrics,
    count_flops,
    count_params,
    latency_threads,
    measure_latency,
    measure_model,
    model_size_mb,
    predict,
)
from nas_core.training.stops import Diverged, StopRequested

__all__ = [
    "Diverged",
    "StopRequested",
    "classification_metrics",
    "count_flops",
    "count_params",
    "cpu_threads",
    "latency_threads",
    "make_optimizer",
    "measure_latency",
    "measure_model",
    "model_size_mb",
    "predict",
    "resolve_device",
    "set_seed",
    "threads",
    "train_model",
]
