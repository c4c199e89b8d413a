"""UI for studies shared by many workers: the workspace's storage settings (sidebar), the workers count (Search), the
workers table (Results and Search). Logic lives in nas_core.workspace.config and nas_core.views.fleet."""

from __future__ import annotations

from typing import Any

import streamlit as st

from nas_core.errors import NasCoreError
from nas_core.views import fleet
from nas_core.workspace.config import (
    CONFIG_NAME,
    describe,
    is_sqlite,
    read_config,
    save_config,
    workspace_storage,
)


def storage_settings(ws: str) -> None:
    """Sidebar expander: the storage and tracking URIs this workspace's studies live in (its moca.json)."""
    try:
        recorded = read_config(ws)
    except NasCoreError as exc:
        st.error(str(exc))
        recorded = {}
    label = "Storage: " + ("this workspace's SQLite" if "storage" not in recorded else describe(recorded["storage"]))
    with st.expander(label, expanded=False):
        with st.form("storage_form", border=False):
            storage = st.text_input("Optuna storage URL", value=recorded.get("storage", ""), key="cfg_storage",
                                    placeholder="empty = <workspace>/optuna.db",
                                    help="Any SQLAlchemy URL (postgresql+psycopg2://USER@HOST/DB) or grpc://HOST:PORT (a "
                                         "`python -m nas_core storage-proxy`). Workers started with --storage record it too.")
            tracking = st.text_input("MLflow tracking URI", value=recorded.get("tracking_uri", ""), key="cfg_tracking",
                                     placeholder="empty = <workspace>/mlflow.db", help="e.g. http://mlflow-host:5000")
            if st.form_submit_button("Save", icon=":material/save:"):
                try:
                    save_config(ws, storage=storage, tracking_uri=tracking)
                except (NasCoreError, OSError) as exc:
                    st.error(str(exc))
                else:
                    st.session_state.pop("study", None)  # the list of studies changes with the storage
                    st.rerun()
        st.caption(f"Kept in `{ws}/{CONFIG_NAME}` (readable by you only).")


def workers_input(ws: str) -> int:
    """How many worker processes Start runs; more than one needs a storage that is not SQLite."""
    n = int(st.number_input("Workers", min_value=1, max_value=64, value=1, step=1, key="workers",
                            help="Worker processes sharing the study (one GPU each when several are visible). More than "
                                 "one needs a PostgreSQL storage: set it in the sidebar's Storage settings."))
    if n > 1 and is_sqlite(workspace_storage(ws)):
        st.error(f"{n} workers need a storage many processes can write at once, but this workspace's storage is SQLite, "
                 "which takes one writer at a time. Set a PostgreSQL URL in the sidebar's **Storage** settings "
                 "(see docs/scale-out.md), or use 1 worker.")
    return n


def workers_panel(study: Any) -> None:
    """Who runs which trial now: host, pid, device, trial, last heartbeat (from the RUNNING trials' owner records)."""
    try:
        frame = fleet.workers_frame(study)
    except Exception as exc:  # noqa: BLE001 - a storage hiccup must not break the page around this panel
        st.caption(f"Workers unavailable: {type(exc).__name__}: {exc}")
        return
    if frame.empty:
        st.caption("No trial is running now.")
        return
    st.dataframe(frame, hide_index=True, key="workers_table", column_config={
        "pid": st.column_config.NumberColumn("pid", format="%d"),
        "trial": st.column_config.NumberColumn("trial", format="%d"),
    })
    if not frame.attrs.get("heartbeats"):
        st.caption("This storage records no heartbeats (a gRPC proxy): a worker on another host that dies is not noticed.")
