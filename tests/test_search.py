"""A real tiny search on digits with SQLite + MLflow in tmp_path: trials recorded, outputs written, resume, dedup, failures."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import mlflow_runs
from optuna.trial import TrialState

from nas_core.errors import ConfigError
from nas_core.evaluate import FIDELITIES
from nas_core.events import EpochProgress, StudyFinished, TrialFinished, TrialStarted
from nas_core.export import build_model, load_config
from nas_core.schema.record import trial_record
from nas_core.search import SearchConfig, run_search

PINNED_LATER = {"conv_block": {"choices": ["conv"]}, "pool_every": {"choices": [1]}, "weight_decay": {"choices": [0.0]},
                "schedule": {"choices": ["cosine"]}, "augmentation": {"choices": ["none"]}, "label_smoothing": {"choices": [0.0]},
                "ema_decay": {"choices": [0.0]}}

TINY = dict(dataset="digits", epochs=2, patience=2, train_samples=300, val_samples=150, seed=0, device="cpu")


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[SearchConfig, object, list]:
    ws = tmp_path_factory.mktemp("ws")
    events: list = []
    config = SearchConfig(trials=3, workspace=str(ws), study="tiny", **TINY)
    result = run_search(config, emit=events.append)
    return config, result, events


def test_trials_are_recorded_in_optuna_storage(tiny_study) -> None:  # type: ignore[no-untyped-def]
    config, result, _ = tiny_study
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{Path(config.workspace) / 'optuna.db'}")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3 == result.n_complete
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for t in complete:
        m = trial_record(t)["metrics"]
        assert t.values == [m["val_accuracy"], m["latency_ms"]]
        assert 0 <= m["test_accuracy"] <= 1 and m["params"] > 0 and m["flops"] > 0
        assert len(trial_record(t)["history"]) >= 1 and trial_record(t)["mlflow_run_id"]


def test_mlflow_has_a_parent_run_and_one_nested_run_per_trial(tiny_study) -> None:  # type: ignore[no-untyped-def]
    config, _, _ = tiny_study
    client, parents, trials = mlflow_runs(Path(config.workspace) / "mlflow.db", "tiny")
    assert len(parents) == 1 and len(trials) == 3
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials)
    # every run closed before the search returned
    assert all(r.info.status == "FINISHED" for r in trials) and parents[0].info.status == "FINISHED"
    run = trials[0]
    assert "val_accuracy" in run.data.metrics and "lr" in run.data.params
    assert len(client.get_metric_history(run.info.run_id, "epoch_val_accuracy")) >= 1
    artifact_dir = Path(run.info.artifact_uri.replace("file://", ""))
    assert json.loads((artifact_dir / "config.json").read_text())["schema_version"] == 1
    assert str(artifact_dir).startswith(str(Path(config.workspace).resolve()))  # nothing written outside the workspace


def test_outputs_rebuild_the_same_network(tiny_study) -> None:  # type: ignore[no-untyped-def]
    config, result, _ = tiny_study
    out = Path(config.workspace) / "tiny"
    assert Path(result.best_config) == out / "best_config.json"
    cfg = load_config(result.best_config)
    model = build_model(cfg, weights=out / "best_weights.safetensors")
    assert sum(p.numel() for p in model.parameters()) == cfg.metrics["params"]
    assert {"test_accuracy", "params", "flops", "latency_ms", "latency_measurement"} <= set(cfg.metrics)
    assert cfg.provenance["study"] == "tiny" and "torch" in cfg.provenance["packages"]
    assert (out / "pareto.csv").read_text().startswith("trial,summary,val_accuracy")
    assert "## Pareto front" in (out / "summary.md").read_text()
    assert list((out / "pareto").glob("trial_*.json"))
    # best = highest validation accuracy on the front
    fronts = [json.loads(p.read_text()) for p in (out / "pareto").glob("*.json")]
    assert cfg.metrics["val_accuracy"] == max(f["metrics"]["val_accuracy"] for f in fronts)


def test_events_stream_in_order(tiny_study) -> None:  # type: ignore[no-untyped-def]
    _, _, events = tiny_study
    kinds = [type(e) for e in events]
    assert kinds[0] is TrialStarted and kinds[-1] is StudyFinished
    assert kinds.count(TrialStarted) == 3 and kinds.count(TrialFinished) == 3 and EpochProgress in kinds
    assert all(a.timestamp <= b.timestamp for a, b in zip(events, events[1:]))


def test_same_study_name_resumes(tiny_study) -> None:  # type: ignore[no-untyped-def]
    config, _, _ = tiny_study
    from dataclasses import replace

    result = run_search(replace(config, trials=2))
    study = optuna.load_study(study_name="tiny", storage=config.storage_url())
    assert len(study.trials) == 5 and result.n_complete + result.n_pruned == 2
    for t in study.trials[3:]:  # the resumed run's two: each screened against the first run's three, then trained or screened out
        assert t.state == TrialState.COMPLETE or trial_record(t)["reason"].startswith("screened out")
        assert trial_record(t)["screen"]["pool"] >= 4
    with pytest.raises(ConfigError, match="exists with objectives"):
        run_search(replace(config, trials=1, objectives=("accuracy", "params")))
    assert len(optuna.load_study(study_name="tiny", storage=config.storage_url()).trials) == 5


def _one_point_space(tmp_path: Path) -> str:
    path = tmp_path / "one.json"
    fixed = {"n_conv": {"low": 1, "high": 1}, "conv_filters": {"choices": [8]}, "conv_kernel": {"choices": [3]},
             "activation": {"choices": ["relu"]}, "pooling": {"type": "categorical", "choices": [True]},
             "n_fc": {"low": 1, "high": 1}, "fc_units": {"choices": [16]}, "dropout": {"low": 0.0, "high": 0.0},
             "lr": {"low": 0.01, "high": 0.01, "log": True}, "optimizer": {"choices": ["adam"]}, "batch_size": {"choices": [64]},
             # the recipe and block parameters the preset gained later, pinned too so the space stays one point
             **PINNED_LATER}
    path.write_text(json.dumps({"base": "seed-cnn", "params": fixed}))
    return str(path)


def test_identical_candidates_are_not_trained_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = FIDELITIES.get("train")
    monkeypatch.setitem(FIDELITIES._entries, "train", lambda ctx: calls.append(1) or real(ctx))
    result = run_search(SearchConfig(trials=3, workspace=str(tmp_path), study="dup", space=_one_point_space(tmp_path),
                                     sampler="random", tracking=False, **TINY))
    study = optuna.load_study(study_name="dup", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(calls) == 1 and result.n_complete == 3
    assert [trial_record(t).get("duplicate_of") for t in study.trials] == [None, 0, 0]
    assert study.trials[1].values == study.trials[0].values


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = FIDELITIES.get("train")
    state = {"n": 0}

    def flaky(ctx):  # type: ignore[no-untyped-def]
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(ctx)

    monkeypatch.setitem(FIDELITIES._entries, "train", flaky)
    result = run_search(SearchConfig(trials=2, workspace=str(tmp_path), study="flaky", tracking=False, **TINY))
    study = optuna.load_study(study_name="flaky", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "out of memory" in trial_record(study.trials[0])["reason"]
    assert result.n_failed == 1 and result.best_config


def test_a_diverging_trial_is_a_fail_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "hot.json"
    path.write_text(json.dumps({"base": "seed-cnn", "params": {"lr": {"low": 1e6, "high": 1e6, "log": True}, "optimizer": {"choices": ["sgd"]}}}))
    with pytest.raises(ConfigError, match="lr must be in"):
        run_search(SearchConfig(trials=1, workspace=str(tmp_path), study="hot", space=str(path), tracking=False, **TINY))
    assert not (tmp_path / "optuna.db").exists()  # refused before any storage was touched


def test_broken_mlflow_only_warns(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match="MLflow tracking disabled"):
        result = run_search(SearchConfig(trials=1, workspace=str(tmp_path), study="nomlflow", tracking_uri="bogus-scheme://nowhere", **TINY))
    assert result.n_complete == 1 and result.warnings


def test_single_objective_with_median_pruner(tmp_path: Path) -> None:
    result = run_search(SearchConfig(trials=3, workspace=str(tmp_path), study="so", objectives=("accuracy",), pruner="median",
                                     tracking=False, **TINY))
    assert result.n_complete + result.n_pruned == 3 and result.best_config
    study = optuna.load_study(study_name="so", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.direction.name == "MAXIMIZE"
    assert study.trials[0].intermediate_values  # per-epoch values reported for the pruner


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "nsga3", "random", "gp", "grid"])
def test_every_sampler_runs_a_real_search(tmp_path: Path, sampler: str) -> None:
    space = "seed-cnn"
    if sampler == "grid":  # a two-point grid: pooling on/off; the third trial finds it exhausted
        path = Path(_one_point_space(tmp_path))
        data = json.loads(path.read_text())
        del data["params"]["pooling"]
        path.write_text(json.dumps(data))
        space = str(path)
    result = run_search(SearchConfig(trials=3 if sampler == "grid" else 2, workspace=str(tmp_path), study=f"s-{sampler}",
                                     sampler=sampler, space=space, tracking=False, **{**TINY, "epochs": 1}))
    assert result.n_complete == 2 and result.best_config
    if sampler == "grid":
        assert result.reason == "grid exhausted"


def test_a_nan_loss_is_a_fail_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import torch

    real = FIDELITIES.get("train")

    def poisoned(ctx):  # type: ignore[no-untyped-def]
        ctx.data = dataclasses.replace(ctx.data, x_train=torch.full_like(ctx.data.x_train, float("nan")))
        return real(ctx)

    monkeypatch.setitem(FIDELITIES._entries, "train", poisoned)
    result = run_search(SearchConfig(trials=1, workspace=str(tmp_path), study="nan", tracking=False, **TINY))
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert result.n_failed == 1 and result.best_config is None and result.reason == "no trials completed"
    assert "diverged" in trial_record(study.trials[0])["reason"]


def test_train_model_hands_back_the_restored_epochs_validation_predictions() -> None:
    import torch

    from nas_core.assemble import assemble
    from nas_core.data import load_dataset
    from nas_core.evaluate import predict, set_seed, train_model
    from nas_core.genotype import Architecture, BlockSpec, HeadSpec, TrainingRecipe

    data = load_dataset("digits", seed=0, train_samples=300)
    set_seed(0)
    model = assemble(Architecture(tuple(data.input_shape), data.num_classes, ((BlockSpec("conv", {"out_channels": 8}),),), HeadSpec()))
    got: list[torch.Tensor] = []
    history = train_model(model, data, TrainingRecipe(epochs=4, patience=10, lr=3e-2), device=torch.device("cpu"), val_predictions=got)
    assert len(got) == 1 and len(got[0]) == len(data.y_val)
    assert (got[0].numpy() == predict(model, data.x_val, torch.device("cpu"))).all()  # the restored weights' predictions
    best = max(row["val_accuracy"] for row in history)
    assert float((got[0] == data.y_val).float().mean()) == pytest.approx(best)
