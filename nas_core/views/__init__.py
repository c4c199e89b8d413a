"""View logic behind the dashboard: tables, plotly figures, DOT diagrams, layer tables, study comparisons.

Everything here is plain Python over ``nas_core``, Optuna and plotly, with no Streamlit import, so the
pages stay thin (widgets -> one call here -> show the result) and every view is unit-testable.
Problems a user can fix are raised as :class:`~nas_core.errors.NasCoreError` subclasses with the fix.

Example::

    from nas_core import dashboard

    study = dashboard.load_study("moca_runs", "digits-seed-cnn")
    frame = dashboard.trials_frame(study)
    figures = dashboard.history_figures(study)
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import math
import re
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas_core import events as ev
from nas_core.errors import ConfigError, DatasetError, NasCoreError
from nas_core.jobs import RetrainJob, get_retrain, start_retrain  # noqa: F401 - the pages call them here
from nas_core.schema.config import Architecture, ModelConfig
from nas_core.schema.objectives import OBJECTIVES
from nas_core.workspace import list_studies, study_dir
from nas_core.workspace.config import CONFIG_NAME, describe, workspace_storage
from nas_core.workspace.storage import open_storage

log = logging.getLogger(__name__)

__all__ = [
    "warm_up",
    "METRIC_LABELS",
    "METRIC_DIRECTIONS",
    "proxy_name",
    "proxy_label",
    "studies",
    "load_study",
    "wait_for_study",
    "study_objectives",
    "study_summary",
    "sampler_names",
    "fidelity_names",
    "fidelity_help",
    "fidelity_page_options",
    "fidelity_uses_library",
    "pruner_names",
    "device_note",
    "tile",
    "number_step",
    "dataset_label",
    "save_upload",
    "upload_types",
    "discard_upload",
    "new_study_name",
    "class_counts_frame",
    "param_caption",
    "space_edits",
    "space_data",
    "edited_space",
    "progress_values",
    "points_frame",
    "study_points",
    "live_scatter",
    "log_ticks",
    "event_line",
    "event_lines",
    "trials_frame",
    "filter_trials",
    "table_columns",
    "column_formats",
    "state_counts",
    "history_figures",
    "hypervolume_reference",
    "hypervolume_figure",
    "importance_figures",
    "importance_job",
    "ImportanceJob",
    "study_state",
    "parallel_figure",
    "timeline_figure",
    "pareto_frame",
    "complete_trials",
    "trial_config",
    "trial_details",
    "architecture_dot",
    "layer_table",
    "confusion_figure",
    "per_class_frame",
    "per_class_figure",
    "format_ms",
    "trial_weights",
    "export_bytes",
    "network_exporters",
    "onnx_available",
    "objective_scatter",
    "study_scatter",
    "study_scatter_3d",
    "scatter_3d",
    "top_trials_frame",
    "block_usage",
    "block_usage_figure",
    "epoch_curves_figure",
    "compare_studies",
    "proxy_correlation",
    "ranking_quality",
    "ranking_figure",
    "budget_split",
    "RetrainJob",
    "start_retrain",
    "get_retrain",
]

# Columns a trial can be plotted on, with how a person reads them and which way is better.
METRIC_LABELS: dict[str, str] = {
    "val_accuracy": "validation accuracy",
    "test_accuracy": "test accuracy",
    **{o.metric: o.axis_label for o in OBJECTIVES.values() if o.metric != "val_accuracy"},
}
METRIC_DIRECTIONS: dict[str, str] = {"test_accuracy": "maximize", **{o.metric: o.direction for o in OBJECTIVES.values()}}
STATE_COLORS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "RUNNING": "#7f7f7f", "WAITING": "#bcbd22"}


# --- workspace and studies ----------------------------------------------------------------------


def _storage_ready(workspace: str | Path) -> bool:
    """Whether the workspace's SQLite study DB exists with its schema complete (read-only check).

    A search that just started creates the schema from its own thread; opening the DB with Optuna
    at that moment would race it (both insert the schema version), so the UI waits until it is done.
    """
    url = workspace_storage(workspace)
    if not url.startswith("sqlite:///"):
        return True  # a database server (or a gRPC proxy) set in the workspace's moca.json: opened on first read
    path = Path(url[len("sqlite:///"):])
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as con:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "locked" in str(exc):
            return False
        raise ConfigError(f"cannot read {path} ({exc}); check the file's permissions, or choose another workspace.") from None
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"cannot read the studies in {Path(workspace)} ({exc}); check that optuna.db there is an Optuna "
                          "SQLite file, or choose another workspace.") from None
    return row is not None


def studies(workspace: str | Path) -> list[dict[str, Any]]:
    """Studies in the workspace, newest first; an unreadable storage is a :class:`ConfigError` with the fix.

    Read with a few aggregate queries (names, trial counts, directions, study attributes): Optuna's
    ``get_all_study_summaries`` reads and copies every trial of every study, seconds a call at thousands of trials.
    """
    if not _storage_ready(workspace):
        return []
    try:
        return _study_list(Path(workspace))
    except NasCoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt or locked DB file, or an unreachable server, is the user's to fix
        url = workspace_storage(workspace)
        fix = ("check that optuna.db there is an Optuna SQLite file, or choose another workspace." if url.startswith("sqlite")
               else f"check the storage URL {describe(url)} (sidebar: Storage, or {Path(workspace) / CONFIG_NAME}) and that its server is up.")
        raise ConfigError(f"cannot read the studies in {Path(workspace)} ({type(exc).__name__}: {_first_line(exc)}); {fix}") from None


def _study_list(ws: Path) -> list[dict[str, Any]]:
    from sqlalchemy import text

    url = workspace_storage(ws)
    if getattr(_rdb(url), "engine", None) is None:  # a gRPC proxy: no SQL, Optuna's own summaries
        return list_studies(ws, storage=_rdb(url))
    with _engine(url).connect() as con:
        names = dict(con.execute(text("SELECT study_id, study_name FROM studies")).all())
        counts = {sid: (int(n), start) for sid, n, start in con.execute(
            text("SELECT study_id, COUNT(*), MIN(datetime_start) FROM trials GROUP BY study_id"))}
        directions: dict[int, list[str]] = {}
        for sid, direction in con.execute(text("SELECT study_id, direction FROM study_directions ORDER BY study_id, objective")):
            directions.setdefault(sid, []).append(str(getattr(direction, "name", direction)).lower())
        attrs: dict[int, dict[str, Any]] = {}
        for sid, key, value in con.execute(text("SELECT study_id, key, value_json FROM study_user_attributes WHERE key IN "
                                                "('objectives', 'dataset', 'config')")):
            attrs.setdefault(sid, {})[key] = json.loads(value)
    out = [{"name": name, "n_trials": counts.get(sid, (0, None))[0], "directions": directions.get(sid, []),
            "started": counts.get(sid, (0, None))[1], "attrs": attrs.get(sid, {})} for sid, name in names.items()]
    out.sort(key=lambda d: str(d["started"] or ""), reverse=True)
    return out


@functools.lru_cache(maxsize=16)
def _rdb(url: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    return open_storage(url)


def _engine(url: str) -> Any:
    return _rdb(url).engine


@functools.lru_cache(maxsize=16)
def _storage(url: str) -> Any:
    """One cached storage per URL for the whole server: finished trials are read from the database once, then only
    new and unfinished ones (Optuna's own ``_CachedStorage``, kept across reruns instead of rebuilt on every page run)."""
    from optuna.storages._cached_storage import _CachedStorage

    backend = _rdb(url)
    return _CachedStorage(backend) if getattr(backend, "engine", None) is not None else backend  # a gRPC proxy caches itself


def load_study(workspace: str | Path, name: str) -> Any:
    """Open a study of the workspace for reading (the storage engine is shared between calls)."""
    import optuna

    ws = Path(workspace)
    if not _storage_ready(ws):
        raise ConfigError(f"workspace {ws} has no studies yet; start a search on the Search page first.")
    try:
        return optuna.load_study(study_name=name, storage=_storage(workspace_storage(ws)))
    except KeyError:
        names = ", ".join(s["name"] for s in studies(ws)) or "none"
        raise ConfigError(f"study {name!r} is not in workspace {ws} (studies there: {names}); pick one from the list.") from None


# --- per-state memo: each view is computed once per study state, whichever session or page asks ---------

_MEMO: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_MEMO_LOCK = threading.Lock()
_MEMO_MAX = 256


def study_state(study: Any) -> tuple[Any, Any] | None:
    """(study identity, state token) from two aggregate queries, or None for a study outside an RDB storage.

    The token changes whenever a trial is added, changes state or finishes, or a study attribute changes
    (e.g. a finalist's ``final_result.<number>``), so a view cached under it is never stale, and it is
    read without copying any trial.
    """
    from sqlalchemy import text

    storage = getattr(study, "_storage", None)
    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    if engine is None:
        return None
    sid = study._study_id
    with engine.connect() as con:
        trials = tuple(tuple(r) for r in con.execute(text(
            "SELECT state, COUNT(*), MAX(trial_id), MAX(datetime_complete) FROM trials WHERE study_id = :s GROUP BY state ORDER BY state"),
            {"s": sid}))
        attrs = tuple(con.execute(text("SELECT COUNT(*), SUM(LENGTH(value_json)) FROM study_user_attributes WHERE study_id = :s"),
                                  {"s": sid}).one())
    return (str(engine.url), sid), (trials, attrs)


def _per_state(fn: Any) -> Any:
    """Memoise a view ``fn(study, *args)`` per study state (see :func:`study_state`); results are shared: treat them as read-only."""

    @functools.wraps(fn)
    def wrapper(study: Any, *args: Any, **kwargs: Any) -> Any:
        state = study_state(study)
        if state is None:
            return fn(study, *args, **kwargs)
        key = (fn.__name__, state[0], args, tuple(sorted(kwargs.items())))
        with _MEMO_LOCK:
            hit = _MEMO.get(key)
        if hit is not None and hit[0] == state[1]:
            return hit[1]
        value = fn(study, *args, **kwargs)
        with _MEMO_LOCK:
            _MEMO.pop(key, None)
            _MEMO[key] = (state[1], value)
            while len(_MEMO) > _MEMO_MAX:
                _MEMO.pop(next(iter(_MEMO)))
        return value

    return wrapper


_WARMED: dict[str, threading.Thread] = {}


def warm_up(workspace: str | Path) -> threading.Thread | None:
    """Read every study's trials into the shared cached storage (and import torch) once per workspace, in a daemon thread.

    The first read of a study costs about a second per thousand trials; done when the sidebar first lists the
    workspace, the first visit to a page finds them in memory. Returns the thread (None without studies).
    """
    key = str(Path(workspace).resolve())
    if key in _WARMED or not _storage_ready(workspace):
        return _WARMED.get(key)

    def run() -> None:
        # First uses that cost a second or more each on a busy machine: torch's import and its FLOP counter (Best Model's
        # layer table), plotly express (several figures).
        import plotly.express as px
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False):
            torch.nn.Conv2d(1, 2, 3)(torch.zeros(1, 1, 4, 4))
        px.imshow(np.eye(2)).to_json()

        for item in studies(workspace):
            try:
                load_study(workspace, item["name"]).get_trials(deepcopy=False)
            except Exception:  # noqa: BLE001 - a warm-up must never break the page that started it
                log.debug("warm-up of %s failed", item["name"], exc_info=True)

    thread = threading.Thread(target=run, daemon=True, name="moca-warm-up")
    _WARMED[key] = thread
    thread.start()
    return thread


def wait_for_study(workspace: str | Path, name: str, *, alive: Any = lambda: True, timeout: float = 15.0) -> bool:
    """Poll until a just-started search has created its study in storage (True), died, or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if name in {s["name"] for s in studies(workspace)}:
                return True
        except ConfigError:
            pass
        if not alive():
            return False
        time.sleep(0.1)
    return False


def study_objectives(study: Any) -> list[str]:
    """The study's objective names (``accuracy``, ``latency_ms``...), falling back to ``value_i``."""
    names = study.user_attrs.get("objectives")
    if names and len(names) == len(study.directions):
        return list(names)
    return [f"value_{i}" for i in range(len(study.directions))]


def _objective_label(name: str, study: Any = None) -> str:
    obj = OBJECTIVES.get(name)
    proxy = proxy_name(study) if study is not None else None
    if obj is not None and proxy and obj.metric == "val_accuracy":  # what the objective holds in a proxy-ranked study
        return f"{proxy_label(proxy)} ({obj.direction[:3]})"
    return f"{obj.label} ({obj.direction[:3]})" if obj else name


def proxy_name(study: Any) -> str | None:
    """The proxy a two-phase study ranked its trials by (``naswot``, ``synflow``... or ``cached``), None for full training."""
    from nas_core.fidelities.base import FIDELITIES

    cfg = study.user_attrs.get("config") or {}
    fidelity = cfg.get("fidelity")
    if fidelity not in FIDELITIES:  # a plug-in fidelity this process has not loaded: its values are shown as they are
        return None
    return FIDELITIES.get(fidelity).proxy(dict(cfg.get("fidelity_options") or {}))


def proxy_label(proxy: str) -> str:
    """How pages name a proxy's value: a zero-cost score is no accuracy; the cached proxy is a short-training accuracy."""
    return "cached-proxy accuracy (1 short epoch)" if proxy == "cached" else f"{proxy} score (zero-cost proxy)"


@_per_state
def study_summary(study: Any) -> dict[str, Any]:
    """Dataset, objectives with directions, counts and the search settings the study was created with."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    cfg = study.user_attrs.get("config", {})
    ds = study.user_attrs.get("dataset", {})
    return {
        "name": study.study_name,
        "dataset": ds.get("name") or cfg.get("dataset", "?"),
        "input_shape": ds.get("input_shape"),
        "classes": ds.get("classes") or [],
        "objectives": [(o, d.name.lower()) for o, d in zip(study_objectives(study), study.directions)],
        "n_trials": len(states),
        "n_complete": states.count(TrialState.COMPLETE),
        "n_pruned": states.count(TrialState.PRUNED),
        "n_failed": states.count(TrialState.FAIL),
        "n_running": states.count(TrialState.RUNNING),
        "config": cfg,
    }


# --- Search page ---------------------------------------------------------------------------------


def sampler_names() -> list[str]:
    from nas_core.search import SAMPLERS

    return SAMPLERS.names()


def fidelity_names() -> list[str]:
    from nas_core.fidelities.base import FIDELITIES

    return FIDELITIES.names()


def fidelity_help() -> str:
    """One line per registered fidelity, for the Search page's fidelity choice."""
    from nas_core.fidelities.base import FIDELITIES

    return "; ".join(f"{name} = {FIDELITIES.get(name).summary or 'a plug-in fidelity'}" for name in FIDELITIES.names()) + "."


def fidelity_page_options(fidelity: str) -> tuple[Any, ...]:
    """The options the Search page renders for ``fidelity`` (:class:`nas_core.fidelities.FidelityOption`)."""
    from nas_core.fidelities.base import FIDELITIES

    return tuple(FIDELITIES.get(fidelity).page_options)


def fidelity_uses_library(fidelity: str) -> bool:
    from nas_core.fidelities.base import FIDELITIES

    return bool(FIDELITIES.get(fidelity).uses_library)


def pruner_names() -> list[str]:
    from nas_core.search import PRUNERS

    return PRUNERS.names()


def budget_plan(*, timeout: float | None, fidelity: str, options: dict[str, Any] | None = None) -> tuple[pd.DataFrame, str]:
    """The budget planner's split of ``timeout`` for this fidelity, as a (phase, budget) table and its one-line note."""
    from nas_core.fidelities.base import FIDELITIES
    from nas_core.schema.budget import plan_budget

    plan = plan_budget(timeout=timeout, two_phase=FIDELITIES.get(fidelity).has_final_phase, options=dict(options or {}))
    return pd.DataFrame(plan.rows(), columns=["phase", "budget"]), plan.note


def device_note() -> str:
    """Which accelerator ``device="auto"`` would pick here, for a caption under the device choice."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA available: {torch.cuda.get_device_name(0)} (auto uses it)."
    return "No CUDA GPU here: auto trains on the CPU."


def tile(image: np.ndarray, size: int = 64) -> np.ndarray:
    """A preview image scaled up by whole pixels (nearest neighbour) so 8x8 digits stay crisp in the browser."""
    img = np.asarray(image)
    side = max(img.shape[0], img.shape[1])
    k = max(1, size // max(1, side))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def number_step(p: Any) -> float:
    """A sensible step for a float range's number input (one decade below ``low`` on log scale)."""
    if p.log and p.low and p.low > 0:
        return float(10 ** math.floor(math.log10(p.low)))
    span = float(p.high) - float(p.low)
    return float(10 ** math.floor(math.log10(span / 5))) if span > 0 else 0.01


def dataset_label(info: Any) -> str:
    """``digits — 8x8 handwritten digits`` or ``mnist (unavailable)`` for a :class:`DatasetInfo`."""
    return f"{info.name} — {info.description}" if info.available else f"{info.name} (unavailable here)"


def upload_types() -> list[str]:
    """File types the dataset upload accepts: every registered reader's suffixes (:mod:`nas_core.data.readers`)."""
    from nas_core.data.readers import upload_suffixes

    return [s.lstrip(".") for s in upload_suffixes()]


def save_upload(workspace: str | Path, filename: str, data: bytes) -> Path:
    """Store an uploaded dataset under ``<workspace>/uploads/<content hash>/<name>`` and return its path.

    The content hash keeps two different files with one name apart, and the same file uploaded twice
    in one place (so its study name and data cache stay stable).
    """
    from nas_core.data.readers import upload_suffixes

    suffix = Path(filename).suffix.lower()
    if suffix not in upload_suffixes():
        raise DatasetError(
            f"uploaded file {filename!r} is not a .zip, .csv or .npz; upload a zip of class folders, a CSV with a "
            "label column, or an NPZ with arrays x and y."
        )
    if not data:
        raise DatasetError(f"uploaded file {filename!r} is empty; upload it again.")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(filename).stem).strip("-.") or "upload"
    digest = hashlib.sha256(data).hexdigest()[:12]
    path = Path(workspace) / "uploads" / digest / f"{stem[:60]}{suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def discard_upload(workspace: str | Path, path: str | Path, filename: str, message: str) -> str:
    """Delete a rejected upload (and its folder when empty) and return ``message`` naming the user's file, not our path."""
    p = Path(path)
    root = (Path(workspace) / "uploads").resolve()
    try:
        if p.resolve().is_relative_to(root):
            p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                p.parent.rmdir()
    except OSError:
        pass
    for text in (str(p), str(p.resolve()), str(p.parent), str(p.parent.resolve())):
        message = message.replace(text, filename)
    return message


def new_study_name(base: str, existing: Sequence[str]) -> str:
    """``base``, or ``base-2``, ``base-3``... : the first name that is not an existing study."""
    taken = set(existing)
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def class_counts_frame(preview: Any) -> pd.DataFrame:
    """Samples per class of a :class:`~nas_core.data.DatasetPreview`, in class order."""
    return pd.DataFrame({"class": list(preview.class_counts), "samples": list(preview.class_counts.values())})


def param_caption(p: Any) -> str:
    """What a space parameter means for the form: its help text, per-layer repeat and condition."""
    bits = [p.help] if p.help else []
    if p.repeat:
        bits.append(f"one value per layer of {p.repeat}")
    for cond, allowed in p.when.items():
        bits.append(f"only when {cond} is {', '.join(map(str, allowed))}")
    if p.log:
        bits.append("log scale")
    return "; ".join(bits)


def space_edits(space: Any, values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The changed fields of each parameter, as a ``{"params": ...}`` override of the preset.

    ``values`` maps a parameter name to what the form shows: ``{"low": .., "high": ..}`` for ranges and
    ``{"choices": [...]}`` for categorical or bool parameters. Unchanged parameters are left out, so an
    untouched form gives an empty dict (and the preset is used as it is).
    """
    edits: dict[str, dict[str, Any]] = {}
    for p in space.params:
        new = values.get(p.name)
        if not new:
            continue
        change: dict[str, Any] = {}
        if p.type in ("int", "float"):
            for key in ("low", "high"):
                if key in new and new[key] is not None and float(new[key]) != float(getattr(p, key)):
                    change[key] = int(new[key]) if p.type == "int" else float(new[key])
        else:
            default = [False, True] if p.type == "bool" else list(p.choices)
            chosen = list(new.get("choices", default))
            if not chosen:
                raise ConfigError(f"search-space parameter {p.name!r} needs at least one choice; tick one or more values.")
            if chosen != default:
                change["choices"] = [c for c in default if c in chosen] + [c for c in chosen if c not in default]
                if p.type == "bool":
                    change["type"] = "categorical"
        if change:
            edits[p.name] = change
    return edits


def space_data(space: Any, edits: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The ``SearchConfig.space_data`` for a preset plus edits (None when nothing was edited)."""
    if not edits:
        return None
    return {"base": space.name, "name": f"{space.name}-edited", "params": edits}


def edited_space(space: Any, edits: dict[str, dict[str, Any]]) -> Any:
    """The preset with the edits applied and validated (a bad range raises :class:`SearchSpaceError`)."""
    from nas_core.space import SearchSpace

    data = space_data(space, edits)
    return space if data is None else SearchSpace.from_dict(data, source="edited search space")


def progress_values(snapshot: Any) -> dict[str, Any]:
    """Fractions and captions of the two progress bars (trials overall, epochs of the current trial)."""
    s = snapshot
    counts = f"{s.n_complete} complete, {s.n_pruned} pruned, {s.n_failed} failed"
    if s.trials_total:
        overall = min(1.0, s.trials_done / s.trials_total)
        overall_text = f"{s.trials_done} / {s.trials_total} trials ({counts})"
    elif s.timeout_s:
        overall = min(1.0, s.elapsed_s / s.timeout_s)
        overall_text = f"{s.trials_done} trials, {s.elapsed_s:.0f} / {s.timeout_s:.0f} s ({counts})"
    else:
        overall, overall_text = 0.0, f"{s.trials_done} trials ({counts})"
    if s.timeout_s and s.trials_total:
        overall_text += f" — {s.elapsed_s:.0f} / {s.timeout_s:.0f} s"
    if s.current_trial is not None:
        epochs = max(1, s.epochs)
        epoch = min(1.0, s.epoch / epochs)
        epoch_text = f"trial {s.current_trial}: epoch {s.epoch} / {epochs}"
    else:
        epoch, epoch_text = (1.0 if s.status == "finished" else 0.0), "no trial running"
    return {"overall": overall, "overall_text": overall_text, "epoch": epoch, "epoch_text": epoch_text}


def points_frame(points: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Runner points (one dict per finished trial) as a frame with a ``pareto`` column."""
    df = pd.DataFrame(list(points))
    if df.empty:
        return pd.DataFrame(columns=["number", "state", "val_accuracy", "latency_ms", "params", "pareto"])
    return df


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


def study_points(workspace: str | Path, name: str) -> list[dict[str, Any]]:
    """The study's finished trials as live points (number, state, metrics), so a resumed study's live view shows its
    earlier trials too; empty while the study is not in storage yet. Memoised per study state."""
    try:
        study = load_study(workspace, name)
    except ConfigError:
        return []
    return _points(study)


@_per_state
def _points(study: Any) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [{"number": t.number, "state": t.state.name, **(t.user_attrs.get("metrics") or {})} for t in _trials(study, done)]


def live_scatter(points: Sequence[dict[str, Any]], *, objectives: Sequence[str] = ("accuracy", "latency_ms")) -> Any:
    """Accuracy vs the first cost objective of the finished trials so far, with the Pareto front drawn."""
    cost = next((OBJECTIVES[o].metric for o in objectives if o in OBJECTIVES and o != "accuracy"), "latency_ms")
    df = points_frame(points)
    df = df[df["state"] == "COMPLETE"] if "state" in df else df
    for col in ("val_accuracy", cost):
        if col not in df:
            df[col] = pd.Series(dtype=float)
    return _scatter_with_front(df, cost, "val_accuracy", title=f"live: accuracy vs {METRIC_LABELS.get(cost, cost)}")


def event_line(event: ev.Event) -> str:
    """One human line for a runner event, prefixed with its wall-clock time."""
    # Dispatch on the class name, not isinstance: a module reload (Streamlit's watcher in development) makes
    # new event classes while the running search still emits the old ones.
    e: Any = event
    kind = type(e).__name__
    stamp = time.strftime("%H:%M:%S", time.localtime(e.timestamp))
    if kind == "TrialStarted":
        text = f"trial {e.number} started: {e.summary}"
    elif kind == "EpochProgress":
        acc = e.metrics.get("val_accuracy")
        phase = f" ({e.metrics['phase']})" if isinstance(e.metrics.get("phase"), str) else ""
        text = f"trial {e.number}{phase} epoch {e.epoch}/{e.epochs}" + (f": val acc {acc:.4f}" if acc is not None else "")
    elif kind == "TrialFinished":
        m = e.metrics
        bits = [f"trial {e.number} {e.state} in {e.duration_s:.1f} s"]
        if "proxy_score" in m and "final_accuracy" not in m:  # a zero-cost score is not an accuracy: say which it is
            bits.append(f"proxy score {m['proxy_score']:.4g}, {m.get('latency_ms', float('nan')):.3f} ms, {int(m.get('params', 0)):,} params")
        elif "val_accuracy" in m:
            bits.append(f"val acc {m['val_accuracy']:.4f}, {m.get('latency_ms', float('nan')):.3f} ms, {int(m.get('params', 0)):,} params")
        if e.reason:
            bits.append(e.reason)
        text = " — ".join(bits)
    elif kind == "StudyFinished":
        text = (f"study finished ({e.reason}): {e.n_complete} complete, {e.n_pruned} pruned, "
                f"{e.n_failed} failed in {e.wall_s:.1f} s")
    elif kind == "SearchError":
        text = f"error: {e.message}"
    else:
        text = kind
    return f"{stamp}  {text}"


def event_lines(events: Sequence[ev.Event], *, limit: int = 40, epochs: bool = True) -> list[str]:
    """Newest first, at most ``limit`` lines; ``epochs=False`` leaves out per-epoch lines."""
    chosen = [e for e in events if epochs or type(e).__name__ != "EpochProgress"]
    return [event_line(e) for e in reversed(chosen[-limit:])]


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
    metrics = [c for c in ("val_accuracy", "test_accuracy", "macro_f1", "latency_ms", "params", "flops", "size_mb", "epochs_trained")
               if c in df.columns]
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


@_per_state
def _trials(study: Any, states: tuple[Any, ...] | None = None) -> list[Any]:
    """Trials with any post-search record (e.g. the cached fidelity's fine-tune) laid over their user attributes."""
    from nas_core.results.tables import with_final_results

    return with_final_results(study, study.get_trials(deepcopy=False, states=states))


@_per_state
def _complete(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in _trials(study, (TrialState.COMPLETE,)) if t.values is not None]


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


# --- Best Model page -----------------------------------------------------------------------------

PICK_LABELS = {
    "best_accuracy": "Best accuracy",
    "fastest_within_1pt": "Fastest within 1 point",
    "knee": "Knee / balanced",
    "smallest": "Smallest",
}


@_per_state
def pareto_frame(study: Any) -> tuple[pd.DataFrame, dict[str, int]]:
    """(Pareto table, {pick name: trial number}) using :func:`nas_core.pareto.pick_points`."""
    from nas_core.results.pareto import pick_points
    from nas_core.results.tables import pareto_rows

    trials, metrics = pareto_rows(study)
    if not trials:
        return pd.DataFrame(), {}
    picks = {k: trials[i].number for k, i in pick_points(metrics).items()}
    rows = []
    for t, m in zip(trials, metrics):
        tags = [PICK_LABELS[k] for k, n in picks.items() if n == t.number]
        rows.append({
            "trial": t.number, "pick": ", ".join(tags), "val_accuracy": m.get("val_accuracy"), "test_accuracy": m.get("test_accuracy"),
            "macro_f1": m.get("macro_f1"), "latency_ms": m.get("latency_ms"), "params": m.get("params"), "flops": m.get("flops"),
            "architecture": t.user_attrs.get("summary", ""),
        })
    return pd.DataFrame(rows), picks


@_per_state
def complete_trials(study: Any) -> list[int]:
    """Numbers of the complete trials that carry a config (any of them can be opened on Best Model)."""
    return [t.number for t in _complete(study) if "config" in t.user_attrs]


def _trial(study: Any, number: int) -> Any:
    for t in _trials(study):
        if t.number == number:
            return t
    raise ConfigError(f"study {study.study_name!r} has no trial {number}; pick one of {complete_trials(study)}.")


def trial_config(study: Any, number: int) -> ModelConfig:
    """The downloadable config of a complete trial (validated like any JSON config)."""
    t = _trial(study, number)
    if "config" not in t.user_attrs:
        raise ConfigError(f"trial {number} of {study.study_name!r} is {t.state.name} and has no config; pick a complete trial.")
    return ModelConfig.from_dict(t.user_attrs["config"])


def trial_details(study: Any, number: int) -> dict[str, Any]:
    """Metrics, latency measurement, confusion matrix, per-class accuracy and history of a trial."""
    t = _trial(study, number)
    a = t.user_attrs
    return {
        "number": t.number,
        "state": t.state.name,
        "summary": a.get("summary", ""),
        "metrics": dict(a.get("metrics", {})),
        "latency": dict(a.get("latency", {})),
        "confusion": a.get("confusion") or [],
        "per_class_accuracy": a.get("per_class_accuracy") or [],
        "history": a.get("history") or [],
        "mlflow_run_id": a.get("mlflow_run_id", ""),
        "params": dict(t.params),
        "duplicate_of": a.get("duplicate_of"),
        # "trained" unless a proxy-ranked study's trial never got past its proxy phase (no final_accuracy)
        "accuracy_source": "proxy" if proxy_name(study) and "final_accuracy" not in a.get("metrics", {}) else "trained",
    }


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _spec_text(spec: Any) -> str:
    if spec is None:
        return ""
    keep = {k: v for k, v in spec.params.items() if k not in ("activation",)}
    return ", ".join(f"{k}={v}" for k, v in sorted(keep.items()))


def architecture_dot(arch: Architecture) -> str:
    """Graphviz DOT of the network: input, every block and adapter (dashed) with output shape, then the head."""
    from nas_core.model.assembly import plan

    layers = plan(arch)
    c, h, w = arch.input_shape
    lines = [
        "digraph moca {",
        '  rankdir=TB; nodesep=0.25; ranksep=0.25;',
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=11];',
        '  edge [color="#555555", arrowsize=0.6];',
        f'  input [label="input\\n{c}x{h}x{w}", shape=oval, fillcolor="#dde8d5"];',
    ]
    prev = "input"
    for i, info in enumerate(layers):
        node = f"l{i}"
        detail = _spec_text(info.spec)
        label = f"{info.name}: {info.kind}" + (f"\\n{_dot_escape(detail)}" if detail else "") + f"\\n→ {info.out_shape}"
        style = ', style="rounded,dashed,filled", fillcolor="#fff4e0"' if info.adapter else ""
        if info.spec is not None and info.spec.library_id:
            label += "\\nlibrary block (pretrained)"
            style = ', fillcolor="#e8defa"'
        lines.append(f'  {node} [label="{label}"{style}];')
        lines.append(f"  {prev} -> {node};")
        prev = node
    head = arch.head
    pool = "global avg pool" if head.pool == "avg" or (layers and layers[-1].out_shape.layout != "image") else "flatten"
    lines.append(f'  pool [label="{pool}", fillcolor="#f3f3f3"];')
    lines.append(f"  {prev} -> pool;")
    prev = "pool"
    for j, units in enumerate(head.hidden):
        lines.append(f'  fc{j} [label="linear {units} + {head.activation}' + (f'\\ndropout {head.dropout:.2f}' if head.dropout else "") + '", fillcolor="#f3f3f3"];')
        lines.append(f"  {prev} -> fc{j};")
        prev = f"fc{j}"
    lines.append(f'  out [label="linear → {arch.num_classes} classes", shape=oval, fillcolor="#dde8d5"];')
    lines.append(f"  {prev} -> out;")
    lines.append("}")
    return "\n".join(lines)


def layer_table(arch: Architecture) -> pd.DataFrame:
    """One row per body layer plus the head: kind, details, input/output shape, parameters and FLOPs (batch 1).

    Memoised per architecture (building the network and counting its FLOPs is most of a Best Model rerun); a copy is returned.
    """
    return _layer_table(json.dumps(arch.to_dict(), sort_keys=True)).copy()


@functools.lru_cache(maxsize=64)
def _layer_table(arch_json: str) -> pd.DataFrame:
    arch = Architecture.from_dict(json.loads(arch_json))
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nas_core.model.assembly import assemble

    model = assemble(arch).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *arch.input_shape))
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    rows = []
    for i, info in enumerate(model.layers_info):
        rows.append({
            "layer": info.name, "kind": info.kind + (" (adapter)" if info.adapter else ""), "details": _spec_text(info.spec),
            "input": str(info.in_shape), "output": str(info.out_shape),
            "params": sum(p.numel() for p in model.body[i].parameters()), "flops": int(flops.get(f"{root}.body.{i}", 0)),
        })
    head = arch.head
    rows.append({
        "layer": "head", "kind": "classifier", "details": f"{head.pool}" + "".join(f" > {u}" for u in head.hidden) + f" > {arch.num_classes}",
        "input": str(model.layers_info[-1].out_shape), "output": str(arch.num_classes),
        "params": sum(p.numel() for p in model.head.parameters()), "flops": int(flops.get(f"{root}.head", 0)),
    })
    df = pd.DataFrame(rows)
    total = {"layer": "total", "kind": "", "details": "", "input": "", "output": "", "params": int(df["params"].sum()),
             "flops": int(flops.get("Global", df["flops"].sum()))}
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str] = ()) -> Any:
    """Confusion-matrix heatmap (rows: true class, columns: predicted)."""
    import plotly.express as px

    cm = np.asarray(confusion, dtype=int)
    labels = [str(c) for c in classes] if len(classes) == len(cm) else [str(i) for i in range(len(cm))]
    fig = px.imshow(cm, x=labels, y=labels, text_auto=True, color_continuous_scale="Blues", aspect="auto",
                    labels={"x": "predicted", "y": "true", "color": "samples"})
    fig.update_layout(title="Confusion matrix (test split)", height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def per_class_frame(per_class: Sequence[float], classes: Sequence[str] = ()) -> pd.DataFrame:
    labels = [str(c) for c in classes] if len(classes) == len(per_class) else [str(i) for i in range(len(per_class))]
    return pd.DataFrame({"class": labels, "accuracy": [float(v) for v in per_class]})


def per_class_figure(per_class: Sequence[float], classes: Sequence[str] = ()) -> Any:
    """Per-class test accuracy as bars on a fixed 0-1 axis (an auto-scaled axis ran to 1.6 and made 1.0 look low)."""
    import plotly.graph_objects as go

    df = per_class_frame(per_class, classes)
    fig = go.Figure(go.Bar(x=df["class"], y=df["accuracy"], marker_color="#1f77b4",
                           hovertemplate="class %{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title="Per-class accuracy (test split)", height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis_title="class", yaxis_title="accuracy")
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return fig


def format_ms(value: Any) -> str:
    """A latency in ms with 3 significant digits ("0.336 ms", "35.6 ms"): short enough for a metric tile."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    if value >= 100:
        return f"{value:,.0f} ms"
    return f"{value:.3g} ms" if value >= 1 else f"{value:.3f} ms"


def trial_weights(workspace: str | Path, study: str, number: int) -> Path | None:
    """The trained weights of a trial (``<study>/weights/trial_N.safetensors``) if the search saved them."""
    path = study_dir(workspace, study) / "weights" / f"trial_{number}.safetensors"
    return path if path.is_file() else None


def onnx_available() -> bool:
    from nas_core.deploy.exporters import get_exporter

    return get_exporter("onnx").available() is None


def network_exporters() -> list[Any]:
    """The registered exporters that write a runnable network (the Best Model page offers each as a download)."""
    from nas_core.deploy.exporters import EXPORTERS

    return [EXPORTERS.get(name) for name in EXPORTERS.names() if not EXPORTERS.get(name).weights_only]


def export_bytes(config: ModelConfig, fmt: str, *, weights: str | Path | None = None) -> bytes:
    """The network in format ``fmt`` as bytes (through :func:`nas_core.deploy.export_model`)."""
    from nas_core.deploy.exporters import export_model, get_exporter

    with tempfile.TemporaryDirectory(prefix="moca-export-") as tmp:
        out = export_model(config, fmt=fmt, out=Path(tmp) / f"model{get_exporter(fmt).suffix}", weights=weights)
        return out.read_bytes()


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


# --- retrain jobs: nas_core.jobs (one background-job class for searches and retrains) --------------------

def config_json(config: ModelConfig) -> str:
    return config.to_json()


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def jsonable_params(params: dict[str, Any]) -> str:
    return json.dumps(params, indent=2, default=str)


def library_frame(workspace: str | Path) -> pd.DataFrame:
    """The module library of the workspace as a table (empty when none has been built yet)."""
    from nas_core.library import library_dir, library_rows

    if not library_dir(workspace).exists():
        return pd.DataFrame()
    return pd.DataFrame(library_rows(workspace))
