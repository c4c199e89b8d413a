"""How well a study's own ranking signal orders the accuracy that matters, with a bootstrap interval.

A search ranks its candidates by something cheaper than the truth: the cached fidelity by a proxy
score (checked against the finalists' fine-tuned accuracy), the train fidelity's screen by one epoch's accuracy and the
FLOPs (checked against the promoted candidates' validation accuracy after their full training) and by validation accuracy
after a short, early-stopped run (checked against the same networks' test accuracy), and a pruned search
by the first epochs (checked against where the finished trials ended). Each check is a Kendall tau over
the trials that carry both numbers, with a 95 % percentile interval from resampling those trials, because
with a few dozen trials tau alone has an error near 0.1 (``benchmarks/ranking.py`` does the same over 60
trained candidates against #params and FLOPs).

Example::

    from nas_core.ranking import ranking_quality
    for check in ranking_quality(study.get_trials()):
        print(check.signal, check.target, check.kendall, check.ci95)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas_core.schema.record import trial_record

__all__ = ["RankingCheck", "kendall", "bootstrap_ci", "ranking_quality"]

BOOTSTRAP = 1000  # resamples for the interval (the pages); benchmarks use more
MIN_TRIALS = 5  # fewer pairs than this say nothing about a ranking


def kendall(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Kendall tau-b of two equally long sequences (NaN when either is constant or shorter than 2)."""
    from scipy.stats import kendalltau

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(kendalltau(x, y).statistic)


def bootstrap_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, n_boot: int = BOOTSTRAP,
                 seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of Kendall tau over ``n_boot`` resamples of the pairs (seeded: the same data, the same interval)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    taus = [kendall(x[s], y[s]) for s in (rng.integers(0, len(x), len(x)) for _ in range(n_boot))]
    taus = [t for t in taus if not math.isnan(t)]
    if not taus:
        return float("nan"), float("nan")
    return float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))


@dataclass(frozen=True)
class RankingCheck:
    """One ranking signal against one target over ``n`` trials: tau, its 95 % interval and the pairs themselves."""

    signal: str
    target: str
    n: int
    kendall: float
    ci95: tuple[float, float]
    numbers: tuple[int, ...] = field(repr=False, default=())
    signal_values: tuple[float, ...] = field(repr=False, default=())
    target_values: tuple[float, ...] = field(repr=False, default=())
    note: str = ""

    @property
    def verdict(self) -> str:
        """A one-line reading of the interval for people who do not read intervals."""
        lo, hi = self.ci95
        if math.isnan(self.kendall):
            return "no ranking: one of the two numbers is the same for every trial"
        if lo > 0.5:
            return "ranks well (the whole interval is above 0.5)"
        if lo > 0:
            return "ranks better than chance (the interval is above 0), but loosely"
        return "not shown to rank better than chance (the interval includes 0)"


def _check(signal: str, target: str, rows: list[tuple[int, float, float]], note: str) -> RankingCheck | None:
    rows = [r for r in rows if math.isfinite(r[1]) and math.isfinite(r[2])]
    if len(rows) < MIN_TRIALS:
        return None
    numbers, s, t = zip(*rows)
    return RankingCheck(signal=signal, target=target, n=len(rows), kendall=kendall(s, t), ci95=bootstrap_ci(s, t),
                        numbers=tuple(int(n) for n in numbers), signal_values=tuple(map(float, s)), target_values=tuple(map(float, t)),
                        note=note)


def _metric(trial: Any, key: str) -> float:
    value = (trial_record(trial).get("metrics") or {}).get(key)
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def ranking_quality(trials: Sequence[Any]) -> list[RankingCheck]:
    """The checks these trials support (possibly none): proxy vs final, validation vs test, first epoch vs last.

    ``trials`` are Optuna ``FrozenTrial`` objects with the engine's user attributes (``metrics``, ``history``);
    pass them with any post-search record laid over (the dashboard's ``_trials``).
    """
    complete = [t for t in trials if getattr(t.state, "name", "") == "COMPLETE"]
    checks: list[RankingCheck | None] = []
    proxy_key = next((k for k in ("proxy_accuracy", "proxy_score") if any(math.isfinite(_metric(t, k)) for t in complete)), None)
    if proxy_key:
        checks.append(_check(
            "proxy score" if proxy_key == "proxy_score" else "proxy accuracy (cached fidelity)", "final accuracy (fine-tuned)",
            [(t.number, _metric(t, proxy_key), _metric(t, "final_accuracy")) for t in complete],
            "What the trials were ranked by, against the accuracy the finalists reached when trained end to end."))
    screened = []
    for t in complete:
        screen = trial_record(t).get("screen") or {}
        if isinstance(screen, dict) and "val_accuracy" in screen and "flops" in screen and not screen.get("duplicate_of"):
            screened.append((t.number, float(screen["val_accuracy"]), float(screen["flops"]), _metric(t, "val_accuracy")))
    if len(screened) >= MIN_TRIALS:
        from nas_core.training.screening import mean_rank

        scores = mean_rank([r[1] for r in screened], [r[2] for r in screened])
        checks.append(_check(
            "screen score (1-epoch accuracy + FLOPs)", "validation accuracy after the full training",
            [(r[0], score, r[3]) for r, score in zip(screened, scores)],
            "What the search screened the candidates by (the mean rank of one compressed-schedule epoch's accuracy and the "
            "FLOPs), against where the candidates it trained in full ended. Only promoted candidates have both, so the "
            "range is narrower than the pool's."))
    checks.append(_check(
        "validation accuracy", "test accuracy",
        [(t.number, _metric(t, "val_accuracy"), _metric(t, "test_accuracy")) for t in complete],
        "The search picks by validation accuracy; the test split is never used to choose, so this is how well that choice holds."))
    early = []
    for t in complete:
        history = trial_record(t).get("history") or []
        if len(history) >= 3:  # a one- or two-epoch run has no early rung worth reading
            early.append((t.number, float(history[0].get("val_accuracy", float("nan"))), _metric(t, "val_accuracy")))
    checks.append(_check(
        "validation accuracy after epoch 1", "validation accuracy at the end",
        early, "What a pruner's first rung would have seen, against where the finished trials ended."))
    return [c for c in checks if c is not None]
