"""Old path: the training loop and measurements moved to :mod:`nas_core.training`, fidelities to :mod:`nas_core.fidelities`."""

from __future__ import annotations

from nas_core.fidelities.base import FIDELITIES, FINALIZERS, FINETUNE_OPTIONS, EvalContext, EvalResult, finish
from nas_core.fidelities.train import full_training
from nas_core.training.loop import (
    SMALL_INPUT,
    EpochCallback,
    augment,
    cpu_threads,
    make_optimizer,
    resolve_device,
    set_seed,
    threads,
    train_model,
    warm_up_training,
)
from nas_core.training.measure import (
    LATENCY_THREADS,
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
    "EvalContext",
    "EvalResult",
    "FIDELITIES",
    "StopRequested",
    "Diverged",
    "resolve_device",
    "train_model",
    "measure_model",
    "count_params",
    "count_flops",
    "measure_latency",
    "latency_threads",
    "model_size_mb",
    "classification_metrics",
    "set_seed",
    "FINALIZERS",
    "FINETUNE_OPTIONS",
    "finish",
    "full_training",
    "SMALL_INPUT",
    "EpochCallback",
    "augment",
    "cpu_threads",
    "make_optimizer",
    "threads",
    "LATENCY_THREADS",
    "predict",
    "warm_up_training",
]
