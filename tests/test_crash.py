"""A search process killed mid-trial loses nothing recorded; the next run marks the dead trial failed and retries it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent.parent


def _trials(workspace: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=study, storage=f"sqlite:///{workspace / 'optuna.db'}").get_trials(deepcopy=False)
    except (KeyError, Exception):  # noqa: BLE001 - the study may not exist yet
        return []


def test_killed_search_trial_is_failed_and_retried(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    env = {**os.environ, "MOCA_HEARTBEAT_S": "1", "MOCA_GRACE_S": "2", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "nas_core", "search", "--dataset", "digits", "--workspace", str(tmp_path), "--study", "crash",
            "--epochs", "200", "--patience", "200", "--no-tracking", "--quiet", "--seed", "0"]
    first = subprocess.Popen([*argv, "--trials", "2"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        # kill it while a trial is training (sampled, built and started: its summary is recorded)
        while not any(t.state == TrialState.RUNNING and t.user_attrs.get("summary") for t in _trials(tmp_path, "crash")):
            assert first.poll() is None, "the search ended before a trial was running"
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    running = [t for t in _trials(tmp_path, "crash") if t.state == TrialState.RUNNING]
    assert len(running) == 1
    dead = running[0]
    assert dead.params
    time.sleep(3)  # let the 2 s grace period pass since the dead process's last heartbeat
    done = subprocess.run([*argv, "--trials", "1", "--epochs", "2"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    trials = {t.number: t for t in _trials(tmp_path, "crash")}
    assert trials[dead.number].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params  # the same candidate, run again
