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

This is Optuna's private API (the ``optuna>=5.0,<5.1`` pin in requirements.txt says why it is narrow); if the
function is not there, nothing is installed and TPE runs as it is.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["install"]

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
