"""MLflow's writer process, seen from outside: a real ``python -m nas_core search`` stopped by a terminal's Ctrl-C or
killed outright leaves every trial's MLflow run complete or closed, and the writer never outlives its work.

The writer runs in a session of its own: a terminal's Ctrl-C goes to the whole foreground process group, and the
search, not the writer, decides when tracking ends.
"""

from __future__ import annotations

import contextlib
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


# --- a new workspace's MLflow store: a copy of one built once ------------------------------------------------------------


def _tables(db: Path) -> dict[str, object]:
    """Each schema object of an SQLite file: its SQL's lines as a set (MLflow's own builds order a table's constraints
    differently from one build to the next) and a table's rows."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {name: (sorted(line.strip().rstrip(",").strip() for line in (sql or "").splitlines()),
                       conn.execute(f"SELECT * FROM '{name}'").fetchall() if sql and sql.startswith("CREATE TABLE") else None)
                for name, sql in conn.execute("SELECT name, sql FROM sqlite_master")}


def test_a_new_store_is_the_template_copied_and_the_same_as_mlflows_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from nas_core import tracking

    monkeypatch.setenv("MOCA_CACHE_DIR", str(tmp_path / "cache"))
    built: list[Path] = []
    real_build = tracking._build_store
    monkeypatch.setattr(tracking, "_build_store", lambda path, uri: (built.append(path), real_build(path, uri)))
    for name in ("a", "b"):
        tracking._create_sqlite_store_atomically(tracking.default_tracking_uri(tmp_path / name), tmp_path / name)
    assert len(built) == 1 and not built[0].exists()  # the migrations ran once, for the template
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"mlflow-{__import__('mlflow').__version__}-empty.db"]
    assert not list(tmp_path.glob("*/.mlflow.db.*.tmp*"))
    own = tmp_path / "own.db"
    real_build(own, (tmp_path / "b" / "mlartifacts").resolve().as_uri())  # what MLflow itself makes for workspace b
    copied, made = _tables(tmp_path / "b" / "mlflow.db"), _tables(own)
    assert copied.keys() == made.keys()
    assert {k: v for k, v in copied.items() if k != "experiments"} == {k: v for k, v in made.items() if k != "experiments"}
    (row,), (own_row,) = copied["experiments"][1], made["experiments"][1]  # type: ignore[index]
    assert row[:4] == own_row[:4] and row[2] == (tmp_path / "b" / "mlartifacts").resolve().as_uri() + "/0"
    assert abs(row[4] - own_row[4]) < 600_000  # dated when copied, not when the template was built
    client = MlflowClient(tracking_uri=tracking.default_tracking_uri(tmp_path / "b"))  # MLflow opens and writes it
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def test_an_unwritable_cache_or_a_damaged_template_builds_the_store_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from nas_core import tracking

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("MOCA_CACHE_DIR", str(blocked / "cache"))  # mkdir fails: NotADirectoryError
    tracking._create_sqlite_store_atomically(tracking.default_tracking_uri(tmp_path / "a"), tmp_path / "a")
    assert "experiments" in _tables(tmp_path / "a" / "mlflow.db")
    monkeypatch.setenv("MOCA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"mlflow-{mlflow.__version__}-empty.db").write_bytes(b"damaged" * 100)
    tracking._create_sqlite_store_atomically(tracking.default_tracking_uri(tmp_path / "b"), tmp_path / "b")
    assert _tables(tmp_path / "b" / "mlflow.db")["experiments"][1][0][0] == 0  # type: ignore[index]
    tracking._create_sqlite_store_atomically(tracking.default_tracking_uri(tmp_path / "c"), tmp_path / "c")  # rebuilt, then copied
    assert _tables(tmp_path / "cache" / f"mlflow-{mlflow.__version__}-empty.db").keys() == _tables(tmp_path / "c" / "mlflow.db").keys()


def _writers_of(pid: int) -> list[int]:
    """Live MLflow writer processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid) and b"_writer_main" in cmdline and not fields.get("State", "").startswith("Z"):
            found.append(int(status.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_search_whose_set_up_fails_after_the_writer_launched_leaves_no_writer_and_no_store(tmp_path: Path) -> None:
    """The writer is launched before the data loads (its imports overlap the search's set-up): a search that fails in
    set-up closes it, and nothing was written to MLflow."""
    from nas_core.errors import NasCoreError
    from nas_core.search import SearchConfig, run_search

    with pytest.raises(NasCoreError, match="does not exist"):
        run_search(SearchConfig(dataset=str(tmp_path / "no-such-data.npz"), trials=1, epochs=1, workspace=str(tmp_path / "ws"), study="s"))
    deadline = time.monotonic() + 60
    while _writers_of(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _writers_of(os.getpid()) == []
    assert not (tmp_path / "ws" / "mlflow.db").exists()
