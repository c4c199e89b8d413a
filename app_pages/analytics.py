"""Analytics page: accuracy-cost trade-offs, top-5 comparison, block usage, learning curves, two studies, proxy vs final,
the ranking quality of the study's own fidelity (tau with a bootstrap interval) and the budget split."""

from __future__ import annotations

import math

import streamlit as st

from nas_core import views
from nas_core.errors import NasCoreError
from nas_core.search import OBJECTIVES
from app_pages import common

st.title("Analytics")
study = common.current_study()
workspace = common.workspace()
frame = views.trials_frame(study)
if frame.empty or "val_accuracy" not in frame or not (frame["state"] == "COMPLETE").any():
    st.info(f"Study **{study.study_name}** has no complete trial yet; analytics appear once trials finish (see Search).")
    st.stop()
objectives = views.study_objectives(study)
st.caption(f"Study **{study.study_name}**: {int((frame['state'] == 'COMPLETE').sum())} complete trials.")

try:
    st.subheader("Accuracy vs cost")
    costs = [c for c in ("latency_ms", "params", "flops", "size_mb") if c in frame]
    x = st.segmented_control("Cost axis", costs, default=costs[0], key="an_cost",
                             format_func=lambda c: views.METRIC_LABELS.get(c, c)) or costs[0]
    st.plotly_chart(views.study_scatter(study, x), key="an_scatter")
    proxy = views.proxy_name(study)
    if proxy:
        trained = int(frame["val_accuracy"].notna().sum())
        st.caption(f"Accuracy here is trained accuracy: the {trained} finalists of this study. The other trials were only ranked "
                   f"by the {views.proxy_label(proxy)}, which is no accuracy (see Results).")
    axes_3d = [OBJECTIVES[o].metric for o in objectives if o in OBJECTIVES]
    if len(axes_3d) >= 3:
        st.plotly_chart(views.study_scatter_3d(study, tuple([a for a in axes_3d if a != "val_accuracy"][:2] + ["val_accuracy"]
                                                   if "val_accuracy" in axes_3d else axes_3d[:3])), key="an_3d")
    else:
        with st.expander("3-D view (latency, parameters, accuracy)", expanded=False):
            st.caption("Shown by default for studies with three objectives; here on the measured metrics.")
            st.plotly_chart(views.study_scatter_3d(study, ("latency_ms", "params", "val_accuracy")), key="an_3d")

    st.subheader("Top 5 side by side")
    st.dataframe(views.top_trials_frame(study, k=5), key="an_top5")

    st.subheader("Block usage in good vs bad trials")
    usage = views.block_usage(study)
    if usage.empty:
        st.info("Block usage needs at least two complete trials.")
    else:
        st.plotly_chart(views.block_usage_figure(usage), key="an_blocks")

    st.subheader("Accuracy vs epochs")
    curves = views.epoch_curves_figure(study)
    if curves is None:
        st.info("No per-epoch history recorded (zero-cost or cached fidelities train briefly or not at all).")
    else:
        st.plotly_chart(curves, key="an_curves")

    st.subheader("Compare two studies")
    names = [s["name"] for s in common.studies()]
    if len(names) < 2:
        st.info("Only one study in this workspace; run another search (e.g. another sampler or space) to compare.")
    else:
        a, b = st.columns(2)
        first = a.selectbox("First study", names, index=names.index(study.study_name), key="an_cmp_a")
        second = b.selectbox("Second study", names, index=next(i for i, n in enumerate(names) if n != first), key="an_cmp_b")
        table, fig = views.compare_studies(workspace, first, second)
        st.dataframe(table, hide_index=True, key="an_cmp_table")
        st.plotly_chart(fig, key="an_cmp_fig")

    st.subheader("Proxy score vs final accuracy")
    proxy = views.proxy_correlation(study)
    if proxy is None:
        st.info("No proxy data yet: trials get `proxy_accuracy` and `final_accuracy` from the cached fidelity's final re-training. "
                "Run a search with fidelity **cached** to compare.")
    else:
        rho = "n/a" if math.isnan(proxy.spearman) else f"{proxy.spearman:.3f}"
        tau = "n/a" if math.isnan(proxy.kendall) else f"{proxy.kendall:.3f}"
        c1, c2, c3 = st.columns(3)
        c1.metric("Spearman ρ", rho)
        c2.metric("Kendall τ", tau)
        c3.metric("Trials", proxy.n)
        st.plotly_chart(proxy.figure, key="an_proxy")

    st.subheader("Ranking quality of this study's fidelity")
    checks = views.ranking_quality(study)
    if not checks:
        st.info("Needs at least 5 complete trials carrying both numbers of a check (e.g. validation and test accuracy).")
    for i, check in enumerate(checks):
        lo, hi = check.ci95
        c1, c2, c3 = st.columns(3)
        c1.metric(f"Kendall τ: {check.signal} → {check.target}", "n/a" if math.isnan(check.kendall) else f"{check.kendall:.3f}")
        c2.metric("95 % bootstrap interval", "n/a" if math.isnan(lo) else f"{lo:.2f} to {hi:.2f}")
        c3.metric("Trials", check.n)
        st.caption(f"{check.note} Reading: {check.verdict}.")
        with st.expander(f"Scatter: {check.signal} vs {check.target}", expanded=i == 0):
            st.plotly_chart(views.ranking_figure(check), key=f"an_rank_{i}")
    st.caption("How the default space's cheap signals rank 60 trained candidates against #params and FLOPs: "
               "`benchmarks/results/ranking.md`.")

    screened = views.screening_frame(study)
    if screened is not None:
        st.subheader("Screening")
        out = int((screened["outcome"] == "screened out").sum())
        c1, c2, c3 = st.columns(3)
        c1.metric("Screened", len(screened))
        c2.metric("Trained in full", len(screened) - out)
        c3.metric("Screened out", out)
        st.caption("Each candidate first trained one epoch with its schedule compressed into it; the mean rank of that accuracy "
                   "and its FLOPs decided which went on to a full training (the top third; the known-good designs always). "
                   "`--fidelity-option screen=off` trains every candidate in full.")
        st.plotly_chart(views.screening_figure(screened), key="an_screen")
        st.dataframe(screened, hide_index=True, key="an_screen_table")

    st.subheader("Budget split")
    split = views.budget_split(study)
    if split is None:
        st.info("This study ran without --timeout, so nothing was planned: the trials ran to --trials.")
    else:
        st.dataframe(split, hide_index=True, key="an_budget")
        plan = study.user_attrs.get("budget_plan") or {}
        if plan.get("note"):
            st.caption(plan["note"])
except NasCoreError as exc:
    st.error(str(exc))
