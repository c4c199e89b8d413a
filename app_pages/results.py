"""Results page: every trial of the current study (filter, sort, CSV), counts, and Optuna's own plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from nas_core import views
from nas_core.errors import NasCoreError
from app_pages import common, fleet_ui


def _importance_panel(study: Any) -> None:
    """Parameter importance, computed once per study state in a background thread; this fragment polls until it is ready."""
    job = views.importance_job(study)
    if not job.done:
        st.session_state["_imp_waiting"] = True
        st.progress(min(0.95, job.elapsed_s() / 10.0),
                    text=f"Computing parameter importance in the background ({job.elapsed_s():.0f} s so far); the rest of the page works meanwhile.")
        return
    if st.session_state.pop("_imp_waiting", False):
        st.rerun()  # stop polling: the full page shows the figures
    for name, fig, note in job.result:
        if fig is None:
            st.info(f"{name}: {note}")
        else:
            st.plotly_chart(fig, key=f"imp_{name}")


st.title("Results")
study = common.current_study()
workspace = common.workspace()
summary = views.study_summary(study)
objectives = ", ".join(f"{o} ({d})" for o, d in summary["objectives"])
st.caption(f"Study **{study.study_name}** on **{summary['dataset']}** — objectives {objectives}.")

counts = st.columns(4)
counts[0].metric("Complete", summary["n_complete"])
counts[1].metric("Pruned", summary["n_pruned"])
counts[2].metric("Failed", summary["n_failed"])
counts[3].metric("Running", summary["n_running"])

if summary["n_running"]:  # the workers running this study's trials, re-read every 2 s (nothing to show once it ends)
    with st.expander(f"Workers ({summary['n_running']} running trials)", expanded=True):
        st.fragment(run_every=2.0)(fleet_ui.workers_panel)(study)

proxy = views.proxy_name(study)
if proxy:
    st.info(f"Trials were ranked by the **{views.proxy_label(proxy)}**, which is what the accuracy objective holds; only the "
            "finalists were trained. **val acc** shows trained accuracies only (the finalists'); the other trials' measured "
            "accuracies are in the proxy-phase columns.", icon=":material/info:")

frame = views.trials_frame(study)
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
view = views.filter_trials(frame, states=states, text=text, sort_by=sort_by, ascending=ascending)
st.dataframe(
    view, hide_index=True, key="res_table", column_order=views.table_columns(frame),
    column_config={c: st.column_config.NumberColumn(label, format=fmt) for c, (label, fmt) in views.column_formats(frame, proxy=proxy).items()} | {
        "duration_s": st.column_config.NumberColumn("duration s", format="%.1f"),
        "mlflow_run_id": st.column_config.TextColumn("MLflow run id"),
        "reason": st.column_config.TextColumn("fail / prune reason"),
        "val_held_out": st.column_config.CheckboxColumn("val held out", help="Unticked: the model trained on the validation split "
                                                        "(the one training on train + validation), so its val acc is not held out."),
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
# Lazy tabs: only the open tab's plot is built and sent (each is a second or more at a thousand trials).
PLOTS = ["Optimization history", "Hypervolume", "Parameter importance", "Parallel coordinates", "Timeline"]
tabs = dict(zip(PLOTS, st.tabs(PLOTS, key="res_plots", on_change="rerun")))
if not summary["n_running"]:  # a finished study: start it now, in the background, so it is ready when its tab is opened
    views.importance_job(study)  # (while trials run, each state would start another: only the open tab asks then)
try:
    with tabs["Optimization history"]:
        if tabs["Optimization history"].open:
            for name, fig in views.history_figures(study):
                st.plotly_chart(fig, key=f"hist_{name}")
    with tabs["Hypervolume"]:
        if tabs["Hypervolume"].open:
            fig, note = views.hypervolume_figure(study)
            if fig is None:
                st.info(f"No hypervolume: {note}")
            else:
                st.plotly_chart(fig, key="hv")
                st.caption(note)
    with tabs["Parameter importance"]:
        if tabs["Parameter importance"].open:
            st.fragment(run_every=None if views.importance_job(study).done else 1.0)(_importance_panel)(study)
    with tabs["Parallel coordinates"]:
        if tabs["Parallel coordinates"].open:
            names = [o for o, _ in summary["objectives"]]
            colour = st.selectbox("Colour by objective", names, key="res_parallel_obj") if len(names) > 1 else names[0]
            if summary["n_complete"]:
                st.plotly_chart(views.parallel_figure(study, colour), key="parallel")
            else:
                st.info("Parallel coordinates need at least one complete trial.")
    with tabs["Timeline"]:
        if tabs["Timeline"].open:
            st.plotly_chart(views.timeline_figure(study), key="timeline")
except NasCoreError as exc:
    st.error(str(exc))
