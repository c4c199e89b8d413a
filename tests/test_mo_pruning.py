"""Tests for nas_core.mo_pruning: rungs, ranking, and pruning that provably removes only dominated trials."""

from __future__ import annotations

import random

import optuna
import pytest

from nas_core.mo_pruning import MOSuccessiveHalving, rank_at_rung, rung_epochs
from nas_core.pareto import dominates, to_minimize
from nas_core.schema.record import trial_record

optuna.logging.set_verbosity(optuna.logging.WARNING)
DIRS = ["maximize", "minimize"]


def test_rungs() -> None:
    assert rung_epochs(20, eta=3) == [1, 3, 9]
    assert rung_epochs(10, eta=2, min_resource=2) == [2, 4, 8]
    assert rung_epochs(1) == []


def test_rank_puts_the_front_first_and_orders_it_by_hypervolume_contribution() -> None:
    pts = [[0.9, 10.0], [0.5, 1.0], [0.6, 20.0], [0.85, 2.0], [0.4, 30.0]]
    order = rank_at_rung(pts, DIRS)
    assert set(order[:3]) == {0, 1, 3}  # non-dominated first
    assert order[-1] == 4  # dominated by everything


@pytest.mark.parametrize("asynchronous", [True, False], ids=["asha", "sh"])
def test_pruned_trials_are_dominated_at_their_rung(asynchronous: bool) -> None:
    rng = random.Random(0)
    study = optuna.create_study(directions=DIRS)
    pruner = MOSuccessiveHalving(epochs=20, eta=3, asynchronous=asynchronous)
    pruned = kept = 0
    for _ in range(40):
        trial = study.ask()
        params = float(rng.randint(1_000, 100_000))
        acc = rng.uniform(0.1, 0.5)
        try:
            for epoch in range(1, 21):
                acc = min(1.0, acc + rng.uniform(0.0, 0.05))
                pruner.check(study, trial, epoch, {"val_accuracy": acc, "params": params}, objectives=("accuracy", "params"))
        except optuna.TrialPruned as exc:
            pruned += 1
            rung = next(e for e in reversed(pruner.rungs) if f"mo_rung_{e}" in trial.user_attrs)
            key = f"mo_rung_{rung}"
            mine = to_minimize([trial.user_attrs[key]], DIRS)[0]
            earlier = [t.user_attrs[key] for t in study.get_trials(deepcopy=False) if t.number != trial.number and key in t.user_attrs]
            assert any(dominates(to_minimize([v], DIRS)[0], mine) for v in earlier), f"trial {trial.number} pruned but not dominated"
            assert "dominated by trial(s)" in str(exc)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        kept += 1
        study.tell(trial, [acc, params])
    assert pruned > 0 and kept > 0
    assert pruned > kept if asynchronous else True


def test_cost_objectives_come_from_the_architecture_before_training() -> None:
    from nas_core.genotype import Architecture, BlockSpec

    arch = Architecture((1, 8, 8), 10, ((BlockSpec("conv", {"out_channels": 8}),),))
    study = optuna.create_study(directions=DIRS)
    trial = study.ask()
    pruner = MOSuccessiveHalving(epochs=9)
    pruner.check(study, trial, 1, {"val_accuracy": 0.5}, objectives=("accuracy", "params"), arch=arch)
    assert trial.user_attrs["mo_rung_1"][1] == trial.user_attrs["mo_costs"]["params"] > 0


def test_search_with_asha_prunes_a_multi_objective_study(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nas_core.search import SearchConfig, open_study, run_search

    cfg = SearchConfig(dataset="digits", trials=8, epochs=4, workspace=str(tmp_path), objectives=("accuracy", "params"),
                       pruner="asha", tracking=False, train_samples=150, val_samples=60, study="asha", sampler="random",
                       space_data={"base": "seed-cnn", "params": {"n_conv": {"high": 2}, "conv_filters": {"choices": [8, 16]},
                                                                  "n_fc": {"high": 1}}})
    result = run_search(cfg)
    assert result.n_complete + result.n_pruned == 8 and result.n_complete >= 1
    study = open_study(cfg, create=False)
    for t in study.trials:
        if trial_record(t).get("reason", "").startswith("screened out"):  # the screen (training.screening) ran before any rung
            continue
        assert "mo_rung_1" in t.user_attrs
        if t.state == optuna.trial.TrialState.PRUNED:
            assert "ASHA" in trial_record(t)["reason"]


def test_every_cost_objective_has_a_measurement_and_asha_is_a_registered_pruner() -> None:
    from nas_core.schema.objectives import OBJECTIVES
    from nas_core.search import PRUNERS, make_pruners
    from nas_core.search.mo_pruning import MOSuccessiveHalving
    from nas_core.training.measure import COSTS

    assert {o.metric for o in OBJECTIVES.values() if o.direction == "minimize"} <= set(COSTS)
    assert "asha" in PRUNERS
    study_pruner, rungs = make_pruners("asha", epochs=9, n_objectives=2)
    assert study_pruner is None and isinstance(rungs, MOSuccessiveHalving) and rungs.asynchronous
    assert make_pruners("sh", epochs=9, n_objectives=2)[1] is not None and make_pruners("sh", epochs=9, n_objectives=1)[1] is None
