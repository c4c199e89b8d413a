"""AppTest of app.py and every page: on an empty workspace and on a real tiny finished study."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import APP_TIMEOUT as TIMEOUT
from conftest import open_app as _app
from conftest import start_search_from_page
from streamlit.testing.v1 import AppTest

from nas_core import dashboard
from nas_core.runner import get_registry

ROOT = Path(__file__).resolve().parent.parent


def _texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def _frame(at: AppTest, column: str) -> Any:
    """The first dataframe shown with ``column`` (AppTest does not expose dataframe keys)."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no dataframe with column {column!r}")


def _button(at: AppTest, label_start: str) -> Any:
    matches = [b for b in at.button if b.label.startswith(label_start)]
    assert matches, f"no button starting with {label_start!r}; have {[b.label for b in at.button]}"
    return matches[0]


# --- empty workspace ----------------------------------------------------------------------------------


def test_app_on_an_empty_workspace_opens_search(tmp_path: Path) -> None:
    at = _app(tmp_path)
    assert _texts(at.title) == ["Search"]
    assert at.sidebar.text_input(key="workspace").value == str(tmp_path)
    assert "No studies here yet" in " ".join(_texts(at.sidebar.caption))
    assert not at.sidebar.selectbox  # no study to choose yet
    dataset = at.selectbox(key="ds_choice")
    assert "digits" in dataset.options[0] and dataset.value == "digits"
    assert [o.split(" — ")[0] for o in at.selectbox(key="space_preset").options] == ["seed-cnn", "modular"]
    assert at.multiselect(key="objectives").value == ["accuracy", "latency_ms"]
    assert at.selectbox(key="sampler").value == "tpe" and "nsga2" in at.selectbox(key="sampler").options
    assert at.selectbox(key="fidelity").value == "train"
    assert at.text_input(key="study_name_digits-seed-cnn").value == "digits-seed-cnn"
    assert not at.button(key="start").disabled
    assert any("No search has run in this dashboard yet" in t for t in _texts(at.info))
    assert "10 classes" in " ".join(_texts(at.caption))  # the dataset preview summary


@pytest.mark.parametrize("page", ["results", "best_model", "analytics"])
def test_pages_on_an_empty_workspace_say_what_to_do(tmp_path: Path, page: str) -> None:
    at = _app(tmp_path, page)
    assert any("No studies in" in t and "Search" in t for t in _texts(at.info))
    assert not at.error


def test_unreadable_workspace_shows_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "optuna.db").write_bytes(b"garbage" * 1000)
    at = _app(tmp_path, "results")
    assert any("optuna.db" in t and "choose another workspace" in t for t in _texts(at.error))


# --- finished study -----------------------------------------------------------------------------------


def test_sidebar_lists_the_studies(tiny_study: Any) -> None:
    at = _app(tiny_study.workspace)
    study = at.sidebar.selectbox(key="study")
    assert study.value == "tiny" and study.options == ["tiny"]
    assert "**tiny** — 3 trials, digits, accuracy, latency_ms" in _texts(at.sidebar.caption)
    assert at.selectbox(key="study_choice").options == ["New study", "Resume tiny"]


def test_results_page(tiny_study: Any) -> None:
    at = _app(tiny_study.workspace, "results")
    assert _texts(at.title) == ["Results"]
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Complete"]) + int(metrics["Pruned"]) + int(metrics["Failed"]) == 3
    table = _frame(at, "number")
    assert list(table["number"]) == [0, 1, 2]
    assert {"state", "objective_accuracy", "objective_latency_ms", "reason", "mlflow_run_id", "duration_s"} <= set(table.columns)
    assert table["mlflow_run_id"].astype(bool).all()
    shown = next(df.proto for df in at.dataframe if "number" in df.value.columns)
    order = list(shown.column_order)
    assert "objective_accuracy" not in order and "val_accuracy" in order  # equal columns are shown once
    assert "datetime_start" not in order
    formats = json.loads(shown.columns)
    assert formats["params"]["type_config"]["format"] == "localized" and formats["flops"]["type_config"]["format"] == "localized"
    assert at.get("download_button")[0].label == "Download CSV"
    assert not at.error
    charts = len(at.get("plotly_chart"))  # the plot tabs are lazy: open each one in turn
    for tab in ("Hypervolume", "Parameter importance", "Parallel coordinates", "Timeline"):
        at.session_state["res_plots"] = tab
        at.run()
        job = dashboard.importance_job(dashboard.load_study(tiny_study.workspace, "tiny"))
        deadline = time.monotonic() + TIMEOUT
        while not job.done and time.monotonic() < deadline:  # importance is computed in the background
            time.sleep(0.1)
        at.run()
        charts += len(at.get("plotly_chart"))
    assert charts >= 6  # 2 histories, hypervolume, 2 importances, parallel, timeline
    at.session_state["res_plots"] = "Optimization history"
    at.run()

    at.toggle(key="res_asc").set_value(False).run()
    at.selectbox(key="res_sort").set_value("val_accuracy").run()
    table = _frame(at, "number")
    assert table["val_accuracy"].is_monotonic_decreasing
    assert at.sidebar.text_input(key="workspace").value == str(tiny_study.workspace)  # the shared sidebar survives reruns
    at.text_input(key="res_filter").set_value("no-such-architecture").run()
    assert _frame(at, "number").empty
    assert "0 of 3 trials shown." in _texts(at.caption)


def test_best_model_page(tiny_study: Any) -> None:
    study = dashboard.load_study(tiny_study.workspace, "tiny")
    _, picks = dashboard.pareto_frame(study)
    at = _app(tiny_study.workspace, "best_model")
    key = "bm_trial_tiny"
    assert at.selectbox(key=key).value == picks["best_accuracy"]
    assert f"Trial {picks['best_accuracy']}" in _texts(at.subheader)
    labels = [b.label for b in at.button]
    for text in ("Best accuracy", "Fastest within 1 point", "Knee / balanced", "Smallest"):
        assert any(label.startswith(text) for label in labels), labels
    metrics = {m.label: m.value for m in at.metric}
    config = dashboard.trial_config(study, picks["best_accuracy"])
    assert metrics["Parameters"] == f"{int(config.metrics['params']):,}"
    assert any("median of" in c for c in _texts(at.caption))  # how latency was measured
    assert metrics["Latency"] == dashboard.format_ms(config.metrics["latency_ms"]) and len(metrics["Latency"]) <= 9
    per_class = [c for c in at.get("plotly_chart") if "Per-class accuracy" in c.proto.spec]
    assert per_class and json.loads(per_class[0].proto.spec)["layout"]["yaxis"]["range"] == [0, 1]
    downloads = [d.label for d in at.get("download_button")]
    assert downloads[:2] == ["Config JSON", "TorchScript (.pt)"]
    assert "Weights (safetensors)" in downloads and "summary.md" in downloads
    assert ("ONNX" in downloads) == dashboard.onnx_available()
    snippet = [c.value for c in at.code if "load_config" in c.value]
    assert snippet and f"tiny_trial{picks['best_accuracy']}.json" in snippet[0]
    layers = _frame(at, "layer")
    assert int(layers[layers["layer"] == "total"]["params"].iloc[0]) == int(config.metrics["params"])
    assert at.get("graphviz_chart")

    _button(at, "Smallest").click().run()
    assert at.selectbox(key=key).value == picks["smallest"]
    other = next((n for n in dashboard.complete_trials(study) if n != picks["smallest"]), None)
    if other is not None:
        at.selectbox(key=key).set_value(other).run()
        assert f"Trial {other}" in _texts(at.subheader)
    assert not at.exception and not at.error


def test_best_model_retrain_longer(tiny_study: Any) -> None:
    at = _app(tiny_study.workspace, "best_model")
    at.number_input(key="rt_epochs").set_value(1)
    at.selectbox(key="rt_device").set_value("cpu")
    at.button(key="rt_start").click().run()
    assert not at.exception and not at.error
    number = at.selectbox(key="bm_trial_tiny").value
    job = dashboard.get_retrain(tiny_study.workspace, "tiny", number)
    assert job is not None
    job._thread.join(120)  # type: ignore[union-attr]
    at.run()
    assert job.status == "finished", job.error
    labels = {m.label for m in at.metric}
    assert {"Epochs trained", "Wall time"} <= labels
    assert "Retrained weights (safetensors)" in [d.label for d in at.get("download_button")]


def test_analytics_page(tiny_study: Any) -> None:
    at = _app(tiny_study.workspace, "analytics")
    heads = _texts(at.subheader)
    assert heads == ["Accuracy vs cost", "Top 5 side by side", "Block usage in good vs bad trials", "Accuracy vs epochs",
                     "Compare two studies", "Proxy score vs final accuracy", "Ranking quality of this study's fidelity", "Screening",
                     "Budget split"]
    top = at.dataframe[0].value
    assert list(top.columns)[0].startswith("trial ") and "val_accuracy" in top.index
    infos = " ".join(_texts(at.info))
    assert "No proxy data yet" in infos and "Only one study" in infos
    assert "Needs at least 5 complete trials" in infos and "ran without --timeout" in infos  # 3 trials, no timeout
    assert len(at.get("plotly_chart")) >= 4
    at.segmented_control(key="an_cost").set_value("params").run()
    assert not at.exception and not at.error


def test_search_page_resume_uses_the_studys_objectives(tiny_study: Any) -> None:
    at = _app(tiny_study.workspace)
    at.selectbox(key="study_choice").set_value("tiny").run()
    assert any("Objectives of this study: accuracy (maximize), latency_ms (minimize)" in c for c in _texts(at.caption))
    assert "objectives" not in [m.key for m in at.multiselect]  # objectives are fixed by the study


def test_search_space_form_is_generated_and_validated(tmp_path: Path) -> None:
    at = _app(tmp_path)
    from nas_core.space import PRESETS

    space = PRESETS["seed-cnn"]
    for p in space.params:  # one generated input (or a low/high pair) per parameter
        if p.type in ("int", "float"):
            assert at.number_input(key=f"sp_seed-cnn_{p.name}_low").value == p.low
        else:
            assert at.multiselect(key=f"sp_seed-cnn_{p.name}").value == ([False, True] if p.type == "bool" else list(p.choices))
    at.number_input(key="sp_seed-cnn_n_conv_high").set_value(2).run()
    at.multiselect(key="sp_seed-cnn_activation").set_value(["relu", "gelu"]).run()
    assert "Edited: activation, n_conv (the rest as in the preset)." in _texts(at.caption)
    at.number_input(key="sp_seed-cnn_n_conv_low").set_value(4).run()
    assert any("low <= high" in e for e in _texts(at.error))
    ranges = next(e for e in at.expander if e.label.startswith("Edit ranges"))
    assert any("n_conv" in e and "low <= high" in e for e in _texts(ranges.error))  # inside the form, under its field
    assert at.button(key="start").disabled
    at.selectbox(key="space_preset").set_value("modular").run()
    assert at.number_input(key="sp_modular_n_stages_low").value == 1
    assert not at.button(key="start").disabled


def _npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x=rng.integers(0, 255, (30, 8, 8), dtype=np.uint8), y=np.repeat([0, 1, 2], 10))
    return buf.getvalue()


def test_upload_is_validated_with_a_preview(tmp_path: Path) -> None:
    at = _app(tmp_path)
    at.selectbox(key="ds_choice").set_value("__upload__").run()
    assert at.get("file_uploader")
    at.get("file_uploader")[0].set_value(("blobs.npz", _npz_bytes(), "application/octet-stream"))
    at.run()
    assert not at.exception and not at.error
    assert any("30 samples, 3 classes, input 1×8×8" in c for c in _texts(at.caption))
    assert at.get("image")  # the preview grid
    assert at.text_input(key="study_name_blobs-seed-cnn").value == "blobs-seed-cnn"
    assert list((tmp_path / "uploads").rglob("blobs.npz"))

    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("only_one_class/readme.txt", "no images here")
    at.get("file_uploader")[0].set_value(("bad.zip", bad.getvalue(), "application/zip"))
    at.run()
    assert not at.exception
    assert at.error and at.button(key="start").disabled
    assert not list((tmp_path / "uploads").rglob("bad.zip"))  # a rejected upload is not kept
    assert all(str(tmp_path) not in e and "uploads/" not in e for e in _texts(at.error)), _texts(at.error)
    assert any("bad.zip" in e for e in _texts(at.error))


def test_unavailable_dataset_explains_why(tmp_path: Path) -> None:
    at = _app(tmp_path)
    from nas_core.data import list_datasets

    missing = [i for i in list_datasets() if not i.available]
    if not missing:
        pytest.skip("every built-in dataset is available on this machine")
    at.selectbox(key="ds_choice").set_value(missing[0].name).run()
    assert any(missing[0].reason in w for w in _texts(at.warning))
    assert at.button(key="start").disabled


def test_start_refuses_a_second_start_and_stop_keeps_the_study(tmp_path: Path) -> None:
    import optuna

    from nas_core.workspace import default_storage

    registry = get_registry()
    # Another study already there, so the sidebar's study chooser exists when Start selects the new one.
    optuna.create_study(study_name="other", storage=default_storage(tmp_path), directions=["maximize", "minimize"])
    at = _app(tmp_path)
    assert at.sidebar.selectbox(key="study").value == "other"
    try:
        at.number_input(key="trials").set_value(50)
        at.number_input(key="epochs").set_value(50)
        at.number_input(key="train_samples").set_value(200)
        at.text_input(key="study_name_digits-seed-cnn").set_value("apptest")
        at.button(key="start").click().run()
        assert not at.exception and not at.error, _texts(at.error)
        runner = registry.get(tmp_path, "apptest")
        assert runner is not None and runner.is_alive()
        assert any("Started **apptest**" in s for s in _texts(at.success))
        assert "apptest: running" in _texts(at.subheader)  # the live panel now leads the page
        assert at.sidebar.selectbox(key="study").value == "apptest"
        assert at.get("progress") and len(at.get("progress")) >= 2
        assert any("**apptest** —" in c and "running:" in c and "/50 trials this run" in c for c in _texts(at.sidebar.caption))

        at.button(key="start").click().run()  # the same study again, while it runs
        assert any("already running" in e for e in _texts(at.error))
        assert registry.get(tmp_path, "apptest") is runner

        # A second session (another tab, or a refresh) sees the same running search.
        other = _app(tmp_path)
        assert "apptest: running" in _texts(other.subheader)

        deadline = time.time() + 60
        while runner.snapshot().current_trial is None and time.time() < deadline:
            time.sleep(0.1)
        at.run()
        at.button(key="stop").click().run()
        assert not runner.is_alive()
        # how fast a stop is heard is a benchmark's figure (benchmarks/stop.py times the CLI's), not a timed assert: under load this page's
        # stop took 2.4 s here; what the page must do is end the search early and say how long it took
        assert any(f"Stopped **apptest** in {at.session_state['_stop_seconds']:.2f} s" in t for t in _texts(at.info))
        assert runner.snapshot().status == "stopped" and runner.snapshot().trials_done < 50
        assert "apptest" in [s["name"] for s in dashboard.studies(tmp_path)]
    finally:
        for r in registry.running(tmp_path):
            r.stop(wait=30)


def test_cached_fidelity_shows_the_module_library(tmp_path: Path) -> None:
    from nas_core.library import build_library

    at = _app(tmp_path)
    at.selectbox(key="fidelity").set_value("cached").run()
    assert any("No library in this workspace yet" in t for t in _texts(at.info))
    build_library(dataset="digits", workspace=tmp_path, minutes=0.02, train_samples=300, donors=("conv-a",), min_steps=10)
    at.run()
    table = at.dataframe[-1].value
    assert len(table) > 0 and {"id", "kind", "params", "sha256", "donor_accuracy"} <= set(table.columns)
    assert set(table["status"]) == {"ok"}


def test_search_page_sets_the_fidelity_options(tmp_path: Path) -> None:
    """The second-phase options the CLI sets with --fidelity-option reach the search started from the page."""
    import json

    at = _app(tmp_path)
    assert not [s for s in at.selectbox if s.key in ("cached_train", "zc_proxy")]  # train's one option is its screen (test_screening)
    at.selectbox(key="fidelity").set_value("cached").run()
    assert at.selectbox(key="cached_train").value == "suffix" and at.number_input(key="finetune_top_k").value == 2
    at.selectbox(key="fidelity").set_value("zero-cost").run()
    at.selectbox(key="space_preset").set_value("modular").run()
    at.selectbox(key="zc_proxy").set_value("synflow")
    at.number_input(key="finetune_top_k").set_value(1)
    runner = start_search_from_page(at, tmp_path, trials=2, epochs=1, train_samples=200)
    assert runner.config.fidelity == "zero-cost" and runner.config.fidelity_options == {"proxy": "synflow", "finetune_top_k": 1}
    best = json.loads(Path(runner.result.best_config).read_text())
    assert best["metrics"]["proxy"] == "synflow" and best["metrics"]["final_test_accuracy"] is not None
    # The pages never call the proxy score an accuracy: the objective column is named after the proxy, and
    # "val acc" holds trained (finalist) accuracies only.
    at = _app(tmp_path, "results")
    assert any("ranked by the **synflow score (zero-cost proxy)**" in i for i in _texts(at.info))
    shown = next(df for df in at.dataframe if "number" in df.value.columns)
    labels = json.loads(shown.proto.columns)
    assert labels["objective_accuracy"]["label"] == "objective: synflow score (zero-cost proxy)"
    table = shown.value
    assert set(table.loc[table["val_accuracy"].notna(), "accuracy_source"]) == {"trained (finalist)"}
    assert table["val_accuracy"].notna().sum() == 1  # finetune_top_k=1
    at = _app(tmp_path, "analytics")
    assert any("Accuracy here is trained accuracy: the 1 finalists" in c for c in _texts(at.caption))


def test_search_page_shows_the_budget_plan(tmp_path: Path) -> None:
    at = _app(tmp_path)
    assert _frame(at, "phase")["budget"].tolist() == ["no limit", "-", "-"]
    at.number_input(key="timeout").set_value(100).run()
    plan = _frame(at, "phase")
    assert dict(zip(plan["phase"], plan["budget"])) == {"search (trials)": "60 s (60%)", "finalists (fine-tune)": "-",
                                                         "final training of the best": "40 s (40%)"}
    assert any("refit" in t or "trained again" in t for t in _texts(at.caption))
    at.selectbox(key="fidelity").set_value("cached").run()
    plan = _frame(at, "phase")
    assert plan["budget"].tolist() == ["80 s (80%)", "20 s (20%)", "-"]


def test_default_study_name_is_never_an_existing_study(tmp_path: Path) -> None:
    import optuna

    from nas_core.workspace import default_storage

    optuna.create_study(study_name="digits-seed-cnn", storage=default_storage(tmp_path), directions=["maximize", "minimize"])
    at = _app(tmp_path)
    name = at.text_input(key="study_name_digits-seed-cnn")
    assert name.value == "digits-seed-cnn-2"  # Start makes a new study unless Resume is chosen
    assert not at.warning
    name.set_value("digits-seed-cnn").run()
    assert any("exists: Start would add trials to it" in w for w in _texts(at.warning))


def test_resumed_study_live_panel_shows_earlier_trials(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dashboard import fill_workspace  # type: ignore[import-not-found]

    fill_workspace(tmp_path, studies=1, trials=4)
    at = _app(tmp_path)
    at.selectbox(key="study_choice").set_value("bench-0").run()
    # seed 2: the resumed study's sampler draws a 170K conv net; seed 0 drew a 10.6M residual net that took ~39 s to train
    at.number_input(key="seed").set_value(2)
    runner = start_search_from_page(at, tmp_path, trials=1, epochs=1, train_samples=100, timeout=120)
    assert runner is get_registry().get(tmp_path, "bench-0")
    at.run()
    assert any("earlier trials of this study are drawn with this run's" in c for c in _texts(at.caption)), _texts(at.caption)
    earlier = dashboard.study_points(tmp_path, "bench-0")
    assert len(earlier) == 5 and {p["number"] for p in earlier} == set(range(5))


def test_the_live_panel_shows_the_plan_made_at_run_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one training is planned after the designs are timed: while it runs, the Search page says so (the Budget plan
    above the form is the one made before the run) and counts its one trial, not --trials."""
    from nas_core.search import SearchConfig
    from nas_core.training import loop

    monkeypatch.setattr(loop, "time_epoch", lambda *args, **kwargs: 0.05)  # the plan: one training the deadline ends
    runner = get_registry().start(SearchConfig(dataset="digits", trials=5, epochs=500, patience=2, train_samples=300, seed=0,
                                               device="cpu", workspace=str(tmp_path), study="planned", tracking=False, timeout=60))
    try:
        deadline = time.monotonic() + 60
        while not runner.snapshot(recent=0).plan_note and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.snapshot(recent=0).plan_note.startswith("One training")
        at = _app(tmp_path, "search")
        assert runner.is_alive()
        assert any(t.startswith("One training") for t in _texts(at.info)), _texts(at.info)
        assert "0 / 1" in " ".join(str(m.value) for m in at.metric)
    finally:
        runner.stop(wait=30.0)
