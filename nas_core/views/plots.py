"""Plot helpers the pages share: log axes with readable ticks, and scatters with their Pareto front drawn."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from nas_core.views.studies import METRIC_DIRECTIONS, METRIC_LABELS, STATE_COLORS

__all__ = ["log_ticks"]


def _front_mask(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    from nas_core.results.pareto import pareto_front

    mask = np.zeros(len(df), dtype=bool)
    if len(df) == 0:
        return mask
    front = pareto_front(df[list(cols)].astype(float).to_numpy().tolist(), [METRIC_DIRECTIONS.get(c, "minimize") for c in cols])
    mask[front] = True
    return mask


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Tick values and full labels for a log axis over [low, high]: 1-2-5 steps ("0.2", "0.5", "1", "2"...), or
    decades only over more than 3 decades. Plotly's own log ticks read "2 5 1 2 5 10", with no decade named."""
    if not (low > 0 and high >= low and math.isfinite(high)):
        return [], []
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1,) if hi - lo > 3 else (1, 2, 5)
    vals = [m * 10.0 ** e for e in range(lo, hi + 1) for m in steps]
    inside = [v for v in vals if low / 1.0001 <= v <= high * 1.0001]
    if len(inside) < 2:  # a narrow range: keep the neighbours so the axis still has two labels
        below = [v for v in vals if v < low][-1:]
        above = [v for v in vals if v > high][:1]
        inside = below + inside + above
    return inside, [_tick_text(v) for v in inside]


def _tick_text(v: float) -> str:
    if v >= 1e9:
        return f"{v / 1e9:g}G"
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    return f"{v:,.0f}" if v >= 1000 else f"{v:g}"


def _log_axis(fig: Any, axis: str, values: Any) -> None:
    """Make ``axis`` ("x" or "y") logarithmic with :func:`log_ticks` labels."""
    arr = np.asarray(pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna(), dtype=float)
    arr = arr[arr > 0]
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    if not len(arr):
        return
    vals, text = log_ticks(float(arr.min()), float(arr.max()))
    update(type="log", tickvals=vals, ticktext=text)


def _scatter_with_front(df: pd.DataFrame, x: str, y: str, *, color: str | None = None, title: str = "") -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    ok = df.dropna(subset=[x, y]) if not df.empty else df
    groups = [(None, ok)] if color is None or color not in ok else list(ok.groupby(color, sort=True))
    for name, part in groups:
        fig.add_trace(
            go.Scatter(
                x=part[x], y=part[y], mode="markers", name=str(name) if name is not None else "trials",
                marker={"size": 9, "color": STATE_COLORS.get(str(name)) if color == "state" else None, "opacity": 0.8},
                text=[f"trial {n}" for n in part["number"]] if "number" in part else None,
                hovertemplate=f"%{{text}}<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4f}}<extra></extra>",
            )
        )
    if len(ok):
        front = ok[_front_mask(ok, [y, x])].sort_values(x)
        fig.add_trace(
            go.Scatter(x=front[x], y=front[y], mode="lines+markers", name="Pareto front", line={"color": "#2ca02c", "shape": "hv", "width": 2},
                       marker={"size": 12, "symbol": "star", "color": "#2ca02c"},
                       text=[f"trial {n}" for n in front["number"]] if "number" in front else None,
                       hovertemplate=f"%{{text}} (Pareto)<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4f}}<extra></extra>")
        )
    fig.update_layout(title=title or f"{METRIC_LABELS.get(y, y)} vs {METRIC_LABELS.get(x, x)}",
                      xaxis_title=METRIC_LABELS.get(x, x), yaxis_title=METRIC_LABELS.get(y, y), legend_title_text="",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=420)
    if x in ("params", "flops", "latency_ms", "size_mb") and len(ok) and float(ok[x].min()) > 0:
        _log_axis(fig, "x", ok[x])  # costs span orders of magnitude between a 1-layer and a 5-layer network
    if len(ok) == 1:  # plotly centres a lone point in [-1, 1]; give it a sensible window instead
        yv = float(ok[y].iloc[0])
        fig.update_yaxes(range=[max(0.0, yv - 0.1), min(1.05, yv + 0.1)] if y.endswith("accuracy") else None)
    return fig
