"""The ``train`` fidelity: train from scratch with early stopping on validation, then measure everything."""

from __future__ import annotations

import time

from nas_core.fidelities.base import EvalContext, EvalResult, Fidelity, finish, register_fidelity
from nas_core.model.assembly import assemble
from nas_core.training.loop import set_seed, train_model


def full_training(ctx: EvalContext) -> EvalResult:
    """Train from scratch with the sampled recipe (early stopping on validation), then measure everything."""
    set_seed(ctx.seed)
    model = assemble(ctx.arch)
    start = time.perf_counter()
    history = train_model(
        model, ctx.data, ctx.recipe, device=ctx.device, seed=ctx.seed, on_epoch=ctx.on_epoch, should_stop=ctx.should_stop,
        time_up=ctx.time_up, time_left=ctx.time_left,
    )
    train_s = time.perf_counter() - start
    return finish(model, ctx, history, train_s)


@register_fidelity("train")
class Train(Fidelity):
    summary = "full training with early stopping"
    time_boxed = True

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        return full_training(ctx)
