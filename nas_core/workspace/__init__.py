"""The workspace: one folder (default ``./moca_runs``, env ``MOCA_HOME``) holding every file MoCA-NAS writes."""

from __future__ import annotations

import os
import re
from pathlib import Path

from nas_core.errors import ConfigError

__all__ = ["default_workspace", "study_dir", "default_storage", "check_study_name", "list_studies"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def default_workspace() -> Path:
    return Path(os.environ.get("MOCA_HOME") or "moca_runs")


def check_study_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ConfigError(
            f"study name {name!r} is not allowed; use 1-100 letters, digits, '_', '-' or '.', starting with a letter or digit."
        )
    return name


def study_dir(workspace: str | Path, study: str) -> Path:
    return Path(workspace) / check_study_name(study)


def default_storage(workspace: str | Path) -> str:
    return f"sqlite:///{Path(workspace).resolve() / 'optuna.db'}"


def list_studies(workspace: str | Path, storage: str | None = None) -> list[dict[str, object]]:
    """Studies in the workspace's Optuna storage, newest first (empty when there is none yet)."""
    ws = Path(workspace)
    if storage is None and not (ws / "optuna.db").exists():
        return []
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    summaries = optuna.get_all_study_summaries(storage or default_storage(ws), include_best_trial=False)
    out = []
    for s in summaries:
        if s.study_name.startswith("moca-claim:"):  # nas_core.claims' markers behind a gRPC proxy, not studies
            continue
        out.append(
            {
                "name": s.study_name,
                "n_trials": s.n_trials,
                "directions": [d.name.lower() for d in s.directions],
                "started": s.datetime_start,
                "attrs": dict(s.user_attrs),
            }
        )
    out.sort(key=lambda d: str(d["started"] or ""), reverse=True)
    return out


_SQLITE_TUNED = False


def tune_sqlite() -> None:
    """Make every SQLite connection of this process use WAL + ``synchronous=NORMAL``.

    With the default rollback journal each Optuna ``suggest``/``set_user_attr`` is an fsync'ed commit
    (~10 ms each on a laptop disk, ~40 per trial). WAL with NORMAL sync is SQLite's recommended mode
    for applications: an app crash loses nothing, a power cut at most the last transactions.
    ``MOCA_SQLITE_WAL=0`` keeps the rollback journal (for network drives where WAL's shared memory fails).
    """
    global _SQLITE_TUNED
    if _SQLITE_TUNED or os.environ.get("MOCA_SQLITE_WAL", "1") == "0":
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        if isinstance(dbapi_connection, sqlite3.Connection):
            cur = dbapi_connection.cursor()
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError:
                pass  # a locked or read-only database keeps its mode
            finally:
                cur.close()

    _SQLITE_TUNED = True
