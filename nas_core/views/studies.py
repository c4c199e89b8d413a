"""Studies in a workspace, loading them, and the per-study-state memo every page's views share; the metric
labels and directions the pages use.

Part of :mod:`nas_core.views` (no Streamlit import); the pages reach it as ``nas_core.views.<name>``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.errors import ConfigError, NasCoreError
from nas_core.jobs import RetrainJob, get_retrain, start_retrain  # noqa: F401 - the pages call them here
from nas_core.schema.objectives import OBJECTIVES
from nas_core.workspace import list_studies
from nas_core.workspace.config import CONFIG_NAME, describe, workspace_storage
from nas_core.workspace.storage import open_storage

log = logging.getLogger(__name__)

__all__ = ["METRIC_LABELS", "METRIC_DIRECTIONS", "STATE_COLORS", "studies", "load_study", "study_state", "warm_up", "wait_for_study", "study_objectives", "proxy_name", "proxy_label", "study_summary"]


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
    if not isinstance(fidelity, str) or fidelity not in FIDELITIES:  # a plug-in fidelity this process has not loaded: its values are shown as they are
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


@_per_state
def _trials(study: Any, states: tuple[Any, ...] | None = None) -> list[Any]:
    """Trials with any post-search record (e.g. the cached fidelity's fine-tune) laid over their user attributes."""
    from nas_core.results.tables import with_final_results

    return with_final_results(study, study.get_trials(deepcopy=False, states=states))


@_per_state
def _complete(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in _trials(study, (TrialState.COMPLETE,)) if t.values is not None]


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
