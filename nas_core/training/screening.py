"""Screening: a cheap first look at each sampled candidate, so only the promising ones train in full.

A full training of a sampled candidate is the search's main cost. Before it, the candidate trains once more cheaply:
**one epoch with its own recipe's schedule compressed into that epoch** (warm-up and anneal included, no early stop),
from an independent seed. Its score is the **mean rank of that epoch's validation accuracy and its FLOPs** among every
candidate of the study screened so far (the pool: other workers' too, read from the study). Only a candidate in the top
:data:`SCREEN_KEEP` of the pool (or, in a study with a cost objective, on the pool's front of screen accuracy against
FLOPs) goes on to its full training; the others end as pruned trials with the reason, having cost one epoch.

Why that score: ``benchmarks/ranking.py`` scored every cheap signal against a 15-epoch ground truth on 60 candidates of
the default space. On seed 0's sample the mean rank of 1-epoch accuracy and FLOPs was the only signal that beat both
free counts, #params and FLOPs, by paired bootstrap (tau 0.506; found after trying eight combinations). Fixed before it
ran, the test on an independent sample (``--seed 7``): tau 0.485 (95 % 0.35 to 0.60), minus #params +0.50 (+0.28 to
+0.71), minus FLOPs +0.23 (+0.07 to +0.40), at 15x less compute than the ground truth (``ranking_seed7.md``). FLOPs enter
with the sign they have there: at equal screen accuracy, the larger network tends to end ahead after a full training.

The known-good designs (``search.seeds``) are screened too, so the pool holds the textbook nets from the first trials
and a sampled candidate goes on only when it screens near them; they always train in full. While the pool holds fewer
than :data:`SCREEN_STARTUP` candidates, every candidate trains in full (nothing to compare with yet).

Example:
    >>> pool = [{"number": 0, "val_accuracy": 0.90, "flops": 4e6}, {"number": 1, "val_accuracy": 0.80, "flops": 1e6},
    ...         {"number": 2, "val_accuracy": 0.95, "flops": 8e6}, {"number": 3, "val_accuracy": 0.85, "flops": 2e6}]
    >>> decide(pool, me=3, cost_objective=False).promoted  # rank 3 of 4: not in the top 2 (ceil(4 / 3))
    False
    >>> decide(pool, me=3, cost_objective=True).promoted  # but on the front of accuracy against FLOPs
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["SCREEN_ATTR", "SCREEN_EPOCHS", "SCREEN_KEEP", "SCREEN_STARTUP", "SCREEN_SEED_OFFSET", "SCREEN_CHOICES", "Decision",
           "mean_rank", "decide", "screen_recipe", "screen_candidate", "screen_pool", "screening_enabled", "check_screen_option"]

from nas_core.schema.record import SCREEN_KEY

SCREEN_ATTR = SCREEN_KEY  # the trial's screen row, a live attribute: other trials (and workers) rank against it
SCREEN_EPOCHS = 1
SCREEN_KEEP = 1 / 3  # of the pool, by score, trains in full (successive halving's usual eta = 3)
SCREEN_STARTUP = 3  # a pool smaller than this (the candidate included) promotes everyone: there is nothing to rank against
SCREEN_SEED_OFFSET = 500_000  # the screen's seed is the trial's plus this: an independent run, as the ranking benchmark's
SCREEN_CHOICES = ("on", "off")


def screening_enabled(options: dict[str, Any]) -> bool:
    """Whether fidelity option ``screen`` (default ``on``) asks for screening; ``true``/``false`` are read as on/off."""
    value = options.get("screen", "on")
    return value is True or value == "on"


def check_screen_option(options: dict[str, Any]) -> None:
    """Raise a ConfigError for a ``screen`` option that is not on/off."""
    from nas_core.errors import ConfigError

    value = options.get("screen", "on")
    if not (isinstance(value, bool) or value in SCREEN_CHOICES):
        raise ConfigError(f"fidelity option screen must be on or off (e.g. --fidelity-option screen=off), but got {value!r}.")


def mean_rank(*columns: Sequence[float]) -> list[float]:
    """The mean over ``columns`` of each row's rank in that column (1 = lowest; ties share their average rank).

    Example:
        >>> mean_rank([0.9, 0.8, 0.95], [4, 1, 8])
        [2.0, 1.0, 3.0]
        >>> mean_rank([0.5, 0.7, 0.5, 0.9])
        [1.5, 3.0, 1.5, 4.0]
    """
    n = len(columns[0])
    sums = [0.0] * n
    for col in columns:
        for i, r in enumerate(_average_ranks(col)):
            sums[i] += r
    return [s / len(columns) for s in sums]


def _average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average (scipy's ``rankdata``, whose import costs a search ~1.3 s at start-up)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


@dataclass(frozen=True)
class Decision:
    """Whether a screened candidate trains in full, its place in the pool and why (the pruned trial's reason)."""

    promoted: bool
    position: int  # 1 = best score of the pool
    pool: int
    keep: int
    score: float
    reason: str


def decide(pool: Sequence[dict[str, Any]], *, me: int, cost_objective: bool) -> Decision:
    """Promote or not the pool's candidate numbered ``me`` (each row: ``number``, ``val_accuracy``, ``flops``).

    Promoted: the pool has fewer than :data:`SCREEN_STARTUP` rows, or its score (:func:`mean_rank` of screen accuracy and
    FLOPs) is among the best ``ceil(SCREEN_KEEP * n)``, or, with a cost objective, no other row has both a higher
    screen accuracy and fewer FLOPs (a cheap candidate the front may want).
    """
    rows = [r for r in pool if math.isfinite(float(r["val_accuracy"])) and math.isfinite(float(r["flops"]))]
    index = next((i for i, r in enumerate(rows) if r["number"] == me), None)
    if index is None:  # its own numbers are not finite: nothing to rank it by, and a full training says more
        return Decision(True, 0, len(rows), 0, math.nan, "its screen gave no finite accuracy or FLOPs to rank")
    scores = mean_rank([float(r["val_accuracy"]) for r in rows], [float(r["flops"]) for r in rows])
    mine = rows[index]
    position = 1 + sum(s > scores[index] for s in scores)
    n, keep = len(rows), max(1, math.ceil(SCREEN_KEEP * len(rows)))
    acc, flops = float(mine["val_accuracy"]), float(mine["flops"])
    if n < SCREEN_STARTUP:
        return Decision(True, position, n, keep, scores[index], f"screened {position} of {n}: too few screened yet to rank")
    if position <= keep:
        return Decision(True, position, n, keep, scores[index], f"screened {position} of {n} (the top {keep} train in full)")
    if cost_objective and not any(float(r["val_accuracy"]) >= acc and float(r["flops"]) <= flops
                                  and (float(r["val_accuracy"]) > acc or float(r["flops"]) < flops) for r in rows):
        return Decision(True, position, n, keep, scores[index],
                        f"screened {position} of {n}, but no other candidate screens higher with fewer FLOPs (a cost trade-off)")
    return Decision(False, position, n, keep, scores[index],
                    f"screened out: 1-epoch val accuracy {acc:.4f}, {flops / 1e6:,.2f} MFLOPs ranks {position} of {n} screened "
                    f"(the mean rank of the two; the top {keep} train in full)")


def screen_recipe(recipe: Any) -> Any:
    """The recipe of the screen: the same recipe with its schedule compressed into :data:`SCREEN_EPOCHS`, no early stop
    (what ``benchmarks/ranking.py`` calls ``1-epoch``: ``space.build(values, epochs=1)`` with patience above it)."""
    return replace(recipe, epochs=SCREEN_EPOCHS, patience=SCREEN_EPOCHS + 1)


def screen_candidate(arch: Any, recipe: Any, data: Any, *, device: Any, seed: int,
                     should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Train ``arch`` for the screen (:func:`screen_recipe`, seed ``seed``) and count its FLOPs; returns the screen row
    (``val_accuracy``, ``train_loss``, ``flops``, ``params``, ``seconds``). A candidate that diverges screens at accuracy 0;
    ``should_stop()`` turning true raises ``StopRequested`` at a batch boundary, as in any training."""
    from nas_core.model.assembly import assemble
    from nas_core.training.loop import Diverged, set_seed, train_model
    from nas_core.training.measure import count_flops, count_params

    set_seed(seed)
    model = assemble(arch)
    start = time.perf_counter()
    row: dict[str, Any] = {"flops": float(count_flops(model, tuple(arch.input_shape))), "params": int(count_params(model))}
    try:
        history = train_model(model, data, screen_recipe(recipe), device=device, seed=seed, should_stop=should_stop)
    except Diverged:
        history = []
    last = history[-1] if history else {}
    row.update(val_accuracy=float(last.get("val_accuracy", 0.0)), train_loss=float(last.get("train_loss", float("nan"))),
               seconds=round(time.perf_counter() - start, 3))
    return row


def screen_pool(trials: Sequence[Any]) -> list[dict[str, Any]]:
    """The screen rows the study's trials carry (:data:`SCREEN_ATTR`), each with its trial ``number``."""
    pool = []
    for t in trials:
        row = t.user_attrs.get(SCREEN_ATTR)
        if isinstance(row, dict) and "val_accuracy" in row and "flops" in row:
            pool.append({**row, "number": t.number})
    return pool
