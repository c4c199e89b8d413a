"""Best Model page: pick a Pareto point (or any trial), see its architecture and metrics, download it, retrain it longer."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from nas_core import views
from nas_core.deploy.retraining import rebuild_snippet
from nas_core.errors import NasCoreError
from nas_core.schema.record import val_mark
from nas_core.workspace import study_dir
from app_pages import common

st.title("Best Model")
study = common.current_study()
workspace = common.workspace()
try:
    pareto, picks = views.pareto_frame(study)
    numbers = views.complete_trials(study)
except NasCoreError as exc:
    st.error(str(exc))
    st.stop()
if not picks or not numbers:
    st.info(f"Study **{study.study_name}** has no complete trial yet. Let the search finish a trial (see Search), then come back.")
    st.stop()

proxy = views.proxy_name(study)
st.caption(f"Study **{study.study_name}**: {len(pareto)} Pareto-optimal of {len(numbers)} complete trials"
           + (f", over the trained finalists only (the others were ranked by the {views.proxy_label(proxy)})." if proxy else "."))
key = f"bm_trial_{study.study_name}"
if st.session_state.get(key) not in numbers:
    st.session_state[key] = picks["best_accuracy"]


def _choose(number: int) -> None:
    st.session_state[key] = number


buttons = st.columns(len(views.PICK_LABELS))
for col, (pick, label) in zip(buttons, views.PICK_LABELS.items()):
    col.button(f"{label} (trial {picks[pick]})", key=f"bm_pick_{pick}", on_click=_choose, args=(picks[pick],), width="stretch",
               type="primary" if st.session_state[key] == picks[pick] else "secondary")
labels = {int(r.trial): r.pick for r in pareto.itertuples()}
number = st.selectbox("Trial", numbers, key=key,
                      format_func=lambda n: f"trial {n}" + (f" — Pareto: {labels[n]}" if labels.get(n) else (" — Pareto" if n in labels else "")))
with st.expander("Pareto front", expanded=False):
    st.dataframe(pareto, hide_index=True, key="bm_pareto")

try:
    config = views.trial_config(study, number)
    details = views.trial_details(study, number)
except NasCoreError as exc:
    st.error(str(exc))
    st.stop()
m = details["metrics"]
st.subheader(f"Trial {number}")
st.markdown(f"`{details['summary']}`")
cols = st.columns(6)
if details["accuracy_source"] == "proxy":  # not a finalist: its accuracies are the proxy phase's, not a trained network's
    untrained = m.get("val_accuracy") is not None and m.get("val_accuracy") == m.get("proxy_score")  # older zero-cost records
    cols[0].metric("Val acc (proxy phase)", "–" if untrained else common.fmt(m.get("val_accuracy")))
    cols[1].metric("Test acc (proxy phase)", common.fmt(m.get("test_accuracy")))
    st.caption(f"Trial {number} was only scored by the proxy ({views.proxy_label(views.proxy_name(study) or '')}"
               + (f" = {m['proxy_score']:.4g}" if m.get("proxy_score") is not None else "") + "), not trained; "
               "the Pareto front and the picks use the trained finalists only.")
else:
    seen = val_mark(m)  # the one training (and a head on its body) trained on the validation split: not a held-out score
    cols[0].metric("Val accuracy" + seen, common.fmt(m.get("val_accuracy")),
                   help=("This model trained on the validation split (the one training trains on the training and validation "
                         "splits), so this is not a held-out score; the test accuracy is.") if seen else None)
    cols[1].metric("Test accuracy", common.fmt(m.get("test_accuracy")))
cols[2].metric("Macro F1 (test)", common.fmt(m.get("macro_f1")))
cols[3].metric("Latency", views.format_ms(m.get("latency_ms")))
cols[4].metric("Parameters", f"{int(m.get('params', 0)):,}")
cols[5].metric("FLOPs", f"{m.get('flops', 0) / 1e6:.2f} M")
how = details["latency"].get("how", "")
st.caption(f"Latency: {how}." if how else "Latency measured on CPU, batch 1.")
if details["duplicate_of"] is not None:
    st.caption(f"Same candidate as trial {details['duplicate_of']}: its result was reused, not retrained.")

tab_arch, tab_metrics, tab_dl, tab_retrain = st.tabs(["Architecture", "Metrics", "Downloads", "Retrain longer"])

with tab_arch:
    diagram, table = st.columns([1, 2])
    try:
        diagram.graphviz_chart(views.architecture_dot(config.architecture))
        table.dataframe(views.layer_table(config.architecture), hide_index=True, key="bm_layers",
                        column_config={"params": st.column_config.NumberColumn("params", format="localized"),
                                       "flops": st.column_config.NumberColumn("FLOPs", format="localized")})
    except NasCoreError as exc:
        st.error(str(exc))
    table.caption("Output shapes are per sample (channels x height x width, or tokens x width); FLOPs for batch 1. "
                  "Dashed boxes in the diagram are adapters the assembler inserted where neighbouring blocks disagree; "
                  "purple ones are pretrained library blocks.")

classes = list(config.dataset.classes)
with tab_metrics:
    left, right = st.columns(2)
    if details["per_class_accuracy"]:
        left.plotly_chart(views.per_class_figure(details["per_class_accuracy"], classes), key="bm_per_class")
    if details["confusion"]:
        right.plotly_chart(views.confusion_figure(details["confusion"], classes), key="bm_confusion")
    if details["mlflow_run_id"]:
        st.caption(f"MLflow run id: `{details['mlflow_run_id']}`")

weights = views.trial_weights(workspace, study.study_name, number)
base = f"{study.study_name}_trial{number}"
with tab_dl:
    st.download_button("Config JSON", data=config.to_json(), file_name=f"{base}.json", mime="application/json", key="dl_json",
                       on_click="ignore", icon=":material/data_object:", type="primary")
    st.caption("Rebuilds and retrains this network anywhere (architecture, training recipe, metrics, provenance).")
    for exporter in views.network_exporters():  # one button per registered format (nas_core.deploy.exporters)
        problem = exporter.available()
        if problem:
            st.caption(f"{problem}.")
            continue
        st.download_button(exporter.label, data=lambda fmt=exporter.name: views.export_bytes(config, fmt, weights=weights),
                           file_name=f"{base}{exporter.suffix}", mime=exporter.mime, key=f"dl_{exporter.name}", on_click="ignore")
    if weights is not None:
        st.download_button("Weights (safetensors)", data=weights.read_bytes(), file_name=f"{base}.safetensors",
                           mime="application/octet-stream", key="dl_weights", on_click="ignore")
    else:
        st.caption("No trained weights were saved for this trial (exports above are untrained).")
    summary_md = study_dir(workspace, study.study_name) / "summary.md"
    if summary_md.is_file():
        st.download_button("summary.md", data=summary_md.read_text(), file_name=f"{study.study_name}_summary.md",
                           mime="text/markdown", key="dl_summary", on_click="ignore")
    st.markdown("**Rebuild from the JSON**")
    st.code(rebuild_snippet(f"{base}.json", f"{base}.safetensors" if weights is not None else None), language="python")


def _retrain_panel(number: int) -> None:
    job = views.get_retrain(workspace, study.study_name, number)
    if job is None:
        st.caption("Not retrained in this session of the server yet.")
        return
    frac, text = job.progress()
    st.progress(frac, text=text)
    if st.session_state.get("_rt_running") and not job.is_alive():
        st.session_state["_rt_running"] = False
        st.rerun()  # stop polling and show the result with the full page
    st.session_state["_rt_running"] = job.is_alive()
    if job.status == "running":
        if st.button("Stop retraining", key="rt_stop"):
            job.stop(wait=5.0)
            st.rerun()
    elif job.status == "error":
        st.error(job.error or "retraining failed")
    elif job.result:
        r = job.result
        cols = st.columns(4)
        cols[0].metric("Test accuracy", common.fmt(r.get("test_accuracy")),
                       delta=f"{r.get('test_accuracy', 0) - (m.get('test_accuracy') or 0):+.4f}")
        cols[1].metric("Val accuracy", common.fmt(r.get("val_accuracy")))
        cols[2].metric("Epochs trained", r.get("epochs_trained"))
        cols[3].metric("Wall time", f"{r.get('wall_s', 0):.1f} s")
        st.caption(f"{r.get('train_size', '?')} training samples, init {r.get('init')}; latency {r.get('latency_measurement', '')}. "
                   + " ".join(r.get("notes", [])))
        path = Path(r.get("weights", ""))
        if path.is_file():
            st.download_button("Retrained weights (safetensors)", data=path.read_bytes(), file_name=f"{base}_retrained.safetensors",
                               mime="application/octet-stream", key="dl_retrained", on_click="ignore")


with tab_retrain:
    st.caption("Trains this configuration again on the full training split, for more epochs (early stopping still applies).")
    if views.body_epochs(config):
        st.caption(f"Its head was fitted on the frozen body of trial {config.provenance['body_from'].get('trial')}'s network: "
                   f"retraining trains that network first ({views.body_epochs(config)} epochs, its own recipe), then this head "
                   "for the epochs below, on that body's features.")
    c1, c2, c3 = st.columns([1, 1, 1])
    epochs = c1.number_input("Epochs", min_value=1, max_value=1000, value=max(20, 2 * config.training.epochs), step=5, key="rt_epochs")
    device = c2.selectbox("Device", ["auto", "cpu", "cuda"], key="rt_device")
    running = (job := views.get_retrain(workspace, study.study_name, number)) is not None and job.is_alive()
    if c3.button("Retrain longer", key="rt_start", disabled=running, icon=":material/model_training:"):
        try:
            views.start_retrain(config, workspace=workspace, study=study.study_name, trial=number, epochs=int(epochs), device=device)
        except NasCoreError as exc:
            st.error(str(exc))
        else:
            st.rerun()
    st.fragment(run_every=1.0 if running else None)(_retrain_panel)(number)
