"""The screen before each full training (nas_core.training.screening): its rule, and a real search that uses it."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from conftest import mlflow_runs, open_app, start_search_from_page
from optuna.trial import TrialState

from nas_core.ranking import ranking_quality
from nas_core.schema.record import trial_record
from nas_core.search import SearchConfig, run_search
from nas_core.training.screening import SCREEN_ATTR, SCREEN_STARTUP, decide, mean_rank, screen_recipe

TINY = dict(dataset="digits", epochs=3, patience=3, train_samples=300, val_samples=150, seed=0, device="cpu")


def _pool(rows: list[tuple[float, float]]) -> list[dict[str, Any]]:
    return [{"number": i, "val_accuracy": acc, "flops": flops} for i, (acc, flops) in enumerate(rows)]


def test_the_mean_rank_of_screen_accuracy_and_flops_decides_and_the_top_third_goes_on() -> None:
    # six candidates; the score is the mean of the accuracy rank and the FLOPs rank (larger FLOPs rank higher)
    pool = _pool([(0.90, 8e6), (0.60, 1e6), (0.85, 4e6), (0.70, 2e6), (0.95, 9e6), (0.50, 3e6)])
    assert mean_rank([r["val_accuracy"] for r in pool], [r["flops"] for r in pool]) == [5.0, 1.5, 4.0, 2.5, 6.0, 2.0]
    decisions = {r["number"]: decide(pool, me=r["number"], cost_objective=False) for r in pool}
    assert {n for n, d in decisions.items() if d.promoted} == {4, 0}  # ceil(6 / 3) = 2 go on
    assert decisions[2].position == 3 and decisions[2].keep == 2 and "screened out" in decisions[2].reason
    # with a cost objective, a candidate nobody beats on both accuracy and FLOPs goes on too: the cheapest one here
    cost = {r["number"] for r in pool if decide(pool, me=r["number"], cost_objective=True).promoted}
    assert cost == {4, 0, 2, 3, 1}  # 5 (0.50 at 3 MFLOPs) is beaten by 3 (0.70 at 2 MFLOPs)


def test_a_pool_too_small_to_rank_promotes_everyone() -> None:
    pool = _pool([(0.9, 5e6), (0.1, 9e6)][: SCREEN_STARTUP - 1])
    assert all(decide(pool, me=r["number"], cost_objective=False).promoted for r in pool)
    worst = _pool([(0.9, 5e6), (0.8, 6e6), (0.1, 1e6)])  # at SCREEN_STARTUP it ranks
    assert not decide(worst, me=2, cost_objective=False).promoted
    nan = _pool([(0.9, 5e6), (0.8, 6e6), (0.7, 7e6), (math.nan, 1e6)])  # no number to rank by: it trains, and says why
    assert decide(nan, me=3, cost_objective=False).promoted and "no finite" in decide(nan, me=3, cost_objective=False).reason


def test_the_screen_recipe_is_the_candidates_own_compressed_into_one_epoch() -> None:
    from nas_core.schema.config import TrainingRecipe

    recipe = TrainingRecipe(epochs=20, patience=5, lr=3e-3, schedule="onecycle", ema_decay=0.99)
    one = screen_recipe(recipe)
    assert (one.epochs, one.patience) == (1, 2) and one.to_dict() == {**recipe.to_dict(), "epochs": 1, "patience": 2}


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory) -> tuple[SearchConfig, Any, Any]:
    ws = tmp_path_factory.mktemp("screen")
    config = SearchConfig(trials=9, workspace=str(ws), study="screened", objectives=("accuracy",), **TINY)
    result = run_search(config)
    study = optuna.load_study(study_name="screened", storage=f"sqlite:///{ws / 'optuna.db'}")
    return config, result, study


def test_a_search_screens_every_candidate_and_trains_only_the_promoted(screened) -> None:  # type: ignore[no-untyped-def]
    _, result, study = screened
    trials = study.get_trials()
    twins = [t for t in trials if "duplicate_of" in (trial_record(t).get("screen") or {})]  # repeats of a screened-out one
    assert len(trials) == 9 and all(SCREEN_ATTR in t.user_attrs for t in trials if t not in twins)
    out = [t for t in trials if t.state == TrialState.PRUNED and t not in twins]
    assert out, "nine candidates and a top third: some must be screened out"
    for t in out:
        row = t.user_attrs[SCREEN_ATTR]
        assert not row["promoted"] and row["position"] > row["keep"]
        assert trial_record(t)["reason"].startswith("screened out: 1-epoch val accuracy")
        assert "history" not in trial_record(t) or not trial_record(t)["history"]  # no full training ran
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == result.n_complete == 9 - len(out) - len(twins)
    for t in complete:
        record = trial_record(t)
        assert record["screen"]["promoted"] and record["screen"] == t.user_attrs[SCREEN_ATTR]
        assert len(record["history"]) == 3  # the full training ran its epochs after the screen
    known = [t for t in trials if t.user_attrs.get("known_good")]
    assert known and all(t.state == TrialState.COMPLETE and "known-good" in t.user_attrs[SCREEN_ATTR]["reason"] for t in known)
    # the screen's FLOPs are the trained model's
    assert all(t.user_attrs[SCREEN_ATTR]["flops"] == trial_record(t)["metrics"]["flops"] for t in complete)


def test_screened_out_trials_log_their_screen_to_mlflow_and_summary_says_how_many(screened) -> None:  # type: ignore[no-untyped-def]
    config, _, study = screened
    _, _, runs = mlflow_runs(Path(config.workspace) / "mlflow.db", "screened")
    pruned = [r for r in runs if r.data.tags.get("reason", "").startswith("screened out")]
    assert pruned and all(0 <= r.data.metrics["screen_val_accuracy"] <= 1 and r.data.metrics["screen_flops"] > 0 for r in pruned)
    summary = (Path(config.workspace) / "screened" / "summary.md").read_text()
    n_out = len([t for t in study.get_trials() if t.state == TrialState.PRUNED])
    assert "## Screening" in summary and f"and {n_out} screened out" in summary


def test_screen_off_trains_every_candidate_in_full(tmp_path: Path) -> None:
    result = run_search(SearchConfig(trials=4, workspace=str(tmp_path), study="full", objectives=("accuracy",), tracking=False,
                                     fidelity_options={"screen": "off"}, **TINY))
    study = optuna.load_study(study_name="full", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert result.n_complete == 4 and not any(SCREEN_ATTR in t.user_attrs for t in study.get_trials())
    assert "## Screening" not in (tmp_path / "full" / "summary.md").read_text()


def test_the_study_checks_how_well_its_screen_ranked() -> None:
    def trial(n: int, screen_acc: float, flops: float, final: float) -> Any:
        return SimpleNamespace(number=n, state=SimpleNamespace(name="COMPLETE"),
                               user_attrs={"metrics": {"val_accuracy": final}, "screen": {"val_accuracy": screen_acc, "flops": flops}})

    trials = [trial(i, 0.5 + 0.03 * i, 1e6 * (1 + i), 0.9 + 0.005 * i) for i in range(8)]
    (check,) = [c for c in ranking_quality(trials) if c.signal.startswith("screen score")]
    assert check.n == 8 and check.kendall == pytest.approx(1.0)
    reversed_ = [trial(i, 0.5 + 0.03 * i, 1e6 * (1 + i), 0.95 - 0.005 * i) for i in range(8)]
    (check,) = [c for c in ranking_quality(reversed_) if c.signal.startswith("screen score")]
    assert check.kendall == pytest.approx(-1.0) and not math.isnan(check.ci95[0])


def test_the_analytics_view_shows_what_became_of_each_screened_candidate(screened) -> None:  # type: ignore[no-untyped-def]
    from nas_core import views

    config, _, study = screened
    frame = views.screening_frame(views.load_study(config.workspace, "screened"))
    assert frame is not None and set(frame["trial"]) == {t.number for t in study.get_trials() if SCREEN_ATTR in t.user_attrs}
    outcome = dict(zip(frame["trial"], frame["outcome"]))
    for t in study.get_trials():
        if t.number in outcome:
            want = "known-good" if t.user_attrs.get("known_good") else "trained in full" if t.state == TrialState.COMPLETE else "screened out"
            assert outcome[t.number] == want
    assert frame.loc[frame["outcome"] == "screened out", "final val acc"].isna().all()
    assert views.screening_figure(frame).data  # one trace per outcome


def test_the_analytics_page_has_a_screening_section(screened) -> None:  # type: ignore[no-untyped-def]
    config, _, study = screened
    at = open_app(config.workspace, "analytics")
    assert "Screening" in [h.value for h in at.subheader]
    metrics = {m.label: m.value for m in at.metric}
    n_out = len([t for t in study.get_trials() if t.state == TrialState.PRUNED and SCREEN_ATTR in t.user_attrs])
    assert metrics["Screened"] == "9" and metrics["Screened out"] == str(n_out)


def test_the_search_page_turns_the_screen_off(tmp_path: Path) -> None:
    """The train fidelity's option is a select box on the Search page (on by default); off reaches the search it starts."""
    from nas_core.views.studies import load_study

    at = open_app(tmp_path)
    assert at.selectbox(key="screen").value == "on"
    at.selectbox(key="screen").set_value("off")
    runner = start_search_from_page(at, tmp_path, trials=3, epochs=1, train_samples=200)
    assert runner.config.fidelity == "train" and runner.config.fidelity_options == {"screen": "off"}
    study = load_study(tmp_path, runner.config.study_name)
    assert len(study.trials) == 3 and not any(SCREEN_ATTR in t.user_attrs for t in study.trials)
