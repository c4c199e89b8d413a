"""UI helpers the pages share: the workspace, the runner-registry handle, the sidebar, the current study, messages."""

from __future__ import annotations

from typing import Any

import streamlit as st

from nas_core import views
from nas_core.errors import NasCoreError
from nas_core.jobs import RunnerRegistry, get_registry
from nas_core.workspace import default_workspace
from app_pages import fleet_ui

SEARCH_PAGE = "app_pages/search.py"


@st.cache_resource
def registry() -> RunnerRegistry:
    """The process-wide runner registry: every tab, rerun and session sees the same running searches."""
    return get_registry()


def workspace() -> str:
    return str(st.session_state.get("workspace") or default_workspace())


def studies() -> list[dict[str, Any]]:
    try:
        return views.studies(workspace())
    except NasCoreError as exc:
        st.error(str(exc))
        return []


def flash(kind: str, message: str) -> None:
    """Keep a message across the next rerun (shown by :func:`show_flash`)."""
    st.session_state["_flash"] = (kind, message)


def show_flash() -> None:
    item = st.session_state.pop("_flash", None)
    if item:
        getattr(st, item[0], st.info)(item[1])


def sidebar() -> None:
    """Workspace chooser, the studies in it (the current one is shared by every page) and running searches."""
    if "workspace" not in st.session_state:
        st.session_state["workspace"] = str(default_workspace())
    with st.sidebar:
        st.text_input("Workspace", key="workspace", help="Folder with the studies, MLflow runs and caches "
                      "(default ./moca_runs or $MOCA_HOME). Type another path to switch.")
        ws = workspace()
        fleet_ui.storage_settings(ws)
        items = studies()
        if items:
            warming = views.warm_up(ws)  # once per workspace: the pages then find every study's trials in memory
            if warming is not None and warming.is_alive():
                st.fragment(run_every=1.0)(_warm_up_status)(warming)
        running = {r.study: r for r in registry().running(ws)}
        if not items:
            st.caption("No studies here yet: start one on **Search**.")
            if running:  # started, its study not in storage yet
                st.fragment(run_every=2.0)(_running_status)()
        else:
            names = [s["name"] for s in items]
            pending = st.session_state.pop("_select_study", None)  # set by a page before this widget existed
            if pending in names:
                st.session_state["study"] = pending
            if st.session_state.get("study") not in names:
                st.session_state["study"] = next((n for n in running if n in names), names[0])
            # Plain names: a label that changes while the value stays the same is not redrawn by the browser.
            st.selectbox("Study", names, key="study", help="The study shown on Results, Best Model and Analytics.")
            if running:  # counts that keep up with the live panel: re-read every 2 s while a search runs
                st.fragment(run_every=2.0)(_study_list)(None)
            else:
                _study_list(items)


def _study_list(items: list[dict[str, Any]] | None) -> None:
    """The studies with their trial counts; a running one also says how far this run is, from the same snapshot the
    Search page shows (a count read once per full page run said "0 trials" while the page showed 2/6)."""
    items = studies() if items is None else items
    running = {r.study: r.snapshot(recent=0) for r in registry().running(workspace())}
    with st.expander(f"{len(items)} stud{'y' if len(items) == 1 else 'ies'} in this workspace", expanded=len(items) <= 4):
        for s in items:
            objectives = ", ".join(s["attrs"].get("objectives") or [])
            dataset = (s["attrs"].get("dataset") or {}).get("name") or (s["attrs"].get("config") or {}).get("dataset", "")
            snap = running.get(s["name"])
            live = ""
            if snap is not None:
                live = f" · running: {snap.trials_done}" + (f"/{snap.trials_total}" if snap.trials_total else "") + " trials this run"
            st.caption(f"**{s['name']}** — {s['n_trials']} trials" + (f", {dataset}" if dataset else "")
                       + (f", {objectives}" if objectives else "") + live)
    _running_status()


def _warm_up_status(thread: Any) -> None:
    """A visible state while the studies are read into memory; one full rerun when done (which also stops this poll)."""
    if thread.is_alive():
        st.caption(":material/hourglass_top: Reading the studies' trials into memory; the first page visits may be slower "
                   "until this is done.")
    else:
        st.rerun()


def _running_status() -> None:
    for runner in registry().running(workspace()):
        snap = runner.snapshot(recent=0)
        total = f"/{snap.trials_total}" if snap.trials_total else ""
        st.info(f"Running **{snap.study}**: {snap.trials_done}{total} trials", icon=":material/autorenew:")


def empty_workspace() -> None:
    st.info(f"No studies in `{workspace()}` yet. Open **Search**, choose a dataset and press **Start**; "
            "this page fills in as trials finish.")
    try:
        st.page_link(SEARCH_PAGE, label="Go to Search", icon=":material/play_circle:")
    except Exception:  # noqa: BLE001 - outside st.navigation (a page run on its own) there is no link target
        pass


def current_study() -> Any:
    """The study chosen in the sidebar (newest when none), or stop the page with what to do first."""
    items = studies()
    if not items:
        empty_workspace()
        st.stop()
    names = [s["name"] for s in items]
    name = st.session_state.get("study")
    if name not in names:
        name = names[0]
    try:
        return views.load_study(workspace(), name)
    except NasCoreError as exc:
        st.error(str(exc))
        st.stop()


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
