"""MLflow's writer process, seen from outside: a real ``python -m nas_core search`` stopped by a terminal's Ctrl-C or
killed outright leaves every trial's MLflow run complete or closed, and the writer never outlives its work.

The writer runs in a session of its own: a terminal's Ctrl-C goes to the whole foreground process group, and the
search, not the writer, decides when tracking ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import mlflow_runs
from optuna.trial import TrialState

from nas_core.schema.record import trial_record

ROOT = Path(__file__).resolve().parent.parent
STUDY = "tracked"


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(workspace: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "nas_core", "search", "--dataset", "digits", "--workspace", str(workspace), "--study", STUDY,
            "--train-samples", "400", "--quiet", "--seed", "0", *extra]
    # its own process group, as a terminal's foreground job: killpg is what Ctrl-C does there
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_signals, start_new_session=True)


def _trials(workspace: Path) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{workspace / 'optuna.db'}").get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - not created yet
        return []


def _nested(workspace: Path) -> list:
    if not (workspace / "mlflow.db").exists():  # linked into place complete; opening it earlier would create (migrate) it here
        return []
    try:
        return mlflow_runs(workspace / "mlflow.db", STUDY)[2]
    except Exception:  # noqa: BLE001 - the store or the experiment may not exist yet
        return []


def _wait(proc: subprocess.Popen[str], cond, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the search ended (rc {proc.returncode}) before {what}: {err[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads child processes from /proc")
def test_ctrl_c_to_the_process_group_leaves_every_trial_run_complete_or_killed(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--trials", "20", "--epochs", "3", "--patience", "3")
    # one trial recorded, the next one's run opened (it is training)
    _wait(proc, lambda: any(t.state == TrialState.COMPLETE for t in _trials(tmp_path))
          and any(r.data.tags.get("trial_number") == "1" for r in _nested(tmp_path)), "trial 1's MLflow run opened")
    writers = _children(proc.pid)
    assert writers, "no writer process"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "MLflow tracking disabled" not in err, err
    trials = {t.number: t for t in _trials(tmp_path)}
    _, parents, nested = mlflow_runs(tmp_path / "mlflow.db", STUDY)
    runs = {int(r.data.tags["trial_number"]): r for r in nested}
    assert set(runs) == set(trials)  # one run per trial, none lost in the pipe
    for number, trial in trials.items():
        run = runs[number]
        assert trial_record(trial)["mlflow_run_id"] == run.info.run_id
        if trial.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and "val_accuracy" in run.data.metrics and run.data.params
            assert Path(run.info.artifact_uri.removeprefix("file://"), "config.json").exists()
        else:
            assert trial.state == TrialState.PRUNED and run.info.status == "KILLED"
    assert [p.info.status for p in parents] == ["KILLED"]
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in writers):  # it wrote everything before the search exited; at most it is exiting
        assert time.monotonic() < deadline, "the writer outlived the search"
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads child processes from /proc")
def test_kill_9_leaves_the_open_run_killed_and_the_writer_exits(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--trials", "5", "--epochs", "200", "--patience", "200")
    _wait(proc, lambda: any(r.data.tags.get("trial_number") == "0" for r in _nested(tmp_path)), "trial 0's MLflow run opened")
    writers = _children(proc.pid)
    assert writers, "no writer process"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while any(_alive(w) for w in writers):  # the pipe has closed: it closes what is open and exits
        assert time.monotonic() < deadline, "the writer outlived the killed search"
        time.sleep(0.1)
    _, parents, nested = mlflow_runs(tmp_path / "mlflow.db", STUDY)
    assert [r.info.status for r in nested] == ["KILLED"]  # not left RUNNING forever
    assert [p.info.status for p in parents] == ["RUNNING"]  # the study's next run reopens it
