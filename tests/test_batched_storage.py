"""The search's write-behind storage stores exactly what plain Optuna stores, and others see a running trial in time."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from nas_core.search import SAMPLERS, SearchConfig
from nas_core.workspace.batched import BatchedTrialStorage, batched
from nas_core.workspace.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _run(storage: object, n: int, *, batch: bool) -> list[optuna.trial.FrozenTrial]:
    """n trials of the default space, sampled by the default TPE (seeded), with a fake objective; a few failed."""
    space = SearchConfig(dataset="digits").search_space()
    sampler = SAMPLERS.get("tpe")(seed=3, space=space, trials=n, n_objectives=2)
    study = optuna.create_study(storage=storage, sampler=sampler, directions=["maximize", "minimize"], study_name="s")
    for i in range(n):
        if i % 9 == 0:
            study.enqueue_trial({"n_conv": 2}, skip_if_exists=False)  # as the known-good designs are queued
        if batch:
            assert isinstance(storage, BatchedTrialStorage)
            with storage.asking():
                trial = study.ask()
        else:
            trial = study.ask()
        if batch:
            assert isinstance(storage, BatchedTrialStorage)
            storage.hold(trial._trial_id)
        trial.set_user_attr("owner", {"pid": 1, "i": i})
        if batch:
            with storage.sampling(trial._trial_id):
                values = space.sample(trial)
                trial.set_user_attr("summary", f"s{i}")
        else:
            values = space.sample(trial)
            trial.set_user_attr("summary", f"s{i}")
        study._storage.set_trial_intermediate_value(trial._trial_id, 1, 0.1 * (i % 7))  # what a single-objective report writes
        trial.set_user_attr("moca_record", {"v": 2, "metrics": {"n": len(values)}})
        if i % 5 == 4:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, [((i * 37) % 100) / 100, float(len(values))])
    return study.get_trials()


def _as_stored(trials: list[optuna.trial.FrozenTrial]) -> list[tuple]:
    return [(t.number, t.state, t.values, t.params, {k: repr(v) for k, v in t.distributions.items()}, t.user_attrs,
             t.system_attrs, t.intermediate_values) for t in trials]


def _held_trial(url: str, owner_pid: int) -> tuple[BatchedTrialStorage, optuna.Study, optuna.Trial]:
    """A study "s" on ``url`` with one trial asked, held and given an owner record, as the search does."""
    storage = batched(open_storage(url))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    storage.hold(trial._trial_id)
    trial.set_user_attr("owner", {"pid": owner_pid})
    return storage, study, trial


def test_a_batched_search_stores_what_plain_optuna_stores(tmp_path: Path) -> None:
    plain = _run(optuna.storages.get_storage(open_storage(f"sqlite:///{tmp_path / 'plain.db'}")), 40, batch=False)
    fast = _run(batched(open_storage(f"sqlite:///{tmp_path / 'batched.db'}")), 40, batch=True)
    assert len(plain[-1].params) >= 15  # the default space: about 21 parameters a trial, sampled by TPE after its start-up
    assert any(k.startswith("tpe:relative_params") for k in plain[-1].system_attrs)  # the constant liar's note, batched too
    assert _as_stored(fast) == _as_stored(plain)
    # and read back by a fresh storage, not this process's cache
    again = optuna.load_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 'batched.db'}")).get_trials()
    assert _as_stored(again) == _as_stored(plain)


def test_another_process_sees_a_running_trials_parameters_once_sampling_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    storage, study, trial = _held_trial(url, 42)
    read = [sys.executable, "-c", f"import json, optuna; t = optuna.load_study(study_name='s', storage={url!r}).trials[0]; "
            "print(json.dumps([t.state.name, t.params, t.user_attrs]))"]
    with storage.sampling(trial._trial_id):
        trial.suggest_int("width", 8, 64)
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        during = json.loads(subprocess.run(read, capture_output=True, text=True, check=True).stdout)
    after = json.loads(subprocess.run(read, capture_output=True, text=True, check=True).stdout)
    assert during == ["RUNNING", {}, {}]  # pending: nothing half-written
    assert after[0] == "RUNNING" and set(after[1]) == {"width", "lr"} and after[2] == {"owner": {"pid": 42}}
    trial.set_user_attr("moca_record", {"v": 2})
    study.tell(trial, 1.0)
    final = json.loads(subprocess.run(read, capture_output=True, text=True, check=True).stdout)
    assert final == ["COMPLETE", after[1], {"owner": {"pid": 42}, "moca_record": {"v": 2}}]


def test_reads_that_can_return_the_held_trial_see_its_pending_values(tmp_path: Path) -> None:
    storage = batched(open_storage(f"sqlite:///{tmp_path / 'x.db'}"))
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.hold(trial._trial_id)
    trial.suggest_int("a", 0, 3)
    trial.set_user_attr("k", [1, 2])
    got = storage.get_trial(trial._trial_id)  # merged in memory, nothing written
    assert got.params == {"a": trial.params["a"]} and got.user_attrs == {"k": [1, 2]}
    running = study.get_trials(states=(TrialState.RUNNING,))  # a read of RUNNING trials writes the pending values first
    assert running[0].params == {"a": trial.params["a"]} and running[0].user_attrs == {"k": [1, 2]}


def test_a_distribution_clash_is_refused_at_the_suggest_as_optuna_does(tmp_path: Path) -> None:
    storage = batched(open_storage(f"sqlite:///{tmp_path / 'x.db'}"))
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({})
    first = study.ask()
    first.suggest_int("a", 0, 3)
    study.tell(first, 0.0)
    trial = study.ask()
    storage.hold(trial._trial_id)
    with pytest.raises(ValueError):
        storage.set_trial_param(trial._trial_id, "a", 0.5, FloatDistribution(0, 1))
    storage.set_trial_param(trial._trial_id, "a", 2, IntDistribution(0, 3))
    storage.flush(trial._trial_id)
    assert study.trials[1].params == {"a": 2}


def test_a_stale_trial_failed_by_another_process_is_not_overwritten(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    storage, study, trial = _held_trial(url, 1)
    other = optuna.load_study(study_name="s", storage=open_storage(url))
    other._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # as a reclaim of a dead worker's trial would
    storage.set_trial_user_attr(trial._trial_id, "late", 1)
    with pytest.raises(RuntimeError):  # the flush of a pending value is refused too
        storage.flush(trial._trial_id)
    with pytest.raises(RuntimeError):
        storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [1.0])
    stored = optuna.load_study(study_name="s", storage=open_storage(url)).trials[0]
    assert stored.state == TrialState.FAIL and stored.values is None and "late" not in stored.user_attrs


def test_a_finished_trial_is_not_read_again_yet_every_other_process_trial_is_seen(tmp_path: Path) -> None:
    """After this process finishes a trial, the next read of the study skips it (its cached copy is what was written),
    but never at the cost of a trial another process created meanwhile, whatever the order of the two creations."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    mine, other = batched(open_storage(url)), batched(open_storage(url))
    study = optuna.create_study(storage=mine, study_name="s", directions=["maximize"])
    theirs = optuna.load_study(storage=other, study_name="s")

    def finish(storage: BatchedTrialStorage, s: optuna.Study, value: float) -> optuna.Trial:
        with storage.asking():
            trial = s.ask()
        storage.hold(trial._trial_id)
        s.tell(trial, value)
        return trial

    first = finish(mine, study, 0.1)  # nothing else exists: the cache moves past it
    assert mine._studies[study._study_id].last_finished_trial_id == first._trial_id
    # the other process creates a trial after this one's read and before this one's create: a number this cache has
    # not seen lies below the trial it finishes, so it must not move past it
    with mine.asking():
        mine_read = study.get_trials(deepcopy=False)  # noqa: F841 - the read before the other's create
        their_trial = theirs.ask()
        trial = study.ask()
    mine.hold(trial._trial_id)
    study.tell(trial, 0.2)
    assert mine._studies[study._study_id].last_finished_trial_id < their_trial._trial_id
    theirs.tell(their_trial, 0.3)
    finish(other, theirs, 0.4)
    seen = {t.number: (t.state, t.values) for t in study.get_trials(deepcopy=False)}
    assert seen == {0: (TrialState.COMPLETE, [0.1]), 1: (TrialState.COMPLETE, [0.3]), 2: (TrialState.COMPLETE, [0.2]),
                    3: (TrialState.COMPLETE, [0.4])}
