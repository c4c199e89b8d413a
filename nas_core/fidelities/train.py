"""The ``train`` fidelity: train from scratch with early stopping on validation, then measure everything; the search
screens each candidate first (``training.screening``) unless its option ``screen`` is off."""

from __future__ import annotations

import time
from typing import Any

from nas_core.fidelities.base import EvalContext, EvalResult, Fidelity, FidelityOption, finish, register_fidelity
from nas_core.model.assembly import assemble
from nas_core.training.frozen import fit_head
from nas_core.training.loop import set_seed, train_model
from nas_core.training.screening import SCREEN_CHOICES, check_screen_option


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
    history = train_model(
        model, ctx.data, ctx.recipe, device=ctx.device, seed=ctx.seed, on_epoch=ctx.on_epoch, should_stop=ctx.should_stop,
        time_up=ctx.time_up, time_left=ctx.time_left,
    )
    train_s = time.perf_counter() - start
    return finish(model, ctx, history, train_s)


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
