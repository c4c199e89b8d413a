"""Results page: every trial of the current study (filter, sort, CSV), counts, and Optuna's own plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from nas_core import dashboard
from nas_core.errors import NasCoreError
from app_pages import common


@st.cache_data(show_spinner="Computing parameter importance…", max_entries=32)
def _importances(workspace: str, study: str, n_finished: int) -> list[tuple[str, Any, str]]:
    # n_finished is part of the cache key: the figures are recomputed when a trial finishes.
    return dashboard.importance_figures(dashboard.load_study(workspace, study))


st.title("Results")
study = common.current_study()
workspace = common.workspace()
summary = dashboard.study_summary(study)
objectives = ", ".join(f"{o} ({d})" for o, d in summary["objectives"])
st.caption(f"Study **{study.study_name}** on **{summary['dataset']}** — objectives {objectives}.")

counts = st.columns(4)
counts[0].metric("Complete", summary["n_complete"])
counts[1].metric("Pruned", summary["n_pruned"])
counts[2].metric("Failed", summary["n_failed"])
counts[3].metric("Running", summary["n_running"])

frame = dashboard.trials_frame(study)
if frame.empty:
    st.info("This study has no trials yet; they appear here as the search runs.")
    st.stop()

st.subheader("Trials")
f1, f2, f3, f4 = st.columns([2, 2, 2, 1])
all_states = sorted(frame["state"].unique())
states = f1.multiselect("State", all_states, default=all_states, key="res_states")
text = f2.text_input("Filter (architecture, params, reason, run id)", key="res_filter", placeholder="e.g. gelu or conv-64")
sortable = [c for c in frame.columns if c not in ("datetime_start", "datetime_complete")]
sort_by = f3.selectbox("Sort by", sortable, index=sortable.index("number"), key="res_sort")
ascending = f4.toggle("Ascending", value=True, key="res_asc")
view = dashboard.filter_trials(frame, states=states, text=text, sort_by=sort_by, ascending=ascending)
st.dataframe(
    view, hide_index=True, key="res_table",
    column_config={
        "val_accuracy": st.column_config.NumberColumn("val acc", format="%.4f"),
        "test_accuracy": st.column_config.NumberColumn("test acc", format="%.4f"),
        "latency_ms": st.column_config.NumberColumn("latency ms", format="%.3f"),
        "duration_s": st.column_config.NumberColumn("duration s", format="%.1f"),
        "mlflow_run_id": st.column_config.TextColumn("MLflow run id"),
        "reason": st.column_config.TextColumn("fail / prune reason"),
    },
)
st.caption(f"{len(view)} of {len(frame)} trials shown.")
st.download_button("Download CSV", data=view.to_csv(index=False), file_name=f"{study.study_name}_trials.csv", mime="text/csv",
                   key="res_csv", on_click="ignore", icon=":material/download:")
mlflow_db = Path(workspace).resolve() / "mlflow.db"
if mlflow_db.exists():
    st.caption(f"MLflow: each trial is a nested run (id in the table). Browse them with "
               f"`mlflow ui --backend-store-uri sqlite:///{mlflow_db}`.")

st.subheader("Plots")
tabs = st.tabs(["Optimization history", "Hypervolume", "Parameter importance", "Parallel coordinates", "Timeline"])
try:
    with tabs[0]:
        for name, fig in dashboard.history_figures(study):
            st.plotly_chart(fig, key=f"hist_{name}")
    with tabs[1]:
        fig, note = dashboard.hypervolume_figure(study)
        if fig is None:
            st.info(f"No hypervolume: {note}")
        else:
            st.plotly_chart(fig, key="hv")
            st.caption(note)
    with tabs[2]:
        finished = summary["n_complete"] + summary["n_pruned"] + summary["n_failed"]
        for name, fig, note in _importances(workspace, study.study_name, finished):
            if fig is None:
                st.info(f"{name}: {note}")
            else:
                st.plotly_chart(fig, key=f"imp_{name}")
    with tabs[3]:
        names = [o for o, _ in summary["objectives"]]
        colour = st.selectbox("Colour by objective", names, key="res_parallel_obj") if len(names) > 1 else names[0]
        if summary["n_complete"]:
            st.plotly_chart(dashboard.parallel_figure(study, colour), key="parallel")
        else:
            st.info("Parallel coordinates need at least one complete trial.")
    with tabs[4]:
        st.plotly_chart(dashboard.timeline_figure(study), key="timeline")
except NasCoreError as exc:
    st.error(str(exc))
