"""TPE that splits the study once per trial, not once per parameter: the same samples, in less time.

Optuna's ``TPESampler(multivariate=True)`` samples the parameters every trial shares together, and each of the others
(the default space's conditional ones: a deeper network's extra layers, a second FC layer's width) on its own. Every
one of those calls begins by splitting the study's trials into "below" and "above" (for several objectives a
non-dominated sort and a hypervolume-based selection over all of them), and for the parameters of one trial the
answer is the same each time: same trials, same ``n_below``. At 500 trials the repeats were a quarter of a trial's
sampling time (py-spy, ``benchmarks/overhead.py``).

:func:`install` wraps Optuna's module-level ``_split_trials`` with a one-entry memo per thread: a call with the very
same study, the very same trial objects (identity: a study read hands the sampler the same ``FrozenTrial`` objects for
the whole of a trial's sampling) and the same ``n_below`` gets the previous answer (as fresh lists). The memo holds
the trials it was computed from, so their identities cannot be reused while it holds them. Anything else is computed
as before. The samples do not change (tests/test_tpe.py samples a study both ways and compares).

:class:`CachedTPESampler` is Optuna's ``TPESampler`` that also keeps, per search space, each finished trial's parameters
in TPE's internal representation. Every sampling call converted every earlier trial's parameters again (for a
categorical a search of its choices), a fifth of TPE's time at 500 trials; a finished trial's parameters never change,
so the conversion is done once. The arrays are built from the same values in the same order: the samples do not change
(tests/test_tpe.py).

This is Optuna's private API (the ``optuna>=5.0,<5.1`` pin in requirements.txt says why it is narrow); if the
function is not there, nothing is installed and TPE runs as it is.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial

__all__ = ["CachedTPESampler", "install"]

_memo = threading.local()
_installed = False
_lock = threading.Lock()


def install() -> bool:
    """Wrap TPE's split of the study with the memo (once per process); whether it is in place."""
    global _installed
    with _lock:
        if _installed:
            return True
        try:
            from optuna.samplers._tpe import sampler as tpe_module

            original = tpe_module._split_trials
        except (ImportError, AttributeError):
            return False

        def split_once(study: Any, trials: list[Any], n_below: int) -> tuple[list[Any], list[Any]]:
            last = getattr(_memo, "last", None)
            if (last is not None and last[0] is study and last[1] == n_below and len(last[2]) == len(trials)
                    and all(a is b for a, b in zip(last[2], trials))):
                below, above = last[3]
            else:
                below, above = original(study, trials, n_below)
                _memo.last = (study, n_below, list(trials), (below, above))
            return list(below), list(above)

        split_once.__wrapped__ = original  # type: ignore[attr-defined]  # for tests and introspection
        tpe_module._split_trials = split_once
        _installed = True
        return True


class CachedTPESampler(TPESampler):
    """``TPESampler`` converting each finished trial's parameters to its internal representation once per search space."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # search space -> id(trial) -> (the trial, its row of internal values, or None when it lacks a parameter);
        # the trial is held so that its id cannot be reused while the row is cached
        self._rows: dict[tuple[tuple[str, BaseDistribution], ...], dict[int, tuple[FrozenTrial, tuple[Any, ...] | None]]] = {}
        self._rows_lock = threading.Lock()

    def _get_internal_repr(self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution],
                           study: Study) -> dict[str, np.ndarray]:
        # What Optuna's method returns (the trials that have every parameter of the space, in order), from cached rows.
        with self._rows_lock:
            cache = self._rows.setdefault(tuple(search_space.items()), {})
        rows = []
        for trial in trials:
            hit = cache.get(id(trial))
            if hit is not None and hit[0] is trial:
                row = hit[1]
            else:
                params = self._get_params(trial, study)
                row = (tuple(d.to_internal_repr(params[n]) for n, d in search_space.items())
                       if search_space.keys() <= params.keys() else None)
                if trial.state.is_finished():  # a running trial's parameters may still grow
                    cache[id(trial)] = (trial, row)
            if row is not None:
                rows.append(row)
        if not rows:
            return {name: np.asarray([]) for name in search_space}
        return {name: np.asarray(column) for name, column in zip(search_space, zip(*rows))}
