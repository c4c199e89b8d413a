"""The fidelity protocol: what a fidelity gets (EvalContext), what it returns (EvalResult), and the registry."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nas_core.model.assemble import MocaNet
from nas_core.registry import Registry
from nas_core.schema.config import Architecture, TrainingRecipe
from nas_core.training.loop import Diverged, EpochCallback
from nas_core.training.measure import measure_model


@dataclass
class EvalContext:
    """Everything a fidelity needs for one candidate."""

    arch: Architecture
    recipe: TrainingRecipe
    data: Any  # nas_core.data.DatasetSplits
    device: torch.device = torch.device("cpu")
    seed: int = 0
    on_epoch: EpochCallback | None = None
    should_stop: Callable[[], bool] = lambda: False
    workspace: Any = None  # pathlib.Path for caches
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Final metrics, per-epoch history and the trained weights of one candidate."""

    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    per_class_accuracy: list[float] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


FIDELITIES: Registry[Callable[[EvalContext], EvalResult]] = Registry("fidelity")
# Optional second phase per fidelity, run once after the search loop (e.g. cached -> fine-tune the top-k end to end):
# finalize(*, study, config, data, device, workspace, emit, stop_event, deadline) -> None, where ``deadline`` (a
# time.perf_counter() value, math.inf when unbounded) is when the phase must end (see nas_core.search.phase_deadlines)
FINALIZERS: Registry[Callable[..., None]] = Registry("fidelity finalizer")



# Options of the second phase (``nas_core.moca.finalize_top_k``) that every fidelity with a finalizer accepts.
FINETUNE_OPTIONS = ("finetune_top_k", "finetune_epochs", "finetune_patience", "finetune_seconds", "finetune_share", "finetune_recipe",
                    "finetune_lr", "finetune_batch_size")


def finish(model: MocaNet, ctx: EvalContext, history: list[dict[str, float]], train_s: float, **extra: Any) -> EvalResult:
    measured = measure_model(model, ctx.data, ctx.device, should_stop=ctx.should_stop)
    metrics = dict(measured["metrics"])
    metrics["train_seconds"] = train_s
    metrics["epochs_trained"] = len(history)
    if any(not math.isfinite(float(v)) for v in metrics.values()):
        raise Diverged("a metric came out NaN/inf; the model diverged")
    return EvalResult(
        metrics=metrics,
        history=history,
        confusion=measured["confusion"],
        per_class_accuracy=measured["per_class_accuracy"],
        latency=measured["latency"],
        state_dict={k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        extra=dict(extra),
    )
