"""The Results page's logic: the trials table, Optuna's history, hypervolume, importance, parallel and timeline figures.

Part of :mod:`nas_core.views` (no Streamlit import); the pages reach it as ``nas_core.views.<name>``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nas_core.jobs import RetrainJob, get_retrain, start_retrain  # noqa: F401 - the pages call them here
from nas_core.schema.objectives import OBJECTIVES
from nas_core.views.plots import _log_axis
from nas_core.views.studies import _complete, _first_line, _objective_label, _per_state, proxy_label, proxy_name, study_objectives, study_state

log = logging.getLogger(__name__)

__all__ = ["trials_frame", "table_columns", "column_formats", "filter_trials", "state_counts", "history_figures", "hypervolume_reference", "hypervolume_figure", "importance_figures", "ImportanceJob", "importance_job", "parallel_figure", "timeline_figure"]


# --- Results page --------------------------------------------------------------------------------


@_per_state
def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, objective values, metrics, params, duration, reason, MLflow run id."""
    from nas_core.results.tables import study_rows

    df = pd.DataFrame(study_rows(study))
    if df.empty:
        return df
    if proxy_name(study) is not None:
        # A proxy-ranked study: only the finalists were trained. The others' accuracy columns (a proxy's short-training
        # accuracy, or an untrained network's) move to their own names, so "val acc" is always a trained accuracy.
        trained = df["final_accuracy"].notna() if "final_accuracy" in df else pd.Series(False, index=df.index)
        for col, moved in (("val_accuracy", "proxy_val_accuracy"), ("test_accuracy", "proxy_test_accuracy")):
            if col in df:
                df[moved] = df[col].where(~trained)
                df[col] = df[col].where(trained)
        df["accuracy_source"] = np.where(trained, "trained (finalist)", "proxy only")
    first = ["number", "state"] + [c for c in df.columns if c.startswith("objective_")]
    if "val_held_out" in df and df["val_held_out"].eq(True).all():
        df = df.drop(columns="val_held_out")  # shown only where some model trained on the validation split (schema.record.VAL_SEEN)
    metrics = [c for c in ("val_accuracy", "val_held_out", "test_accuracy", "macro_f1", "latency_ms", "params", "flops", "size_mb",
                           "epochs_trained") if c in df.columns]
    tail = ["duration_s", "reason", "mlflow_run_id", "summary"]
    params = sorted(c for c in df.columns if c.startswith("param_"))
    rest = [c for c in df.columns if c not in set(first + metrics + tail + params) and c not in ("datetime_start", "datetime_complete")]
    return df[first + metrics + tail + params + rest + ["datetime_start", "datetime_complete"]]


_COLUMN_FORMATS: dict[str, tuple[str, str]] = {
    "val_accuracy": ("val acc", "%.4f"),
    "test_accuracy": ("test acc", "%.4f"),
    "macro_f1": ("macro F1", "%.4f"),
    "latency_ms": ("latency ms", "%.3f"),
    "params": ("params", "localized"),
    "flops": ("FLOPs", "localized"),
    "size_mb": ("size MB", "%.3f"),
    "proxy_score": ("proxy score", "%.4g"),
    "proxy_accuracy": ("proxy acc", "%.4f"),
    "proxy_val_accuracy": ("proxy-phase val acc", "%.4f"),
    "proxy_test_accuracy": ("proxy-phase test acc", "%.4f"),
    "final_accuracy": ("final acc (trained)", "%.4f"),
}


def _same(a: pd.Series, b: pd.Series) -> bool:
    x, y = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    both = x.notna() & y.notna()
    return bool((x.isna() == y.isna()).all() and np.allclose(x[both], y[both], rtol=1e-12, atol=0))


def table_columns(frame: pd.DataFrame) -> list[str]:
    """The columns the trials table shows: no timestamps, and no ``objective_*`` column equal to its metric's column."""
    out = []
    for c in frame.columns:
        if c in ("datetime_start", "datetime_complete"):
            continue
        if c.startswith("objective_"):
            obj = OBJECTIVES.get(c[len("objective_"):])
            if obj is not None and obj.metric in frame and _same(frame[c], frame[obj.metric]):
                continue
        out.append(c)
    return out


def column_formats(frame: pd.DataFrame, *, proxy: str | None = None) -> dict[str, tuple[str, str]]:
    """(label, number format) of the numeric columns of a :func:`trials_frame`: big counts get thousands separators.

    ``proxy`` (:func:`proxy_name`) names what a proxy-ranked study's accuracy objective holds ("objective: naswot score").
    """
    out = {c: v for c, v in _COLUMN_FORMATS.items() if c in frame}
    if proxy and "val_accuracy" in out:
        out["val_accuracy"] = ("val acc (trained finalists)", "%.4f")
    for c in frame.columns:
        if c.startswith("objective_"):
            name = c[len("objective_"):]
            metric = OBJECTIVES[name].metric if name in OBJECTIVES else name
            label, fmt = _COLUMN_FORMATS.get(metric, (name, "%.4g"))
            if proxy and metric == "val_accuracy":
                label, fmt = proxy_label(proxy), "%.4g"
            elif metric == "latency_ms":  # the figure told to Optuna; latency_ms may hold the quiet re-measurement
                label = "latency ms, in search"
            out[c] = (f"objective: {label}", fmt)
    return out


def filter_trials(df: pd.DataFrame, *, states: Sequence[str] | None = None, text: str = "", sort_by: str | None = None,
                  ascending: bool = True) -> pd.DataFrame:
    """Rows in ``states`` whose summary/reason/params contain ``text``, sorted by one column (missing values last)."""
    out = df
    if states is not None and "state" in out:
        out = out[out["state"].isin(list(states))]
    if text:
        needle = text.lower()
        cols = [c for c in out.columns if c in ("summary", "reason", "mlflow_run_id") or c.startswith("param_")]
        hay = [" ".join("" if pd.isna(v) else str(v) for v in row).lower() for row in out[cols].itertuples(index=False)]
        out = out[[needle in h for h in hay]]
    if sort_by and sort_by in out:
        out = out.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    return out


def state_counts(study_or_frame: Any) -> dict[str, int]:
    """Counts of COMPLETE, PRUNED, FAIL (and RUNNING) trials."""
    if isinstance(study_or_frame, pd.DataFrame):
        states = list(study_or_frame["state"]) if "state" in study_or_frame else []
    else:
        states = [t.state.name for t in study_or_frame.get_trials(deepcopy=False)]
    return {k: states.count(k) for k in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}


def _target(i: int, *, sign: float = 1.0) -> Any:
    return lambda t: sign * t.values[i]


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence Optuna's experimental/heuristic warnings while drawing (they would flood the server log)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@_per_state
def _light_study(study: Any) -> Any:
    """The study with its trials stripped of user attributes, for ``optuna.visualization``.

    Several of its plots call ``study.trials``, which deep-copies every trial with its attributes (configs,
    histories, confusion matrices): about a second per plot at a thousand trials. They only need params and values.
    """
    import optuna

    light = []
    for t in study.get_trials(deepcopy=False):
        t = copy.copy(t)
        t.user_attrs, t.system_attrs = {}, {}
        light.append(t)

    class _Light(optuna.Study):
        def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
            return [t for t in light if states is None or t.state in states]

    return _Light(study_name=study.study_name, storage=study._storage)


@_per_state
def history_figures(study: Any) -> list[tuple[str, Any]]:
    """``optuna.visualization.plot_optimization_history`` for each objective: [(objective, figure)]."""
    import optuna.visualization as vis

    out = []
    for i, name in enumerate(study_objectives(study)):
        with _quiet():
            fig = vis.plot_optimization_history(_light_study(study), target=_target(i), target_name=_objective_label(name, study))
        fig.update_layout(title=f"Optimization history: {_objective_label(name, study)}", height=380)
        values = [t.values[i] for t in _complete(study)]
        if study.directions[i].name.lower() == "minimize" and values and min(values) > 0:
            _log_axis(fig, "y", values)  # costs span orders of magnitude; one slow trial must not flatten the rest
        out.append((name, fig))
    return out


@_per_state
def hypervolume_reference(study: Any) -> list[float] | None:
    """A reference point just worse than every complete trial in each objective (None without 2 objectives)."""
    trials = _complete(study)
    if len(study.directions) < 2 or not trials:
        return None
    vals = np.array([t.values for t in trials], dtype=float)
    ref = []
    for i, d in enumerate(study.directions):
        lo, hi = float(vals[:, i].min()), float(vals[:, i].max())
        pad = 0.1 * (hi - lo) or 0.1 * abs(hi) or 1e-3
        ref.append(lo - pad if d.name.lower() == "maximize" else hi + pad)
    return ref


@_per_state
def hypervolume_figure(study: Any) -> tuple[Any | None, str]:
    """(figure, note): ``plot_hypervolume_history`` with :func:`hypervolume_reference`, or (None, why not)."""
    import optuna.visualization as vis

    if len(study.directions) < 2:
        return None, "hypervolume needs two or more objectives; this study has one."
    ref = hypervolume_reference(study)
    if ref is None:
        return None, "no complete trials yet."
    with _quiet():
        fig = vis.plot_hypervolume_history(_light_study(study), reference_point=ref)
    fig.update_layout(height=380)
    note = "reference point " + ", ".join(f"{o}={r:.4g}" for o, r in zip(study_objectives(study), ref)) + " (just worse than every trial)"
    return fig, note


@_per_state
def importance_figures(study: Any) -> list[tuple[str, Any | None, str]]:
    """``plot_param_importances`` per objective: [(objective, figure or None, note)]."""
    import optuna.visualization as vis

    n = len(_complete(study))
    out: list[tuple[str, Any | None, str]] = []
    for i, name in enumerate(study_objectives(study)):
        if n < 2:
            out.append((name, None, f"parameter importance needs at least 2 complete trials; this study has {n}."))
            continue
        # PED-ANOVA (Optuna's default evaluator) ranks parameters by how they reach *low* targets: flip maximised ones.
        sign = -1.0 if study.directions[i].name.lower() == "maximize" else 1.0
        try:
            with _quiet():
                fig = vis.plot_param_importances(_light_study(study), target=_target(i, sign=sign), target_name=_objective_label(name, study))
        except Exception as exc:  # noqa: BLE001 - the evaluator refuses degenerate studies in several ways
            out.append((name, None, f"parameter importance is not available yet ({_first_line(exc)}); run more trials."))
            continue
        fig.update_layout(title=f"Parameter importance for {_objective_label(name, study)}", height=380)
        out.append((name, fig, ""))
    return out


@dataclass
class ImportanceJob:
    """Parameter importance of one study state, computed once in a background thread (it takes seconds)."""

    study: str
    started: float
    status: str = "running"  # running | done
    result: list[tuple[str, Any | None, str]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status == "done"

    def elapsed_s(self) -> float:
        return time.time() - self.started


_IMPORTANCE: dict[tuple[Any, ...], tuple[Any, ImportanceJob]] = {}
_IMPORTANCE_LOCK = threading.Lock()


def importance_job(study: Any) -> ImportanceJob:
    """The importance job of the study's current state: started on first ask, shared by every session and page.

    A study outside an RDB storage (no state token) is computed in the caller's thread.
    """
    state = study_state(study)
    if state is None:
        return ImportanceJob(study.study_name, time.time(), "done", importance_figures(study))
    with _IMPORTANCE_LOCK:
        hit = _IMPORTANCE.get(state[0])
        if hit is not None and hit[0] == state[1]:
            return hit[1]
        job = ImportanceJob(study.study_name, time.time())
        _IMPORTANCE[state[0]] = (state[1], job)

    def run() -> None:
        try:
            job.result = importance_figures(study)
        except Exception as exc:  # noqa: BLE001 - the thread must report, not die silently
            job.result = [(name, None, f"parameter importance failed ({_first_line(exc)}).") for name in study_objectives(study)]
        job.status = "done"

    threading.Thread(target=run, daemon=True, name=f"moca-importance-{study.study_name}").start()
    return job


@_per_state
def parallel_figure(study: Any, objective: str | None = None) -> Any:
    """``plot_parallel_coordinate`` coloured by one objective (default the first)."""
    import optuna.visualization as vis

    names = study_objectives(study)
    i = names.index(objective) if objective in names else 0
    with _quiet():
        fig = vis.plot_parallel_coordinate(_light_study(study), target=_target(i), target_name=_objective_label(names[i], study))
    # Room on both sides: the first and last axes' category labels ("leakyrelu") were clipped at the plot's edge.
    fig.update_layout(height=460, margin={"l": 110, "r": 110, "t": 60, "b": 30})
    return fig


@_per_state
def timeline_figure(study: Any) -> Any:
    """``plot_timeline``: when each trial ran and how it ended."""
    import optuna.visualization as vis

    with _quiet():
        fig = vis.plot_timeline(_light_study(study))
    fig.update_layout(height=max(260, 40 + 22 * len(study.get_trials(deepcopy=False))))
    return fig
