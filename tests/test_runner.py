"""The background runner: progress snapshots, Stop ends the running trial at a batch boundary and keeps it, one run per study."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas_core.errors import SearchBusyError
from nas_core.events import EpochProgress, StudyFinished, TrialFinished
from nas_core.runner import RunnerRegistry
from nas_core.schema.record import trial_record
from nas_core.search import SearchConfig


def _wait_for(predicate, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_stop_ends_the_current_trial_and_keeps_finished_ones(tmp_path: Path) -> None:
    registry = RunnerRegistry()
    config = SearchConfig(dataset="digits", trials=50, epochs=60, patience=60, seed=0, workspace=str(tmp_path), study="stoppable",
                          tracking=False, device="cpu", train_samples=600)
    runner = registry.start(config)
    second_trial_epochs = threading.Event()
    runner.subscribe(lambda e: isinstance(e, EpochProgress) and e.number >= 1 and second_trial_epochs.set())
    # let one trial finish (60 epochs without early stop, several seconds, keep trial 1 training long enough to be stopped mid-way)
    first_done = threading.Event()
    runner.subscribe(lambda e: isinstance(e, TrialFinished) and first_done.set())
    with pytest.raises(SearchBusyError, match="already running"):
        registry.start(config)
    assert first_done.wait(300)
    assert second_trial_epochs.wait(300)
    snap = runner.snapshot()
    assert snap.status == "running" and snap.current_trial is not None and snap.epoch >= 1
    assert runner.stop(wait=60)
    snap = runner.snapshot()
    assert snap.status == "stopped" and not snap.active
    assert isinstance(runner.events()[-1], StudyFinished) and runner.events()[-1].reason == "stopped"
    study = optuna.load_study(study_name="stoppable", storage=config.storage_url())
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    stopped = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(stopped) == 1 and "stopped by the user" in trial_record(stopped[0])["reason"]
    assert states.count(TrialState.COMPLETE) >= 1  # finished trials are kept
    n_before = len(states)
    # a new run of the same study is allowed once the old one is idle
    again = registry.start(replace(config, trials=1, epochs=1))
    assert again.wait(120) and again.snapshot().status == "finished"
    assert len(optuna.load_study(study_name="stoppable", storage=config.storage_url()).trials) == n_before + 1


def test_runner_reports_a_bad_dataset_as_an_error_event(tmp_path: Path) -> None:
    registry = RunnerRegistry()
    runner = registry.start(SearchConfig(dataset=str(tmp_path / "missing.zip"), trials=1, workspace=str(tmp_path), study="bad", tracking=False))
    assert runner.wait(60)
    snap = runner.snapshot()
    assert snap.status == "error" and "missing.zip" in (snap.error or "")
    assert not (tmp_path / "optuna.db").exists()
