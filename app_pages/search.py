"""Search page: dataset, search space, objectives and budget -> Start; a live view of the running search; Stop."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from nas_core import views
from nas_core.data import inspect_dataset, list_datasets
from nas_core.errors import NasCoreError
from nas_core.search import OBJECTIVES, SearchConfig, default_study_name
from nas_core.space import PRESETS
from app_pages import common, fleet_ui

UPLOAD = "__upload__"
NEW_STUDY = "__new__"


@st.cache_data(show_spinner="Reading the dataset…", max_entries=16)
def _preview(dataset: str, data_dir: str | None, cache_dir: str) -> Any:
    return inspect_dataset(dataset, data_dir=data_dir, n_preview=16, cache_dir=cache_dir)


def _dataset_section(ws: str) -> tuple[str | None, str | None]:
    """Dataset choice (built-in with availability, or an upload), validated with a preview. Returns (dataset, data_dir)."""
    st.subheader("Dataset")
    with st.expander("Data folder (MNIST / Fashion-MNIST IDX files)", expanded=False):
        data_dir = st.text_input("Data folder", key="data_dir", placeholder="leave empty for the defaults",
                                 help="Folder holding IDX files or torchvision downloads; empty = the system dataset folders.") or None
    infos = {i.name: i for i in list_datasets(data_dir=data_dir)}
    names = list(infos) + [UPLOAD]
    choice = st.selectbox(
        "Dataset", names, key="ds_choice",
        format_func=lambda n: "Upload a file (zip of class folders, CSV or NPZ)…" if n == UPLOAD else views.dataset_label(infos[n]),
    )
    dataset: str | None = None
    if choice == UPLOAD:
        upload = st.file_uploader("Dataset file", type=views.upload_types(), key="ds_upload",
                                  help="zip: one folder per class with images; CSV: a label column plus pixel columns; "
                                       "NPZ: arrays x (N,H,W[,C]) and y (N).")
        if upload is None:
            st.caption("Upload a file to see its classes and sample images.")
            return None, data_dir
        try:
            dataset = str(views.save_upload(ws, upload.name, upload.getvalue()))
        except NasCoreError as exc:
            st.error(str(exc))
            return None, data_dir
    elif not infos[choice].available:
        st.warning(f"**{choice}** cannot be loaded here: {infos[choice].reason}")
        return None, data_dir
    else:
        dataset = choice
    try:
        preview = _preview(dataset, data_dir, f"{ws}/cache/data")
    except NasCoreError as exc:
        if choice == UPLOAD:  # a rejected upload leaves nothing in the workspace, and the message names the user's file
            st.error(views.discard_upload(ws, dataset, upload.name, str(exc)))
        else:
            st.error(str(exc))
        return None, data_dir
    c, h, w = preview.input_shape
    st.caption(f"**{preview.name}**: {preview.num_samples:,} samples, {len(preview.classes)} classes, input {c}×{h}×{w}.")
    with st.expander("Preview: sample images and class counts", expanded=choice == UPLOAD):
        st.image([views.tile(img) for img in preview.preview_images], caption=preview.preview_labels, width=64)
        st.bar_chart(views.class_counts_frame(preview), x="class", y="samples", height=200)
    return dataset, data_dir


def _param_widget(space: Any, p: Any) -> dict[str, Any]:
    """One generated input per parameter type: a low/high pair for ranges, a choice list otherwise."""
    key = f"sp_{space.name}_{p.name}"
    help_text = views.param_caption(p) or None
    if p.type in ("int", "float"):
        left, right = st.columns(2)
        if p.type == "int":
            low = left.number_input(f"{p.name} low", value=int(p.low), step=1, key=f"{key}_low", help=help_text)
            high = right.number_input(f"{p.name} high", value=int(p.high), step=1, key=f"{key}_high")
        else:
            step = views.number_step(p)
            low = left.number_input(f"{p.name} low", value=float(p.low), step=step, format="%g", key=f"{key}_low", help=help_text)
            high = right.number_input(f"{p.name} high", value=float(p.high), step=step, format="%g", key=f"{key}_high")
        if low > high:  # said here, next to the two fields, not below the whole form
            st.error(f"{p.name}: `low <= high` must hold, but got low={low:g}, high={high:g}; lower low or raise high.")
        return {"low": low, "high": high}
    options = [False, True] if p.type == "bool" else list(p.choices)
    chosen = st.multiselect(p.name, options, default=options, key=key, help=help_text, format_func=str)
    return {"choices": chosen}


def _space_section() -> tuple[str, dict[str, Any] | None, bool]:
    """Preset choice plus its ranges as an editable form generated from the space definition."""
    st.subheader("Search space")
    name = st.selectbox("Preset", list(PRESETS), key="space_preset", format_func=lambda n: f"{n} — {PRESETS[n].description}")
    space = PRESETS[name]
    values: dict[str, Any] = {}
    bad_range = any(st.session_state.get(f"sp_{space.name}_{p.name}_low", p.low) > st.session_state.get(f"sp_{space.name}_{p.name}_high", p.high)
                    for p in space.params if p.type in ("int", "float"))
    with st.expander(f"Edit ranges ({len(space.params)} parameters)", expanded=bad_range):
        for p in space.params:
            values[p.name] = _param_widget(space, p)
        for rule in space.rules:
            st.caption(f"Rule: {rule}")
    bad = [p.name for p in space.params if p.type in ("int", "float") and values[p.name]["low"] > values[p.name]["high"]]
    if bad:
        st.caption(f"Start is off until the ranges of {', '.join(bad)} are fixed (see **Edit ranges**).")
        return name, None, False
    try:
        edits = views.space_edits(space, values)
        views.edited_space(space, edits)
    except NasCoreError as exc:
        st.error(str(exc))
        return name, None, False
    if edits:
        st.caption(f"Edited: {', '.join(sorted(edits))} (the rest as in the preset).")
    return name, views.space_data(space, edits), True


def _settings_section(dataset: str | None, space_name: str) -> dict[str, Any]:
    st.subheader("Objectives and budget")
    names = [s["name"] for s in common.studies()]
    study_choice = st.selectbox("Study", [NEW_STUDY] + names, key="study_choice",
                                format_func=lambda n: "New study" if n == NEW_STUDY else f"Resume {n}",
                                help="Pick an existing study to add trials to it (same objectives).")
    resume = study_choice != NEW_STUDY
    if resume:
        study_name = study_choice
        attrs = next((s["attrs"] for s in common.studies() if s["name"] == study_choice), {})
        objectives = list(attrs.get("objectives") or ["accuracy", "latency_ms"])
        st.caption("Objectives of this study: " + ", ".join(f"{o} ({OBJECTIVES[o].direction})" for o in objectives if o in OBJECTIVES))
    else:
        base = default_study_name(dataset or "data", space_name)
        default = views.new_study_name(base, names)  # never an existing study: Start must not add to one silently
        study_name = st.text_input("Study name", value=default, key=f"study_name_{base}",
                                   help="Letters, digits, '_', '-' or '.'. To add trials to an existing study, pick it above.")
        if study_name in names:
            st.warning(f"A study named **{study_name}** exists: Start would add trials to it. Choose **Resume {study_name}** "
                       "above to do that on purpose, or type a new name.")
        objectives = st.multiselect("Objectives", list(OBJECTIVES), default=["accuracy", "latency_ms"], key="objectives",
                                    format_func=lambda o: f"{o} ({OBJECTIVES[o].direction[:3]})",
                                    help="Accuracy is maximised; latency, params, FLOPs and size are minimised. One objective = single-objective study.")
    left, right = st.columns(2)
    trials = left.number_input("Trials", min_value=1, max_value=100_000, value=20, step=1, key="trials")
    timeout = right.number_input("Timeout (s, 0 = none)", min_value=0, max_value=30 * 86_400, value=0, step=60, key="timeout")
    epochs = left.number_input("Epochs per trial", min_value=1, max_value=1000, value=20, step=1, key="epochs")
    seed = right.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="seed")
    sampler = left.selectbox("Sampler", views.sampler_names(), key="sampler")
    fidelity = right.selectbox("Fidelity", views.fidelity_names(), key="fidelity", help=views.fidelity_help())
    pruner = left.selectbox("Pruner", views.pruner_names(), key="pruner",
                            help="median/hyperband: single objective only; asha/sh: multi-objective successive halving.")
    device = right.selectbox("Device", ["auto", "cpu", "cuda"], key="device")
    train_samples = left.number_input("Training samples (0 = all)", min_value=0, max_value=10_000_000, value=0, step=100,
                                      key="train_samples", help="Subsample the training split for a quick search.")
    right.caption(views.device_note())
    fidelity_options = _fidelity_options(fidelity)
    plan, note = views.budget_plan(timeout=float(timeout) or None, fidelity=fidelity, options=fidelity_options)
    with st.expander("Budget plan", expanded=bool(timeout)):
        st.dataframe(plan, hide_index=True, width="stretch")
        st.caption(note)
    if views.fidelity_uses_library(fidelity):
        with st.expander(f"Module library (pretrained blocks the {fidelity} fidelity assembles from)"):
            try:
                library = views.library_frame(common.workspace())
            except NasCoreError as exc:
                st.error(str(exc))
            else:
                if library.empty:
                    st.info("No library in this workspace yet: the first cached search builds one (about 2 minutes), "
                            "or run `python -m nas_core library build --dataset digits --workspace <workspace>`.")
                else:
                    st.dataframe(library, hide_index=True, width="stretch")
    return {
        "study": study_name, "objectives": tuple(objectives), "trials": int(trials), "timeout": float(timeout) or None,
        "epochs": int(epochs), "seed": int(seed), "sampler": sampler, "fidelity": fidelity, "pruner": pruner,
        "device": device, "train_samples": int(train_samples) or None, "fidelity_options": fidelity_options,
    }


def _fidelity_options(fidelity: str) -> dict[str, Any]:
    """The options the fidelity declares for this page (the CLI sets the same ones with --fidelity-option)."""
    declared = views.fidelity_page_options(fidelity)
    if not declared:
        return {}
    options: dict[str, Any] = {}
    for column, opt in zip(st.columns(2) * len(declared), declared):
        if opt.choices:
            choices = list(opt.choices)
            options[opt.name] = column.selectbox(opt.label, choices, index=choices.index(opt.default), key=opt.widget_key, help=opt.help)
        else:
            options[opt.name] = int(column.number_input(opt.label, min_value=opt.minimum, max_value=opt.maximum, value=opt.default, step=1,
                                                        key=opt.widget_key, help=opt.help))
    return options


def _config_form(ws: str) -> None:
    left, right = st.columns(2, gap="large")
    with left:
        dataset, data_dir = _dataset_section(ws)
        space_name, space_data, space_ok = _space_section()
    with right:
        settings = _settings_section(dataset, space_name)
        workers = fleet_ui.workers_input(ws)
        ready = dataset is not None and space_ok
        if st.button("Start", type="primary", key="start", disabled=not ready, icon=":material/play_arrow:",
                     help=None if ready else "choose a loadable dataset and a valid search space first"):
            try:
                config = SearchConfig(dataset=dataset or "", workspace=ws, space=space_name, space_data=space_data, data_dir=data_dir,
                                      **settings)
                runner = common.registry().start(config, workers=workers)
            except NasCoreError as exc:
                st.error(str(exc))
            else:
                with st.spinner("Starting: loading the data and opening the study…"):
                    views.wait_for_study(ws, runner.study, alive=runner.is_alive)
                st.session_state["live_study"] = runner.study
                st.session_state["_live_active"] = True
                st.session_state["_select_study"] = runner.study  # the sidebar selects it on the next run
                common.flash("success", f"Started **{runner.study}**: {config.trials} trials on {config.dataset}"
                                        + (f" with {workers} workers." if workers > 1 else "."))
                st.rerun()


def _pick_runner(ws: str) -> Any:
    reg = common.registry()
    running = reg.running(ws)
    want = st.session_state.get("live_study")
    runner = reg.get(ws, want) if want else None
    if runner is None or (not runner.is_alive() and running):
        runner = running[0] if running else reg.latest(ws)
    return runner


def _live_panel() -> None:
    ws = common.workspace()
    runner = _pick_runner(ws)
    if runner is None:
        st.session_state["_live_active"] = False
        st.info("No search has run in this dashboard yet. Configure one and press **Start**; progress appears here.")
        return
    snap = runner.snapshot(recent=300)
    was = st.session_state.get("_live_active")
    st.session_state["_live_active"] = snap.active
    if was is not None and was != snap.active:
        st.rerun()  # the whole page (form, sidebar) catches up when a search starts or ends
    st.subheader(f"{snap.study}: {snap.status}")
    cols = st.columns([1, 1, 1, 1])
    cols[0].metric("Trials done", f"{snap.trials_done}" + (f" / {snap.trials_total}" if snap.trials_total else ""))
    if runner.config.fidelity == "zero-cost":  # a proxy score is never shown as an accuracy
        best = max((p["proxy_score"] for p in snap.points if p.get("state") == "COMPLETE" and "proxy_score" in p), default=None)
        cols[1].metric("Best proxy score", "–" if best is None else f"{best:.4g}")
    else:
        best = max((p.get("val_accuracy", float("nan")) for p in snap.points if p.get("state") == "COMPLETE"), default=None)
        cols[1].metric("Best proxy-phase accuracy" if runner.config.fidelity == "cached" else "Best val accuracy", common.fmt(best))
    cols[2].metric("Elapsed", f"{snap.elapsed_s:.0f} s")
    if snap.active:
        if cols[3].button("Stop", key="stop", icon=":material/stop:", disabled=snap.status == "stopping",
                          help="Ends the running trial at its next batch; every finished trial is kept."):
            t0 = time.perf_counter()
            runner.stop(wait=10.0)
            dt = time.perf_counter() - t0
            done = runner.snapshot(recent=0)
            common.flash("info", f"Stopped **{snap.study}** in {dt:.2f} s; {done.n_complete} complete trials kept "
                                 f"({done.n_pruned} pruned, {done.n_failed} failed).")
            st.session_state["_stop_seconds"] = dt
            st.session_state["_live_active"] = False
            st.rerun()
    pv = views.progress_values(snap)
    st.progress(pv["overall"], text=pv["overall_text"])
    st.progress(pv["epoch"], text=pv["epoch_text"])
    if snap.plan_note and snap.active:  # the plan made at run time (the Budget plan above is the one made before it)
        st.info(snap.plan_note, icon=":material/schedule:")
    if snap.error:
        st.error(snap.error)
    if snap.status == "finished":
        st.success(f"Finished: {snap.n_complete} complete, {snap.n_pruned} pruned, {snap.n_failed} failed trials. "
                   "Open Results, Best Model or Analytics for the study.")
        for warning in runner.result.warnings if runner.result else ():
            st.warning(warning)
    elif snap.status == "stopped":
        st.info(f"Stopped: {snap.n_complete} complete trials kept; Start the same study again to resume it.")
    left, right = st.columns([3, 2])
    with left:
        # A resumed study: its earlier trials (from storage) stay on the plot beside this run's.
        seen = {p.get("number") for p in snap.points}
        earlier = [p for p in views.study_points(ws, snap.study) if p.get("number") not in seen]
        st.plotly_chart(views.live_scatter(earlier + snap.points, objectives=runner.config.objectives), key="live_scatter")
        if earlier:
            st.caption(f"{len(earlier):,} earlier trials of this study are drawn with this run's {len(snap.points):,}.")
    with right:
        if snap.current_trial is not None:
            st.markdown(f"**Trial {snap.current_trial}** `{snap.current_summary}`")
            params = pd.DataFrame({"parameter": list(snap.current_params), "value": [str(v) for v in snap.current_params.values()]})
            st.dataframe(params, hide_index=True, height=260, key="current_params")
        else:
            st.caption("No trial running.")
    if getattr(runner, "workers", 1) > 1 and snap.active:
        with st.expander(f"Workers ({runner.workers})", expanded=True):
            try:
                fleet_ui.workers_panel(views.load_study(ws, snap.study))
            except NasCoreError as exc:
                st.caption(str(exc))
    st.markdown("**Event log**")
    st.code("\n".join(views.event_lines(snap.recent, limit=200)) or "(no events yet)", language=None, height=240)


st.title("Search")
common.show_flash()
workspace = common.workspace()
active = bool(common.registry().running(workspace))
# Poll only while a search runs; an idle page does nothing until the user acts (a Start reruns the page).
live = st.fragment(run_every=1.0 if active else None)(_live_panel)
# The live panel sits at the same place in both layouts (after one form block and a divider): when a search ends, the
# full rerun then redraws it in place, instead of drawing a second one elsewhere while the stale one still shows.
if active:
    with st.expander("Start another search", expanded=False):
        _config_form(workspace)
else:
    _config_form(workspace)
st.divider()
live()
