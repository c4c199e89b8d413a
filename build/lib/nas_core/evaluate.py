"""Fidelities (how a candidate is scored) and measurements (accuracy, macro F1, params, FLOPs, latency, size).

A fidelity is a function ``(EvalContext) -> EvalResult`` in the :data:`FIDELITIES` registry:
``train`` trains from scratch with early stopping; ``cached`` (MoCAFT) and ``zero-cost`` live in
their own modules and register here. Training never looks at the test split for decisions; the test
accuracy is measured once at the end for reporting only.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_core import recipes
from nas_core.assemble import MocaNet, assemble
from nas_core.errors import ConfigError, NasCoreError
from nas_core.genotype import Architecture, TrainingRecipe, parse_augmentation
from nas_core.registry import Registry

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
]


class StopRequested(Exception):
    """Raised at a batch boundary when the user pressed Stop; the trial is recorded, not lost."""


class Diverged(NasCoreError):
    """Training produced a NaN/inf loss."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda.")
    return torch.device(device)


SMALL_INPUT = 16 * 16  # pixels per channel up to which CPU training uses one thread


def cpu_threads(input_shape: tuple[int, ...], device: torch.device) -> int | None:
    """Torch threads for training on ``device``: 1 for small inputs on CPU, ``MOCA_THREADS`` when set, else None (torch's choice).

    On 8x8 digits a 4-conv network trains at 1.1 s/epoch with one thread and 10.9 s/epoch with two on a 2-core machine
    shared with other work: the threads of tiny convolutions mostly wait for each other. Search and ``train --config``
    use the same rule, so a retrain repeats the search's arithmetic.
    """
    import os

    if os.environ.get("MOCA_THREADS"):
        try:
            value = int(os.environ["MOCA_THREADS"])
        except ValueError:
            raise ConfigError(f"MOCA_THREADS must be a whole number of threads, but got {os.environ['MOCA_THREADS']!r}.") from None
        if value < 1:
            raise ConfigError(f"MOCA_THREADS must be >= 1, but got {value}.")
        return value
    if device.type == "cpu" and len(input_shape) == 3 and input_shape[1] * input_shape[2] <= SMALL_INPUT:
        return 1
    return None


class threads:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Set torch's thread count for a block (``None`` leaves it) and restore it after."""

    def __init__(self, n: int | None) -> None:
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        if self.n:
            torch.set_num_threads(self.before)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


EpochCallback = Callable[[int, int, dict[str, float]], None]


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


# --- measurements -----------------------------------------------------------------------------


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    total = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return total / 1e6


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one batch-1 forward (``torch.utils.flop_counter``; a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).cpu().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape))
    return int(counter.get_total_flops())


LATENCY_THREADS = 1  # fixed, so a figure does not depend on who started the search (CLI, dashboard thread, worker)
NOISY_P90_RATIO = 1.5  # p90 above this multiple of p50: the machine was busy while measuring; the figure is flagged


def latency_threads() -> int:
    """Threads every latency measurement uses: ``MOCA_LATENCY_THREADS`` or :data:`LATENCY_THREADS`."""
    raw = os.environ.get("MOCA_LATENCY_THREADS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else LATENCY_THREADS


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], *, warmup: int = 10, repeats: int = 100, budget_s: float = 1.5,
                    min_repeats: int = 20, should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """CPU batch-1 latency measured the same way wherever the search runs.

    A fixed thread count (:func:`latency_threads`, set for the measurement and restored after: the default differs
    between the main thread and a dashboard's worker thread, which made the same network 0.33 ms from the CLI and
    1.13 ms from the dashboard), ``warmup`` untimed forwards, then up to ``repeats`` timed ones within ``budget_s``
    (at least ``min_repeats``). Records p50 (``latency_ms``) and p90, and ``noisy`` when p90 > 1.5 x p50.
    Raises :class:`StopRequested` between forwards once ``should_stop()`` turns true (a large network's
    measurement takes seconds, and a stop must not wait for it).
    """
    model = copy.deepcopy(model).cpu().eval()
    x = torch.randn(1, *input_shape)
    times: list[float] = []
    threads = latency_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                if should_stop():
                    raise StopRequested("stopped by the user while measuring latency")
                model(x)
            start = time.perf_counter()
            for _ in range(repeats):
                if should_stop():
                    raise StopRequested("stopped by the user while measuring latency")
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1000)
                if time.perf_counter() - start > budget_s and len(times) >= min_repeats:
                    break
    finally:
        torch.set_num_threads(before)
    p50, p90 = float(statistics.median(times)), float(np.percentile(times, 90))
    noisy = p90 > NOISY_P90_RATIO * p50
    return {
        "latency_ms": p50,
        "how": f"median of {len(times)} batch-1 forwards on CPU after {warmup} warm-up, {threads} thread{'s' if threads > 1 else ''}"
               + (f" (noisy: p90 {p90:.3g} ms)" if noisy else ""),
        "device": "cpu",
        "batch_size": 1,
        "threads": threads,
        "repeats": len(times),
        "warmup": warmup,
        "p50_ms": p50,
        "p90_ms": p90,
        "noisy": noisy,
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy, macro F1 (over every class, 0 where undefined, as scikit-learn's ``zero_division=0``), confusion, per-class accuracy.

    Computed from one ``bincount``: the search calls this twice per trial, and scikit-learn's input checks made it 5 ms a call.
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    ok = (y_true >= 0) & (y_true < num_classes) & (y_pred >= 0) & (y_pred < num_classes)
    cm = np.bincount(y_true[ok] * num_classes + y_pred[ok], minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(num_classes), where=denom > 0)
    per_class = [float(cm[i, i] / support[i]) if support[i] else float("nan") for i in range(num_classes)]
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f1.mean()) if num_classes else 0.0,
        "confusion": cm.tolist(),
        "per_class_accuracy": per_class,
    }


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(x[i : i + batch_size].to(device)).argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def measure_model(model: nn.Module, data: Any, device: torch.device, *, should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Validation/test accuracy, macro F1, confusion matrix, params, FLOPs, latency and size of a trained model."""
    shape = tuple(data.input_shape)
    val_pred = predict(model, data.x_val, device)
    test_pred = predict(model, data.x_test, device)
    val = classification_metrics(data.y_val.numpy(), val_pred, data.num_classes)
    test = classification_metrics(data.y_test.numpy(), test_pred, data.num_classes)
    latency = measure_latency(model, shape, should_stop=should_stop)
    metrics = {
        "val_accuracy": val["accuracy"],
        "test_accuracy": test["accuracy"],
        "macro_f1": test["macro_f1"],
        "val_macro_f1": val["macro_f1"],
        "params": count_params(model),
        "flops": count_flops(model, shape),
        "latency_ms": latency["latency_ms"],
        "size_mb": model_size_mb(model),
    }
    return {"metrics": metrics, "confusion": test["confusion"], "per_class_accuracy": test["per_class_accuracy"], "latency": latency}


# --- training ---------------------------------------------------------------------------------


def make_optimizer(params: Any, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer, fused when every parameter is a float tensor on CPU or CUDA.

    The fused kernels update all parameters in one call: on CPU an Adam step over a 34-tensor network takes
    0.14 ms instead of 0.60 ms, which is most of a small network's step in a one-epoch proxy.
    """
    params = list(params)
    ok = params and all(isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in params)
    fused = {"fused": True} if ok else {}
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay, **fused)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay, **fused)  # type: ignore[arg-type]  # fused is a keyword the stubs type loosely


def augment(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """The recipe's augmentation (``"crop+erase"``...) on an image batch; see :mod:`nas_core.recipes`."""
    return recipes.augment(x, parse_augmentation(mode), gen)


def train_model(
    model: nn.Module,
    data: Any,
    recipe: TrainingRecipe,
    *,
    device: torch.device,
    seed: int = 0,
    epochs: int | None = None,
    on_epoch: EpochCallback | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    params: Any = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    x_train: torch.Tensor | None = None,
    x_val: torch.Tensor | None = None,
    val_predictions: list[torch.Tensor] | None = None,
) -> list[dict[str, float]]:
    """Train with the recipe, early-stop on validation accuracy and restore the best weights.

    ``forward``/``x_train``/``x_val`` let the cached fidelity train a head on precomputed features.
    ``val_predictions``, when given, receives the validation predictions of the restored (best) epoch,
    so a caller need not run the validation split again.
    Raises :class:`StopRequested` at a batch boundary when ``should_stop()`` turns true and
    :class:`Diverged` on a NaN loss.
    """
    epochs = epochs or recipe.epochs
    forward = forward or model
    xt = data.x_train if x_train is None else x_train
    xv = data.x_val if x_val is None else x_val
    yt, yv = data.y_train, data.y_val
    # A refit on train+val (the final training of a timed search) has no held-out split to choose an epoch by: it keeps the last.
    refit = recipe.train_split == "train+val" and x_train is None
    if refit:
        xt, yt = torch.cat([data.x_train, data.x_val]), torch.cat([data.y_train, data.y_val])
    model.to(device)
    opt = make_optimizer(params if params is not None else model.parameters(), recipe)
    n = len(xt)
    bs = max(1, min(recipe.batch_size, n))
    sched, per_step = recipes.make_scheduler(opt, schedule=recipe.schedule, epochs=epochs, steps_per_epoch=math.ceil(n / bs),
                                             warmup=recipe.warmup)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    ops = parse_augmentation(recipe.augmentation) if x_train is None else ()
    ema = recipes.ModelEma(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    gen = torch.Generator().manual_seed(seed)
    best_acc, best_state, best_epoch, bad = -1.0, None, 0, 0
    best_pred = yv[:0]
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        total_loss, seen = 0.0, 0
        for i in range(0, n, bs):
            if should_stop():
                raise StopRequested(f"stopped by the user during epoch {epoch}")
            idx = perm[i : i + bs]
            if len(idx) < 2 and n >= 2:
                continue  # batch norm cannot train on a single sample
            xb = xt[idx]
            if ops:
                xb = recipes.augment(xb, ops, gen)
            xb, yb = xb.to(device, non_blocking=True), yt[idx].to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(forward(xb), yb)
            if not torch.isfinite(loss):
                raise Diverged(f"training diverged: the loss became {loss.item()} in epoch {epoch} (try a lower learning rate)")
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
            if ema is not None:
                ema.update(model)
            total_loss += loss.item() * len(idx)
            seen += len(idx)
        if not per_step:
            sched.step()
        if ema is not None:  # validate (and keep) the averaged weights; training continues from the raw ones
            raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(ema.state)
        model.eval()
        preds = []
        with torch.no_grad():
            for i in range(0, len(xv), 512):
                preds.append(forward(xv[i : i + 512].to(device)).argmax(1).cpu())
        pred = torch.cat(preds) if preds else yv[:0]
        val_acc = int((pred == yv).sum()) / max(1, len(xv))
        row = {"epoch": epoch, "train_loss": total_loss / max(1, seen), "val_accuracy": val_acc, "seconds": time.perf_counter() - t0}
        history.append(row)
        # A per-step schedule anneals to the last step: among equally accurate epochs the later one is kept. (The
        # per-epoch cosine of older configs keeps the first, as it always did.)
        if refit or val_acc > best_acc or (per_step and val_acc == best_acc):
            best_acc, best_epoch, bad = val_acc, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_pred = pred
        else:
            bad += 1
        if ema is not None:
            model.load_state_dict(raw)
        if on_epoch is not None:
            on_epoch(epoch, epochs, row)  # may raise optuna.TrialPruned through the search's callback
        if bad >= recipe.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
        if val_predictions is not None:
            val_predictions[:] = [best_pred]
    for row in history:
        row["best_epoch"] = best_epoch
    return history


# Options of the second phase (``nas_core.moca.finalize_top_k``) that every fidelity with a finalizer accepts.
FINETUNE_OPTIONS = ("finetune_top_k", "finetune_epochs", "finetune_patience", "finetune_seconds", "finetune_share", "finetune_recipe",
                    "finetune_lr", "finetune_batch_size")


@FIDELITIES.register("train")
def full_training(ctx: EvalContext) -> EvalResult:
    """Train from scratch with the sampled recipe (early stopping on validation), then measure everything."""
    set_seed(ctx.seed)
    model = assemble(ctx.arch)
    start = time.perf_counter()
    history = train_model(
        model, ctx.data, ctx.recipe, device=ctx.device, seed=ctx.seed, on_epoch=ctx.on_epoch, should_stop=ctx.should_stop
    )
    train_s = time.perf_counter() - start
    return finish(model, ctx, history, train_s)


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


def _register_plugins() -> None:
    """Import the fidelity modules that register themselves (cached/MoCAFT, zero-cost proxies)."""
    import importlib

    for module in ("nas_core.moca", "nas_core.proxies"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_register_plugins()
