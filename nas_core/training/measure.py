"""Measurements of a trained network: accuracy, macro F1, confusion, params, FLOPs, size and latency."""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_core.training.stops import StopRequested


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
    costs = {"params": count_params(model), "flops": count_flops(model, shape), "latency_ms": latency["latency_ms"], "size_mb": model_size_mb(model)}
    return _measured(val, test, costs, latency)


def _measured(val: dict[str, Any], test: dict[str, Any], costs: dict[str, Any], latency: dict[str, Any]) -> dict[str, Any]:
    """What :func:`measure_model` and :func:`measure_held` return: the metrics (accuracies, F1, then the costs), the test
    split's confusion and per-class accuracy, and the latency record."""
    metrics = {"val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "val_macro_f1": val["macro_f1"],
               **costs}
    return {"metrics": metrics, "confusion": test["confusion"], "per_class_accuracy": test["per_class_accuracy"], "latency": latency}


def measure_held(model: nn.Module, data: Any, device: torch.device, val_pred: torch.Tensor, *,
                 static: dict[str, Any] | None = None, should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """:func:`measure_model`'s result for a model mid-training, from its validation predictions of that epoch and a test
    pass; the costs (params, FLOPs, size, latency), which do not depend on the weights, are taken from ``static`` (an
    earlier result of this function or of :func:`measure_model`) when given, else measured on a contiguous copy."""
    shape = tuple(data.input_shape)
    val = classification_metrics(data.y_val.numpy(), val_pred.numpy(), data.num_classes)
    test = classification_metrics(data.y_test.numpy(), predict(model, data.x_test, device), data.num_classes)
    if static is None:
        plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # as loop.train_model
        with torch.random.fork_rng(devices=[]):  # its random input must not move the training's draws (dropout): `train
            latency = measure_latency(plain, shape, should_stop=should_stop)  # --config` repeats the run bit for bit
        costs = {"params": count_params(plain), "flops": count_flops(plain, shape), "latency_ms": latency["latency_ms"],
                 "size_mb": model_size_mb(plain)}
    else:
        latency = dict(static["latency"])
        costs = {k: static["metrics"][k] for k in ("params", "flops", "latency_ms", "size_mb")}
    return _measured(val, test, costs, latency)


# How to measure each cost objective on an untrained network, by metric name (the multi-objective pruner ranks
# early epochs by them); a new cost objective adds its measurement here.
COSTS: dict[str, Callable[[nn.Module, tuple[int, ...]], float]] = {
    "params": lambda model, shape: float(count_params(model)),
    "flops": lambda model, shape: float(count_flops(model, shape)),
    "latency_ms": lambda model, shape: float(measure_latency(model, shape, repeats=15, budget_s=1.0)["latency_ms"]),
    "size_mb": lambda model, shape: float(model_size_mb(model)),
}
