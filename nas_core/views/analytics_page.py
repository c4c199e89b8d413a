"""The Analytics page's logic: objective scatters, top trials, block usage, epoch curves, study comparison, the
ranking quality of the study's fidelity and the budget split.

Part of :mod:`nas_core.views` (no Streamlit import); the pages reach it as ``nas_core.views.<name>``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas_core.jobs import RetrainJob, get_retrain, start_retrain  # noqa: F401 - the pages call them here
from nas_core.schema.config import Architecture
from nas_core.schema.record import SCREEN_KEY
from nas_core.views.plots import _front_mask, _log_axis, _scatter_with_front
from nas_core.views.results_page import trials_frame
from nas_core.views.studies import _MEMO, _MEMO_LOCK, METRIC_DIRECTIONS, METRIC_LABELS, _complete, _per_state, _trials, load_study, study_state

log = logging.getLogger(__name__)

__all__ = ["objective_scatter", "scatter_3d", "study_scatter", "study_scatter_3d", "top_trials_frame", "block_usage", "block_usage_figure", "epoch_curves_figure", "compare_studies", "ProxyCorrelation", "proxy_correlation", "ranking_quality", "ranking_figure", "budget_split", "screening_frame", "screening_figure"]


# --- Analytics page ------------------------------------------------------------------------------


def objective_scatter(df: pd.DataFrame, *, x: str = "latency_ms", y: str = "val_accuracy") -> Any:
    """Complete trials of a :func:`trials_frame` on two metrics, with their Pareto line."""
    part = df[df["state"] == "COMPLETE"] if "state" in df else df
    for col in (x, y):
        if col not in part:
            part = part.assign(**{col: np.nan})
    return _scatter_with_front(part, x, y)


def scatter_3d(df: pd.DataFrame, axes: Sequence[str] = ("latency_ms", "params", "val_accuracy")) -> Any:
    """3-D view of the complete trials on three metrics; Pareto-optimal points (on those three) highlighted."""
    import plotly.graph_objects as go

    part = df[df["state"] == "COMPLETE"].dropna(subset=list(axes)) if "state" in df else df.dropna(subset=list(axes))
    mask = _front_mask(part, axes) if len(part) else np.zeros(0, dtype=bool)
    fig = go.Figure()
    for name, sel, color, size in (("trials", ~mask, "#1f77b4", 4), ("Pareto front", mask, "#2ca02c", 7)):
        sub = part[sel]
        fig.add_trace(go.Scatter3d(x=sub[axes[0]], y=sub[axes[1]], z=sub[axes[2]], mode="markers", name=name,
                                   marker={"size": size, "color": color},
                                   text=[f"trial {n}" for n in sub["number"]] if "number" in sub else None))
    fig.update_layout(scene={"xaxis_title": METRIC_LABELS.get(axes[0], axes[0]), "yaxis_title": METRIC_LABELS.get(axes[1], axes[1]),
                             "zaxis_title": METRIC_LABELS.get(axes[2], axes[2])},
                      height=520, margin={"l": 0, "r": 0, "t": 30, "b": 0}, title="3-D view")
    return fig


@_per_state
def study_scatter(study: Any, x: str = "latency_ms", y: str = "val_accuracy") -> Any:
    """:func:`objective_scatter` over the study's trials, memoised per study state (Analytics redraws it on every rerun)."""
    return objective_scatter(trials_frame(study), x=x, y=y)


@_per_state
def study_scatter_3d(study: Any, axes: tuple[str, ...] = ("latency_ms", "params", "val_accuracy")) -> Any:
    """:func:`scatter_3d` over the study's trials, memoised per study state."""
    return scatter_3d(trials_frame(study), axes=axes)


@_per_state
def top_trials_frame(study: Any, k: int = 5) -> pd.DataFrame:
    """The ``k`` best complete trials by validation accuracy, side by side (one column per trial)."""
    df = trials_frame(study)
    if df.empty or "val_accuracy" not in df:
        return pd.DataFrame()
    top = df[df["state"] == "COMPLETE"].sort_values(["val_accuracy", "latency_ms"], ascending=[False, True]).head(k)
    keep = [c for c in ("val_accuracy", "test_accuracy", "macro_f1", "latency_ms", "params", "flops", "size_mb", "epochs_trained",
                        "duration_s", "summary") if c in top]
    keep += [c for c in top.columns if c.startswith("param_")]
    out = top.set_index("number")[keep].T
    out.columns = [f"trial {n}" for n in out.columns]
    return out.astype(object).map(_cell)


def _cell(v: Any) -> Any:
    """A readable cell for mixed-type tables: '' for missing, 256 not 256.0, 4 significant digits for floats."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.4g}"
    return str(v)


def _trial_features(config: dict[str, Any]) -> set[str]:
    arch = Architecture.from_dict(config["architecture"])
    feats: set[str] = set()
    for b in arch.blocks():
        feats.add(f"block {b.kind}")
        if "kernel" in b.params and b.kind not in ("pool",):
            feats.add(f"{b.kind} kernel {b.params['kernel']}")
    acts = {b.params.get("activation") for b in arch.blocks() if b.params.get("activation")} | {arch.head.activation}
    feats |= {f"activation {a}" for a in acts if a}
    feats.add(f"head hidden layers {len(arch.head.hidden)}")
    return feats


@_per_state
def block_usage(study: Any) -> pd.DataFrame:
    """Share of good vs bad trials using each block kind / kernel / activation / head depth.

    Good = the complete trials at or above the median validation accuracy, bad = the rest.
    Columns: feature, group (good/bad), share (0..1), trials.
    """
    trials = [t for t in _complete(study) if "config" in t.user_attrs and "metrics" in t.user_attrs]
    if len(trials) < 2:
        return pd.DataFrame(columns=["feature", "group", "share", "trials"])
    accs = np.array([float(t.user_attrs["metrics"].get("val_accuracy", 0.0)) for t in trials])
    median = float(np.median(accs))
    groups = {"good": [t for t, a in zip(trials, accs) if a >= median], "bad": [t for t, a in zip(trials, accs) if a < median]}
    if not groups["bad"]:  # every trial ties: split by rank instead
        order = sorted(trials, key=lambda t: -float(t.user_attrs["metrics"].get("val_accuracy", 0.0)))
        half = max(1, len(order) // 2)
        groups = {"good": order[:half], "bad": order[half:]}
    feats = {t.number: _trial_features(t.user_attrs["config"]) for t in trials}
    names = sorted(set().union(*feats.values()))
    rows = []
    for group, members in groups.items():
        for name in names:
            n = sum(name in feats[t.number] for t in members)
            rows.append({"feature": name, "group": f"{group} ({len(members)} trials)", "share": n / len(members), "trials": n})
    return pd.DataFrame(rows)


def block_usage_figure(usage: pd.DataFrame) -> Any:
    import plotly.express as px

    groups = list(dict.fromkeys(usage["group"]))
    colors = {g: ("#2ca02c" if g.startswith("good") else "#9e9e9e") for g in groups}
    fig = px.bar(usage, x="share", y="feature", color="group", barmode="group", orientation="h", color_discrete_map=colors,
                 hover_data=["trials"], labels={"share": "share of trials", "feature": ""})
    fig.update_layout(height=max(300, 28 * usage["feature"].nunique() + 80), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title="Block usage: good vs bad trials (split at median validation accuracy)")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    return fig


@_per_state
def epoch_curves_figure(study: Any, *, max_trials: int = 30) -> Any | None:
    """Validation accuracy per epoch of each trial (the best ``max_trials`` by final accuracy); None if no history."""
    import plotly.express as px

    rows = []
    for t in _trials(study):
        for r in t.user_attrs.get("history") or []:
            if "val_accuracy" in r and "epoch" in r:
                rows.append({"trial": f"trial {t.number}", "number": t.number, "state": t.state.name, "epoch": r["epoch"],
                             "val_accuracy": r["val_accuracy"]})
    if not rows:
        return None
    df = pd.DataFrame(rows)
    best = df.groupby("number")["val_accuracy"].max().sort_values(ascending=False).head(max_trials).index
    df = df[df["number"].isin(best)]
    dash = "state" if df["state"].nunique() > 1 else None
    fig = px.line(df, x="epoch", y="val_accuracy", color="trial", line_dash=dash, markers=True,
                  labels={"val_accuracy": "validation accuracy"})
    fig.update_xaxes(dtick=1 if df["epoch"].max() <= 20 else None)
    fig.update_layout(title="Accuracy vs epochs", height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def compare_studies(workspace: str | Path, first: str, second: str, *, x: str = "latency_ms") -> tuple[pd.DataFrame, Any]:
    """(summary table, scatter with each study's front) of two studies on accuracy vs ``x``.

    Hypervolumes share one normaliser built from both studies' points, so they are comparable.
    """
    states = tuple(study_state(load_study(workspace, n)) for n in (first, second))
    key = ("compare_studies", str(Path(workspace).resolve()), first, second, x)
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
    if hit is not None and hit[0] == states:
        return hit[1]
    value = _compare_studies(workspace, first, second, x=x)
    with _MEMO_LOCK:
        _MEMO[key] = (states, value)
    return value


def _compare_studies(workspace: str | Path, first: str, second: str, *, x: str) -> tuple[pd.DataFrame, Any]:
    import plotly.graph_objects as go

    from nas_core.results.pareto import hypervolume, normalizer

    frames = {}
    for name in dict.fromkeys([first, second]):
        df = trials_frame(load_study(workspace, name))
        if not df.empty and "val_accuracy" in df and x in df:
            df = df[df["state"] == "COMPLETE"].dropna(subset=["val_accuracy", x])
        else:
            df = pd.DataFrame(columns=["number", "val_accuracy", x])
        frames[name] = df
    both = pd.concat(list(frames.values()))
    dirs = ["maximize", METRIC_DIRECTIONS.get(x, "minimize")]
    scale = normalizer(both[["val_accuracy", x]].astype(float).to_numpy().tolist(), dirs) if len(both) else None
    rows = []
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728"]
    for k, (name, df) in enumerate(frames.items()):
        pts = df[["val_accuracy", x]].astype(float).to_numpy().tolist()
        rows.append({
            "study": name, "complete trials": len(df),
            "best val accuracy": float(df["val_accuracy"].max()) if len(df) else None,
            f"lowest {x}": float(df[x].min()) if len(df) else None,
            "Pareto points": int(_front_mask(df, ["val_accuracy", x]).sum()) if len(df) else 0,
            "hypervolume (shared scale)": hypervolume(pts, dirs, scale=scale) if pts else 0.0,
        })
        color = palette[k % 2]
        fig.add_trace(go.Scatter(x=df[x], y=df["val_accuracy"], mode="markers", name=name, marker={"color": color, "size": 8, "opacity": 0.6},
                                 text=[f"{name} trial {n}" for n in df["number"]]))
        if len(df):
            front = df[_front_mask(df, ["val_accuracy", x])].sort_values(x)
            fig.add_trace(go.Scatter(x=front[x], y=front["val_accuracy"], mode="lines", name=f"{name} front",
                                     line={"color": color, "shape": "hv", "width": 2}))
    fig.update_layout(title=f"accuracy vs {METRIC_LABELS.get(x, x)}: {first} vs {second}", xaxis_title=METRIC_LABELS.get(x, x),
                      yaxis_title="validation accuracy", height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    if len(both) and float(both[x].min()) > 0:
        _log_axis(fig, "x", both[x])
    return pd.DataFrame(rows), fig


@dataclass(frozen=True)
class ProxyCorrelation:
    frame: pd.DataFrame
    spearman: float
    kendall: float
    n: int
    figure: Any = field(repr=False, default=None)


@_per_state
def proxy_correlation(study: Any) -> ProxyCorrelation | None:
    """Proxy score vs final accuracy of the trials whose metrics carry both (None: no proxy data yet)."""
    import plotly.express as px

    from nas_core.ranking import kendall

    rows = []
    for t in _trials(study):
        m = t.user_attrs.get("metrics") or {}
        if m.get("proxy_accuracy") is not None and m.get("final_accuracy") is not None:
            rows.append({"number": t.number, "proxy_accuracy": float(m["proxy_accuracy"]), "final_accuracy": float(m["final_accuracy"]),
                         "summary": t.user_attrs.get("summary", "")})
    if not rows:
        return None
    df = pd.DataFrame(rows)
    rho = tau = float("nan")
    if len(df) >= 3:
        ra, rb = df["proxy_accuracy"].rank().to_numpy(), df["final_accuracy"].rank().to_numpy()
        if ra.std() > 0 and rb.std() > 0:
            rho = float(np.corrcoef(ra, rb)[0, 1])
        tau = kendall(df["proxy_accuracy"].to_numpy(), df["final_accuracy"].to_numpy())  # tau-b, as the ranking checks
    fig = px.scatter(df, x="proxy_accuracy", y="final_accuracy", hover_data=["number", "summary"],
                     labels={"proxy_accuracy": "proxy score (cached fidelity)", "final_accuracy": "final accuracy (full training)"})
    fig.update_layout(title=f"Proxy vs final accuracy (Spearman ρ = {rho:.3f}, n = {len(df)})" if not math.isnan(rho)
                      else f"Proxy vs final accuracy (n = {len(df)}; need 3+ varied points for a rank correlation)", height=420)
    return ProxyCorrelation(frame=df, spearman=rho, kendall=tau, n=len(df), figure=fig)


@_per_state
def ranking_quality(study: Any) -> list[Any]:
    """The study's own ranking checks (:func:`nas_core.ranking.ranking_quality`): tau with a bootstrap interval each."""
    from nas_core.ranking import ranking_quality as checks

    return checks(_trials(study))


@_per_state
def screening_frame(study: Any) -> pd.DataFrame | None:
    """One row per screened trial (``training.screening``): its screen accuracy, MFLOPs, place in the pool, whether it went
    on to its full training and where that ended; None when the study screened nothing (``screen=off``, other fidelities)."""
    rows = []
    for t in _trials(study):
        screen = t.user_attrs.get("screen") or t.user_attrs.get(SCREEN_KEY)
        if not isinstance(screen, dict) or "val_accuracy" not in screen:
            continue
        final = (t.user_attrs.get("metrics") or {}).get("val_accuracy")
        rows.append({"trial": t.number, "screen val acc": float(screen["val_accuracy"]), "MFLOPs": float(screen.get("flops", 0)) / 1e6,
                     "place": f"{screen.get('position', '?')} of {screen.get('pool', '?')}",
                     "outcome": ("known-good" if t.user_attrs.get("known_good") else "trained in full" if screen.get("promoted")
                                 else "screened out"),
                     "final val acc": float(final) if final is not None and t.state.name == "COMPLETE" else None,
                     "screen s": float(screen.get("seconds", 0.0))})
    return pd.DataFrame(rows) if rows else None


def screening_figure(frame: pd.DataFrame) -> Any:
    """Screen accuracy against MFLOPs, coloured by what became of each candidate (the two numbers the screen ranks by)."""
    import plotly.express as px

    fig = px.scatter(frame, x="MFLOPs", y="screen val acc", color="outcome", log_x=True, hover_data=["trial", "place", "final val acc"],
                     color_discrete_map={"known-good": "#2ca02c", "trained in full": "#1f77b4", "screened out": "#aaaaaa"})
    fig.update_layout(title=f"Screen: one compressed-schedule epoch vs FLOPs (n = {len(frame)})", height=380,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def ranking_figure(check: Any) -> Any:
    """A check's pairs as a scatter, titled with its tau and interval."""
    import plotly.graph_objects as go

    lo, hi = check.ci95
    fig = go.Figure(go.Scatter(x=list(check.signal_values), y=list(check.target_values), mode="markers",
                               text=[f"trial {n}" for n in check.numbers], hovertemplate="%{text}<br>%{x:.4f} → %{y:.4f}<extra></extra>"))
    fig.update_layout(title=f"{check.signal} vs {check.target}: Kendall τ {check.kendall:.3f} (95 % CI {lo:.2f} to {hi:.2f}, n = {check.n})",
                      xaxis_title=check.signal, yaxis_title=check.target, height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def budget_split(study: Any) -> pd.DataFrame | None:
    """Planned vs used seconds per phase (search, finalists, final training) of a timed study; None without a --timeout."""
    from nas_core.schema.budget import BudgetPlan

    raw = study.user_attrs.get("budget_plan")
    if not raw:
        return None
    plan = BudgetPlan.from_dict(raw)
    if plan.timeout_s is None:
        return None  # nothing was planned: the trials ran to --trials
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    search_used = None
    if trials:
        ends = [t.datetime_complete or t.datetime_start for t in trials]
        search_used = (max(ends) - min(t.datetime_start for t in trials)).total_seconds()
    final = study.user_attrs.get("final_training") or {}
    tuned = [float((t.user_attrs.get("metrics") or {}).get("finetune_seconds") or 0.0) for t in _trials(study)]
    finalists = sum(tuned) if any(tuned) else None
    used = {"search (trials)": search_used, "finalists (fine-tune)": finalists, "final training of the best": final.get("seconds")}
    rows = []
    for phase, planned in plan.rows():
        value = used.get(phase)
        rows.append({"phase": phase, "planned": planned, "used": "-" if value is None else f"{float(value):,.0f} s"})
    return pd.DataFrame(rows)
