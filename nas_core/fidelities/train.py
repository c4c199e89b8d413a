"""The ``train`` fidelity: train from scratch with early stopping on validation, then measure everything; the search
screens each candidate first (``training.screening``) unless its option ``screen`` is off."""

from __future__ import annotations

import time
from typing import Any

import torch

from nas_core.fidelities.base import EvalContext, EvalResult, Fidelity, FidelityOption, finish, register_fidelity
from nas_core.model.assembly import assemble
from nas_core.training.frozen import fit_head
from nas_core.training.loop import set_seed, train_model
from nas_core.training.measure import measure_held
from nas_core.training.screening import SCREEN_CHOICES, check_screen_option
from nas_core.training.stops import StopRequested


def full_training(ctx: EvalContext) -> EvalResult:
    """Train from scratch with the sampled recipe (early stopping on validation), then measure everything; with
    ``ctx.frozen_body``, only the head trains, on that body's features (:func:`training.frozen.fit_head`)."""
    set_seed(ctx.seed)
    model = assemble(ctx.arch)
    if ctx.frozen_body is not None:
        start = time.perf_counter()
        history, feature_s = fit_head(model, ctx.data, ctx.recipe, ctx.frozen_body, device=ctx.device, seed=ctx.seed, on_epoch=ctx.on_epoch,
                                      should_stop=ctx.should_stop, time_up=ctx.time_up, time_left=ctx.time_left)
        return finish(model, ctx, history, time.perf_counter() - start, frozen_body=True, feature_seconds=round(feature_s, 3),
                      trainable_params=sum(p.numel() for p in model.head.parameters()))
    start = time.perf_counter()
    holder = Holder(ctx, start) if ctx.time_up is not None and ctx.time_left is not None else None
    try:
        history = train_model(
            model, ctx.data, ctx.recipe, device=ctx.device, seed=ctx.seed, on_epoch=ctx.on_epoch, should_stop=ctx.should_stop,
            time_up=ctx.time_up, time_left=ctx.time_left, on_kept=holder.on_kept if holder else None,
        )
    except StopRequested as exc:
        if holder is None or holder.held is None or not ctx.should_stop():
            raise
        return holder.result(str(exc))
    train_s = time.perf_counter() - start
    extra = {"holds": holder.holds} if holder and holder.holds else {}
    return finish(model, ctx, history, train_s, **extra)


# A time-boxed training (the one training, the hour's only result) holds a measured model as it goes, so that a Stop or
# Ctrl-C in its middle keeps the model it had rather than nothing: at its first kept epoch, then at the first kept epoch
# after each HOLD_SHARE of its time box, and never more often than HOLD_COST_FACTOR times the last test pass took (so the
# holds cost at most ~2 % of the training). Fashion-MNIST, an hour's 4-conv one training: a hold every ~4 epochs, ~3 s each.
HOLD_SHARE = 1 / 12
HOLD_COST_FACTOR = 50.0


class Holder:
    """The measured model a time-boxed training would hand over if it were stopped now (:func:`full_training`).

    ``on_kept`` (``train_model``'s hook) measures the model as it stands when a hold is due: its validation predictions of
    that epoch, one pass over the test split, and the costs (params, FLOPs, latency), measured once. A stop then returns
    that model with those figures (:meth:`result`), which costs no measurement after the signal. ``holds`` lists every hold
    (``train_seconds`` since the training started, ``at`` the wall clock), which ``benchmarks/fashion_default.py`` reads as
    the search's anytime curve.
    """

    def __init__(self, ctx: EvalContext, start: float) -> None:
        self.ctx, self.start = ctx, start
        assert ctx.time_left is not None  # full_training checked it
        self.every = max(0.0, ctx.time_left()) * HOLD_SHARE
        self.last: float | None = None  # when the last hold was measured
        self.cost = 0.0  # seconds the last hold's measurement took
        self.held: dict[str, Any] | None = None
        self.holds: list[dict[str, Any]] = []

    def on_kept(self, epoch: int, model: Any, val_pred: Any, history: list[dict[str, float]]) -> None:
        now = time.perf_counter()
        if self.last is not None and now - self.last < max(self.every, HOLD_COST_FACTOR * self.cost):
            return
        static = self.held["measured"] if self.held else None
        measured = measure_held(model, self.ctx.data, self.ctx.device, val_pred, static=static, should_stop=self.ctx.should_stop)
        done = time.perf_counter()
        self.last, self.cost = done, done - now
        if history:  # this epoch's row: its progress event and MLflow's per-epoch metrics show what a Stop would keep
            history[-1]["held_test_accuracy"] = measured["metrics"]["test_accuracy"]
        rows = [dict(row, best_epoch=epoch) for row in history]
        self.held = {"epoch": epoch, "measured": measured, "history": rows, "train_seconds": now - self.start,
                     "state_dict": {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}}
        self.holds.append({"epoch": epoch, "train_seconds": round(now - self.start, 3), "at": time.time(),
                           "val_accuracy": measured["metrics"]["val_accuracy"], "test_accuracy": measured["metrics"]["test_accuracy"],
                           "measure_seconds": round(self.cost, 3)})

    def result(self, why: str) -> EvalResult:
        """The held model as this training's result, after a stop (``why``) ended it."""
        held = self.held
        assert held is not None  # full_training checked it
        measured = held["measured"]
        metrics = {**measured["metrics"], "train_seconds": held["train_seconds"], "epochs_trained": held["epoch"]}
        return EvalResult(metrics=metrics, history=held["history"], confusion=measured["confusion"],
                          per_class_accuracy=measured["per_class_accuracy"], latency=measured["latency"], state_dict=held["state_dict"],
                          extra={"holds": self.holds, "stopped": {"kept_epoch": held["epoch"], "why": why}})


SCREEN_OPTION = FidelityOption(
    "screen", "Screen candidates first", "on", choices=SCREEN_CHOICES,
    help="Each sampled candidate first trains one epoch with its schedule compressed into it; only those whose mean rank of "
         "that accuracy and their FLOPs is in the top third of the candidates screened so far train in full "
         "(the known-good designs always do). off: every candidate trains in full.")


@register_fidelity("train")
class Train(Fidelity):
    summary = "full training with early stopping, after a one-epoch screen"
    time_boxed = True
    screens = True
    options = ("screen",)
    page_options = (SCREEN_OPTION,)

    def check(self, options: dict[str, Any]) -> None:
        check_screen_option(options)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        return full_training(ctx)
