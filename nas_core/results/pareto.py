"""Pareto tools: non-dominated sorting, hypervolume, and the human picks (best, fastest-near-best, knee, smallest)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas_core.schema.record import HEAD_ON_BODY

__all__ = ["to_minimize", "dominates", "nondominated_sort", "pareto_front", "hypervolume", "normalizer", "pick_points", "hv_contributions"]


def to_minimize(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Values as a float array where smaller is better in every column (maximised columns negated)."""
    arr = np.asarray(values, dtype=float).reshape(len(values), len(directions))
    signs = np.array([-1.0 if d.startswith("max") else 1.0 for d in directions])
    return arr * signs


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def _dominated_counts(pts: np.ndarray, alive: np.ndarray, *, chunk: int = 512) -> np.ndarray:
    """For each alive point, how many other alive points dominate it (numpy, in row chunks to bound memory)."""
    idx = np.flatnonzero(alive)
    cand = pts[idx]
    counts = np.zeros(len(idx), dtype=np.int64)
    for start in range(0, len(idx), chunk):
        block = cand[start:start + chunk]  # the points that may dominate
        le = np.all(block[:, None, :] <= cand[None, :, :], axis=2)
        lt = np.any(block[:, None, :] < cand[None, :, :], axis=2)
        counts += np.sum(le & lt, axis=0)
    out = np.zeros(len(pts), dtype=np.int64)
    out[idx] = counts
    return out


def nondominated_sort(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Front rank of each point (0 = Pareto front), by repeated peeling of the points no remaining point dominates.

    Vectorised with numpy: the pure-Python double loop took seconds per call at a thousand trials.
    """
    pts = to_minimize(values, directions)
    n = len(pts)
    ranks = np.full(n, -1, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    rank = 0
    while alive.any():
        front = alive & (_dominated_counts(pts, alive) == 0)
        ranks[front] = rank
        alive &= ~front
        rank += 1
    return ranks.tolist()


def pareto_front(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (one pass, without ranking the rest)."""
    pts = to_minimize(values, directions)
    if len(pts) == 0:
        return []
    return np.flatnonzero(_dominated_counts(pts, np.ones(len(pts), dtype=bool)) == 0).tolist()


def normalizer(values: Sequence[Sequence[float]], directions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(low, span) of the minimisation-form values, so a study's hypervolumes share one scale."""
    pts = to_minimize(values, directions)
    low, high = pts.min(axis=0), pts.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    return low, span


def hypervolume(values: Sequence[Sequence[float]], directions: Sequence[str], *, scale: tuple[np.ndarray, np.ndarray] | None = None, reference: float = 1.1) -> float:
    """Hypervolume of the points, normalised to [0, 1] per objective (reference 1.1 in every objective)."""
    if len(values) == 0:
        return 0.0
    low, span = scale if scale is not None else normalizer(values, directions)
    pts = (to_minimize(values, directions) - low) / span
    pts = pts[np.all(pts < reference, axis=1)]
    if len(pts) == 0:
        return 0.0
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(pts, np.full(pts.shape[1], reference)))


def hv_contributions(values: Sequence[Sequence[float]], directions: Sequence[str], *, scale: tuple[np.ndarray, np.ndarray] | None = None) -> list[float]:
    """Exclusive hypervolume each point contributes (0 for dominated points)."""
    scale = scale or normalizer(values, directions)
    total = hypervolume(values, directions, scale=scale)
    out = []
    for i in range(len(values)):
        rest = [v for j, v in enumerate(values) if j != i]
        out.append(total - hypervolume(rest, directions, scale=scale) if rest else total)
    return out


def pick_points(rows: Sequence[dict[str, Any]], *, accuracy_key: str = "val_accuracy") -> dict[str, int]:
    """Indices into ``rows`` (dicts of metrics) of the human picks.

    - ``best_accuracy``: highest validation accuracy, ties to lower latency; not a head fitted on another trial's frozen
      body (metric ``head_on_body``, the small companion) while any other row exists: the final training refits this
      pick from scratch, which such a head cannot be;
    - ``fastest_within_1pt``: lowest latency among those within 1 point of the best accuracy;
    - ``knee``: the balanced point closest to the ideal in normalised accuracy/latency/params space;
    - ``smallest``: fewest parameters.
    """
    if not rows:
        return {}
    acc = np.array([float(r.get(accuracy_key, 0.0)) for r in rows])
    lat = np.array([float(r.get("latency_ms", 0.0)) for r in rows])
    par = np.array([float(r.get("params", 0.0)) for r in rows])
    whole = [i for i, r in enumerate(rows) if not r.get(HEAD_ON_BODY)] or list(range(len(rows)))
    best = int(min(whole, key=lambda i: (-acc[i], lat[i], par[i])))
    near = [i for i in range(len(rows)) if acc[i] >= acc[best] - 0.01]
    fastest = int(min(near, key=lambda i: (lat[i], -acc[i])))
    cols = np.stack([-acc, lat, np.log10(par + 1)], axis=1)
    span = np.where(np.ptp(cols, axis=0) > 0, np.ptp(cols, axis=0), 1.0)
    norm = (cols - cols.min(axis=0)) / span
    knee = int(np.argmin(np.linalg.norm(norm, axis=1)))
    smallest = int(min(range(len(rows)), key=lambda i: (par[i], -acc[i])))
    return {"best_accuracy": best, "fastest_within_1pt": fastest, "knee": knee, "smallest": smallest}
