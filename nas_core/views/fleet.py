"""The workers of a study as the dashboard shows them: who runs which trial (host, pid, device) and when each last beat.

Read from the RUNNING trials' owner records (:mod:`nas_core.owners`, written when a trial starts) and Optuna's
heartbeat table, so it works for workers on any machine that share the study's storage; no Streamlit here.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pandas as pd

from nas_core.workspace.owners import OWNER_KEY, device_label, owner_alive

__all__ = ["WORKER_COLUMNS", "device_label", "workers_frame"]  # device_label lives in owners (no pandas import for a worker)

WORKER_COLUMNS = ["host", "pid", "device", "trial", "running for (s)", "last heartbeat (s ago)", "process"]


def _heartbeats(study: Any, trial_ids: list[int]) -> tuple[dict[int, float], bool]:
    """{trial id: seconds since its last heartbeat} from the storage's clock, and whether the storage has heartbeats."""
    storage = getattr(study, "_storage", None)
    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    if engine is None or not trial_ids:
        return {}, engine is not None
    from sqlalchemy import bindparam, func, select, text

    with engine.connect() as con:
        now = con.execute(select(func.now())).scalar()
        rows = con.execute(text("SELECT trial_id, heartbeat FROM trial_heartbeats WHERE trial_id IN :ids")
                           .bindparams(bindparam("ids", expanding=True)), {"ids": trial_ids}).all()
    out = {}
    for tid, beat in rows:
        if isinstance(beat, str):  # SQLite returns text
            beat = dt.datetime.fromisoformat(beat)
        current = dt.datetime.fromisoformat(now) if isinstance(now, str) else now
        out[int(tid)] = max(0.0, (current.replace(tzinfo=None) - beat.replace(tzinfo=None)).total_seconds())
    return out, True


def workers_frame(study: Any) -> pd.DataFrame:
    """One row per RUNNING trial: host, pid, device, trial number, how long it runs, its last heartbeat, and whether
    its process is alive (checked on this machine only; elsewhere the heartbeat is all there is)."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    beats, has_beats = _heartbeats(study, [t._trial_id for t in running])
    rows = []
    now = time.time()
    for t in sorted(running, key=lambda t: t.number):
        owner = t.user_attrs.get(OWNER_KEY)
        owner = owner if isinstance(owner, dict) else {}
        alive = owner_alive(owner) if owner else None
        started = t.datetime_start.timestamp() if t.datetime_start else None
        rows.append({
            "host": owner.get("host", "?"),
            "pid": owner.get("pid"),
            "device": owner.get("device", "?"),
            "trial": t.number,
            "running for (s)": round(now - started, 1) if started else None,
            "last heartbeat (s ago)": round(beats[t._trial_id], 1) if t._trial_id in beats else None,
            "process": {True: "alive", False: "gone (reclaimed by the next worker here)", None: "on another host"}[alive]
            if owner else "not recorded yet",
        })
    frame = pd.DataFrame(rows, columns=WORKER_COLUMNS)
    frame.attrs["heartbeats"] = has_beats
    return frame
