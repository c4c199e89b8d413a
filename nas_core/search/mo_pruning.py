"""Multi-objective successive halving / ASHA: prune at rungs by non-dominated sorting + hypervolume contribution.

Optuna's pruners need ``trial.report``, which multi-objective studies do not allow. Here each trial
stores its objective vector at a rung (epochs 1, eta, eta^2, ... below the epoch budget) in the user
attribute ``mo_rung_<epoch>``; at a rung it is ranked against every trial that reached the same rung
(non-dominated front first, then exclusive hypervolume contribution within the front) and pruned
when it falls below the top ``1/eta``. A trial on the first front is never pruned, so a pruned trial
is always dominated at its rung by some other trial. Cost objectives (params, FLOPs, latency, size)
are known before training and measured once per trial.

Example::

    pruner = MOSuccessiveHalving(epochs=20, eta=3)
    # inside a training loop's epoch callback:
    pruner.check(study, trial, epoch, {"val_accuracy": 0.91}, objectives=("accuracy", "params"), arch=arch)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nas_core.errors import ConfigError
from nas_core.results.pareto import hv_contributions, nondominated_sort
from nas_core.schema.objectives import OBJECTIVES

__all__ = ["MOSuccessiveHalving", "rung_epochs", "rank_at_rung"]

RUNG_ATTR = "mo_rung_{}"
COST_ATTR = "mo_costs"


def rung_epochs(epochs: int, *, eta: int = 3, min_resource: int = 1) -> list[int]:
    """Rung epochs strictly below the budget: min_resource * eta**k (1, 3, 9 for 20 epochs and eta 3)."""
    out = []
    r = min_resource
    while r < epochs:
        out.append(r)
        r *= eta
    return out


def rank_at_rung(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Order of the points (best first): non-dominated rank, then hypervolume contribution within the rank."""
    ranks = nondominated_sort(values, directions)
    contrib = [0.0] * len(values)
    for r in set(ranks):
        members = [i for i, x in enumerate(ranks) if x == r]
        if len(members) > 1:
            hv = hv_contributions([values[i] for i in members], directions)
            for i, c in zip(members, hv):
                contrib[i] = c
    return sorted(range(len(values)), key=lambda i: (ranks[i], -contrib[i], i))


class MOSuccessiveHalving:
    """Successive halving for multi-objective studies; ``asynchronous=True`` is ASHA.

    ``check`` is called at the end of every epoch; at a rung it records the trial's objective vector
    and raises ``optuna.TrialPruned`` when the trial is not on the first front and not in the top
    ``max(1, n // eta)`` of the ``n`` trials that reached the rung. ASHA decides as soon as
    ``min_trials`` (default ``eta``) trials reached the rung; the synchronous variant waits for
    ``eta ** 2`` so its first decisions see a fuller rung (a sequential loop cannot pause trials).
    """

    def __init__(self, *, epochs: int, eta: int = 3, min_resource: int = 1, asynchronous: bool = True, min_trials: int | None = None) -> None:
        if eta < 2:
            raise ConfigError(f"successive halving needs eta >= 2, but got {eta=}.")
        if min_resource < 1 or epochs < 1:
            raise ConfigError(f"successive halving needs epochs >= 1 and min_resource >= 1, but got {epochs=}, {min_resource=}.")
        self.epochs = epochs
        self.eta = eta
        self.rungs = rung_epochs(epochs, eta=eta, min_resource=min_resource)
        self.asynchronous = asynchronous
        self.min_trials = min_trials if min_trials is not None else (eta if asynchronous else eta * eta)

    def _costs(self, trial: Any, objectives: Sequence[str], arch: Any) -> dict[str, float]:
        cached = trial.user_attrs.get(COST_ATTR) if hasattr(trial, "user_attrs") else None
        if cached is not None:
            return dict(cached)
        need = [o for o in objectives if o != "accuracy"]
        costs: dict[str, float] = {}
        if need and arch is not None:
            from nas_core.model.assembly import assemble
            from nas_core.training.measure import COSTS

            model = assemble(arch)
            shape = tuple(arch.input_shape)
            for o in need:
                costs[o] = float(COSTS[OBJECTIVES[o].metric](model, shape))
        trial.set_user_attr(COST_ATTR, costs)
        return costs

    def values_at(self, trial: Any, row: dict[str, float], objectives: Sequence[str], arch: Any) -> list[float]:
        costs = self._costs(trial, objectives, arch)
        out = []
        for o in objectives:
            metric = OBJECTIVES[o].metric
            out.append(float(row[metric]) if metric in row else float(costs[o]))
        return out

    def check(self, study: Any, trial: Any, epoch: int, row: dict[str, float], *, objectives: Sequence[str], arch: Any = None) -> None:
        """Record the trial at this epoch's rung and raise ``optuna.TrialPruned`` when it ranks below the top 1/eta."""
        if epoch not in self.rungs:
            return
        import optuna

        values = self.values_at(trial, row, objectives, arch)
        if not all(math.isfinite(v) for v in values):
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: objective values are not finite ({values})")
        key = RUNG_ATTR.format(epoch)
        trial.set_user_attr(key, values)
        others = [(t.number, t.user_attrs[key]) for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and key in t.user_attrs]
        population = others + [(trial.number, values)]
        if len(population) < self.min_trials:
            return
        directions = [OBJECTIVES[o].direction for o in objectives]
        pts = [v for _, v in population]
        ranks = nondominated_sort(pts, directions)
        me = len(population) - 1
        if ranks[me] == 0:
            return  # a non-dominated trial is always promoted
        order = rank_at_rung(pts, directions)
        keep = max(1, len(population) // self.eta)
        position = order.index(me)
        if position < keep:
            return
        from nas_core.results.pareto import dominates, to_minimize

        mine = to_minimize([values], directions)[0]
        by = [n for n, v in others if dominates(to_minimize([v], directions)[0], mine)][:5]
        raise optuna.TrialPruned(
            f"pruned by {'ASHA' if self.asynchronous else 'successive halving'} at epoch {epoch}: ranked {position + 1} of "
            f"{len(population)} at this rung (keeps the top {keep} and the first front); dominated by trial(s) {', '.join(map(str, by))}"
        )
