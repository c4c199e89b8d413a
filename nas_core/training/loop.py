"""The training loop: device and thread choice, seeding, the optimizer, augmentation, early stopping."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_core.errors import ConfigError
from nas_core.schema.config import TrainingRecipe, parse_augmentation
from nas_core.training import recipes
from nas_core.training.stops import Diverged, StopRequested


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda.")
    return torch.device(device)


CHANNELS_LAST = os.environ.get("MOCA_CHANNELS_LAST", "1") != "0"
SMALL_INPUT = recipes.SMALL_INPUT  # pixels per channel up to which CPU training uses one thread (and auto stays fp32)


def cpu_threads(input_shape: tuple[int, ...], device: torch.device) -> int | None:
    """Torch threads for training on ``device``: 1 for small inputs on CPU, ``MOCA_THREADS`` when set, else None (torch's choice).

    On 8x8 digits a 4-conv network trains at 1.1 s/epoch with one thread and 10.9 s/epoch with two on a 2-core machine
    shared with other work: the threads of tiny convolutions mostly wait for each other. Search and ``train --config``
    use the same rule, so a retrain repeats the search's arithmetic.
    """
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
# A time-boxed training (``train_model(time_left=)``) counts the epochs that fit the time left at the pace of the last ones.
# When not one more fits, it ends at once (the box would drop it). When fewer fit than its schedule has left, counted with
# this share of one more kept spare for a last epoch slower than those (each epoch counts again, so only the last one's
# wavering is not caught), a recipe without weight averaging compresses the rest of its schedule into them, to end
# annealed. A recipe with an EMA of the weights does not: the average of a run cut mid-schedule is already a smoothed
# model. Fashion-MNIST, 4-conv design and recipe, 6 of 15 planned epochs, 5,000 images, 5 seeds, paired: compressing cost
# 0.21 pt of test accuracy with its EMA 0.99 (95 % -0.38 to -0.11, 5 of 5 worse; results/time_box_fashion-mnist.md) and
# gained 1.45 pt without it (95 % +0.91 to +2.01, 5 of 5 better; time_box_fashion-mnist_ema0.md).
ANNEAL_SPARE = 0.15
COMPRESS_WITH_EMA = False  # what that measurement decided (benchmarks/time_box.py sets it to measure again)


def budget_cut(history: list[dict[str, float]], *, done: int, planned: int, why: str) -> dict[str, Any]:
    """The ``cut_by_budget`` provenance of a time-boxed training that ended after ``done`` of its ``planned`` epochs;
    ``annealed`` when its schedule was compressed to end at that epoch (``schedule_epochs`` in its last row)."""
    return {"after_epoch": done, "of": planned, "annealed": bool(history) and history[-1].get("schedule_epochs") == done,
            "why": why, "retrain": "train --config runs the whole schedule"}


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


def warm_up_training() -> None:
    """Pay torch's lazy imports before the first trial: a process's first optimizer imports ``torch._dynamo`` (2-5 s on a
    busy 2-core machine), which inside a trial is before its first batch, where a stop cannot be heard; during a
    search's start-up a stop is answered at once."""
    make_optimizer([torch.nn.Parameter(torch.zeros(1))], TrainingRecipe())


def time_epoch(model: nn.Module, data: Any, recipe: TrainingRecipe, *, device: torch.device, seed: int = 0,
               sample: int = 4096, repeats: int = 3, should_stop: Callable[[], bool] = lambda: False) -> float:
    """Seconds one epoch of ``recipe`` on ``data`` (its training split, then validation) takes on this machine now.

    Timed on a slice: ``repeats`` epochs of ``train_model`` on ``sample`` training images and a validation slice of the
    same proportion; the fastest epoch after the first (which pays for allocations) is scaled up to the full splits.
    The fastest, not the last: a slice epoch lasts about a second, so a burst of other work (a tracking process
    starting, another job loading its data) can double one of them. On Fashion-MNIST with a second benchmark lane
    starting beside it, the last of two epochs said 74 s an epoch where the one training's epochs then took 45-57 s.
    4,096 images, not 1,024: a slice that fits the CPU's caches runs faster than the whole split (alone on this machine,
    47.6 s an epoch from 1,024 images and 53.2 s from 4,096, against 48-54 s for full epochs).
    It trains ``model``; pass a fresh one. A planner uses it to fit epochs to a budget before spending the budget.
    Raises :class:`StopRequested` at a batch boundary once ``should_stop()`` is true.
    """
    n = len(data.y_train)
    m = max(2, min(n, sample))
    mv = max(1, round(m * len(data.y_val) / max(1, n)))
    part = SimpleNamespace(x_train=data.x_train[:m], y_train=data.y_train[:m], x_val=data.x_val[:mv], y_val=data.y_val[:mv])
    epochs = max(2, repeats)
    quick = replace(recipe, epochs=epochs, patience=epochs + 1, train_split="train")
    history = train_model(model, part, quick, device=device, seed=seed, should_stop=should_stop)
    return min(float(row["seconds"]) for row in history[1:]) * n / m


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
    time_up: Callable[[], bool] | None = None,
    time_left: Callable[[], float] | None = None,
    on_kept: Callable[[int, nn.Module, torch.Tensor, list[dict[str, float]]], None] | None = None,
    validate: bool = True,
) -> list[dict[str, float]]:
    """Train with the recipe, early-stop on validation accuracy and restore the best weights.

    ``forward``/``x_train``/``x_val`` let the cached fidelity train a head on precomputed features.
    ``val_predictions``, when given, receives the validation predictions of the restored (best) epoch,
    so a caller need not run the validation split again.
    Raises :class:`StopRequested` at a batch boundary when ``should_stop()`` turns true and
    :class:`Diverged` on a NaN loss.
    ``time_up`` time-boxes the training: once it turns true at a batch boundary after at least one whole epoch, training
    ends there as at the schedule's end (the epoch in progress is dropped; the best whole epoch's weights are kept, the
    last one's for a refit), so a run its budget cuts still yields a model. Before the first whole epoch it raises
    :class:`StopRequested`, like ``should_stop``.
    ``time_left`` (seconds until that time box) is checked before each epoch against the pace of the last ones (with
    ``ANNEAL_SPARE``): when not one more whole epoch fits, training ends at once (the box would drop it); when fewer fit
    than are planned and the recipe has a per-step schedule and no weight averaging, the rest of the schedule is compressed
    into them (:func:`recipes.compress_schedule`) so it ends annealed there. Rows from then on carry ``schedule_epochs``
    (the epochs the schedule now has), and ``on_epoch`` is told that total.
    ``on_kept(epoch, model, val_predictions, history)`` is called after each epoch whose weights become the ones the
    training would keep (its best so far), while ``model`` holds them (the averaged ones with EMA) in eval mode, before
    training goes on from the raw ones; a time-boxed training measures and holds such a model, so a stop keeps it.
    Each row's ``val_seconds`` is the part of its ``seconds`` spent validating. ``validate=False`` (a refit on train +
    validation only, which keeps its last epoch whatever validation says) skips validation: its rows carry no
    ``val_accuracy`` and ``on_kept`` is not called. Validating 9,000 Fashion-MNIST images in float32 takes ~4 s, which
    is 9 % of a float32 refit epoch of the 4-conv net on 2 CPU cores and 15 % of a bf16 one.
    """
    epochs = epochs or recipe.epochs
    forward = forward or model
    xt = data.x_train if x_train is None else x_train
    xv = data.x_val if x_val is None else x_val
    yt, yv = data.y_train, data.y_val
    # A refit on train+val (the final training of a timed search) has no held-out split to choose an epoch by: it keeps the last.
    refit = recipe.trains_on_val and x_train is None
    if not validate and not refit:
        raise ValueError("validate=False is for a refit on train + validation: any other training keeps its best validated epoch")
    if refit:
        xt, yt = torch.cat([data.x_train, data.x_val]), torch.cat([data.y_train, data.y_val])
    model.to(device)
    # Channels-last convolutions train 10-30 % faster on CPU (oneDNN); the arithmetic is the same up to float rounding.
    # Only images through the whole model: a cached head trains on features (``forward``), left as they are.
    channels_last = CHANNELS_LAST and device.type == "cpu" and x_train is None and forward is model and xt.dim() == 4
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes memory_format; the stubs omit it
    # bf16 autocast for whole models on images (a cached head on features stays in float32); validation runs in float32.
    precision = recipes.resolve_precision(recipe.precision, device, tuple(xt.shape)) if x_train is None and forward is model else "fp32"
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
    cut = False
    end = epochs  # the last epoch of the schedule: earlier once a time box compresses it
    steps, lap, laps = 0, time.perf_counter(), []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        if epoch > 2:  # an epoch as the caller lives it (its callbacks included); the first, which warms up, is not counted
            laps.append(t0 - lap)
        lap = t0
        if time_left is not None and laps:
            # the pace: the median of the last three epochs, so one burst of other work does not shorten the schedule
            left, pace = time_left(), max(1e-9, float(np.median(laps[-3:])))
            fit = max(1, int(left / pace - ANNEAL_SPARE))
            if left < pace:  # not one more whole epoch fits the box: end now rather than train one that the box would drop
                end = epoch - 1
            elif fit <= end - epoch and per_step and (ema is None or COMPRESS_WITH_EMA):
                # the epochs still planned do not fit: without weight averaging, compress the rest of the schedule into
                # those that do, so the weights end annealed (with it, the average already is: see ANNEAL_SPARE's note)
                end = epoch - 1 + fit
                recipes.compress_schedule(sched, steps_left=fit * max(1, steps))
        if epoch > end:
            break
        model.train()
        perm = torch.randperm(n, generator=gen)
        total_loss, seen, steps = 0.0, 0, 0
        for i in range(0, n, bs):
            if should_stop():
                raise StopRequested(f"stopped by the user during epoch {epoch}")
            if time_up is not None and time_up():
                if not history:
                    raise StopRequested(f"the time budget ended during epoch {epoch}, before a whole epoch")
                cut = True
                break
            idx = perm[i : i + bs]
            if len(idx) < 2 and n >= 2:
                continue  # batch norm cannot train on a single sample
            xb = xt[idx]
            if ops:
                xb = recipes.augment(xb, ops, gen)
            xb, yb = xb.to(device, non_blocking=True), yt[idx].to(device, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with recipes.autocast(precision, device):
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
            steps += 1
        if cut:  # the weights of the epoch in progress are neither validated nor kept
            break
        if not per_step:
            sched.step()
        if ema is not None:  # validate (and keep) the averaged weights; training continues from the raw ones
            raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(ema.state)
        model.eval()
        t_val = time.perf_counter()
        pred, scores = yv[:0], {}  # a refit that does not validate keeps its last epoch: no score, no predictions
        if validate:
            preds = []
            with torch.no_grad():
                for i in range(0, len(xv), 512):
                    xvb = xv[i : i + 512].to(device)
                    if channels_last:
                        xvb = xvb.contiguous(memory_format=torch.channels_last)
                    preds.append(forward(xvb).argmax(1).cpu())
            pred = torch.cat(preds) if preds else pred
            scores = {"val_accuracy": int((pred == yv).sum()) / max(1, len(xv))}
        val_acc = scores.get("val_accuracy", math.nan)
        t_end = time.perf_counter()
        row = {"epoch": epoch, "train_loss": total_loss / max(1, seen), **scores, "seconds": t_end - t0, "val_seconds": t_end - t_val}
        if end < epochs:
            row["schedule_epochs"] = end
        history.append(row)
        # A per-step schedule anneals to the last step: among equally accurate epochs the later one is kept. (The
        # per-epoch cosine of older configs keeps the first, as it always did.)
        if refit or val_acc > best_acc or (per_step and val_acc == best_acc):
            best_acc, best_epoch, bad = val_acc, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_pred = pred
            if on_kept is not None and validate:
                on_kept(epoch, model, pred, history)
        else:
            bad += 1
        if ema is not None:
            model.load_state_dict(raw)
        if on_epoch is not None:
            on_epoch(epoch, end, row)  # may raise optuna.TrialPruned through the search's callback
        if bad >= recipe.patience:
            break
    if channels_last:  # what leaves the loop is in torch's usual layout (safetensors, ONNX and the latency probe expect it)
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # as above
    if best_state is not None:  # load_state_dict copies into the parameters as they are laid out now
        model.load_state_dict(best_state)
        if val_predictions is not None:
            val_predictions[:] = [best_pred]
    for row in history:
        row["best_epoch"] = best_epoch
    return history
