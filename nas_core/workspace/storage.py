"""The one way nas_core opens study storage: Optuna RDB storage (SQLite in the workspace or any SQLAlchemy URL).

Every opener gets the same settings: the SQLite folder made and WAL tuning (:func:`nas_core.workspace.tune_sqlite`),
the lock timeout and connection-pool settings of :func:`nas_core.workspace.faults.storage_kwargs`, and, for a
search, heartbeats that fail a crashed trial and retry it once. Readers that poll (the dashboard, a progress
bar) share one storage per URL per process instead of opening a new connection pool each time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from nas_core.workspace import tune_sqlite
from nas_core.workspace.faults import storage_kwargs

__all__ = ["open_storage", "shared_storage", "storage_engine"]


def open_storage(url: str, *, heartbeat: tuple[float, float] | None = None) -> Any:
    """A new ``optuna.storages.RDBStorage`` for ``url``; ``heartbeat=(interval_s, grace_s)`` for a process that runs trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    tune_sqlite()
    beats: dict[str, Any] = {}
    if heartbeat is not None:
        interval, grace = heartbeat
        beats = {"heartbeat_interval": max(1, round(interval)), "grace_period": max(2, round(grace)),
                 "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    return optuna.storages.RDBStorage(url, engine_kwargs=storage_kwargs(url), **beats)


@functools.lru_cache(maxsize=16)
def shared_storage(url: str) -> Any:
    """One storage per URL for this process's readers (no heartbeats): polling never piles up connection pools."""
    return open_storage(url)


def storage_engine(url: str) -> Any:
    """A SQLAlchemy engine on the study database with the same settings (for nas_core's own table beside Optuna's)."""
    from sqlalchemy import create_engine

    tune_sqlite()
    return create_engine(url, **storage_kwargs(url))
