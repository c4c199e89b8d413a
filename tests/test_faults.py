"""Faults injected into real searches: each ends with the search going on, or stopping with one clear message and the study intact.

A candidate's own failure (an exception, out of memory) is one failed trial; a fault of the machine (the study
database locked or corrupt, the disk full, a tampered library block) stops the search with one ``error:`` line,
keeps every finished trial, and the same command resumes once the fault is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas_core.evaluate import FIDELITIES
from nas_core.schema.record import trial_record
from nas_core.search import SearchConfig, run_search

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(dataset="digits", epochs=1, train_samples=200, val_samples=100, seed=0)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _search(workspace: Path, *extra: str, events: Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "nas_core", "search", "--dataset", "digits", "--workspace", str(workspace), "--study", "f",
            "--train-samples", "300", "--epochs", "1", "--quiet", "--seed", "0", *extra]
    return [*argv, "--events-jsonl", str(events)] if events else argv


def _trials(workspace: Path) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="f", storage=f"sqlite:///{workspace / 'optuna.db'}").get_trials(deepcopy=False)


def _finished(events: Path, n: int) -> bool:
    if not events.exists():
        return False
    return sum('"TrialFinished"' in line for line in events.read_text().splitlines()) >= n


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- a candidate's own faults: the search goes on ----------------------------------------------------------------


def test_out_of_memory_on_one_candidate_fails_that_trial_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = FIDELITIES.get("train")
    calls = {"n": 0}

    def greedy(ctx):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if calls["n"] == 3:
            raise MemoryError()
        return real(ctx)

    monkeypatch.setitem(FIDELITIES._entries, "train", greedy)
    # a narrow space: the fourth trial is sampled, and the full space's largest candidates took ~24 s of CI to train
    narrow = {"base": "seed-cnn", "params": {"n_conv": {"high": 2}, "conv_filters": {"choices": [8, 16]}, "n_fc": {"high": 1}}}
    result = run_search(SearchConfig(trials=4, workspace=str(tmp_path), study="f", tracking=False, space_data=narrow, **TINY))
    states = [t.state for t in _trials(tmp_path)]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    for t in _trials(tmp_path)[1:3]:
        assert trial_record(t)["reason"].startswith("out of memory on this candidate")
    assert result.n_complete == 2 and result.best_config


def test_mlflow_store_deleted_and_artifacts_unwritable_mid_run_only_warn(tmp_path: Path) -> None:
    def sabotage(event) -> None:  # type: ignore[no-untyped-def]
        if event.kind == "TrialFinished" and event.number == 0:
            for p in tmp_path.glob("mlflow.db*"):
                p.unlink()
            target = tmp_path / "mlartifacts"
            while not target.is_file():  # MLflow's writer may be making the folder again for trial 0's artifacts meanwhile
                shutil.rmtree(target, ignore_errors=True)
                with contextlib.suppress(IsADirectoryError, FileExistsError):
                    target.write_text("not a folder")

    with pytest.warns(RuntimeWarning, match="MLflow tracking disabled"):
        # screen off: all three trials train and log to the broken MLflow (the screen would prune some)
        result = run_search(SearchConfig(trials=3, workspace=str(tmp_path), study="f", fidelity_options={"screen": "off"}, **TINY),
                            emit=sabotage)
    assert result.n_complete == 3 and result.best_config
    assert any("MLflow" in w for w in result.warnings)
    assert [t.state for t in _trials(tmp_path)] == [TrialState.COMPLETE] * 3


# --- faults of the machine: one message, study intact, the same command resumes ----------------------------------


def test_sqlite_locked_by_another_writer_stops_with_one_line_and_resumes(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    ws = tmp_path / "ws"
    ws.mkdir()
    proc = subprocess.Popen(_search(ws, "--trials", "20", events=events), cwd=ROOT, env=_env(MOCA_SQLITE_TIMEOUT_S="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not _finished(events, 1):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    locker = sqlite3.connect(ws / "optuna.db", timeout=30, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert proc.returncode == 2
    line = _one_error_line(err)
    assert "locked by another process" in line and "MOCA_SQLITE_TIMEOUT_S" in line and "resume" in line
    done = [t for t in _trials(ws) if t.state == TrialState.COMPLETE]
    assert len(done) >= 1
    again = subprocess.run(_search(ws, "--trials", "1"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    trials = _trials(ws)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == len(done) + 1


def test_a_corrupt_study_database_is_named_and_left_untouched(tmp_path: Path) -> None:
    (tmp_path / "optuna.db").write_bytes(b"this is not sqlite" * 100)
    before = _digest(tmp_path / "optuna.db")
    proc = subprocess.run(_search(tmp_path, "--trials", "1"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "corrupt" in line and "move it aside" in line
    assert _digest(tmp_path / "optuna.db") == before


def test_a_study_name_that_is_a_file_in_the_workspace_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("my notes")
    proc = subprocess.run(_search(tmp_path, "--trials", "1"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "is a file" in _one_error_line(proc.stderr)
    assert (tmp_path / "f").read_text() == "my notes" and not (tmp_path / "optuna.db").exists()


@pytest.fixture()
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_mid_search_stops_with_one_line_and_the_same_command_resumes(tmpfs: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"  # outside the small disk
    ws = tmpfs / "ws"
    ws.mkdir()
    proc = subprocess.Popen(_search(ws, "--trials", "30", events=events), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not _finished(events, 2):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    filler = tmpfs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill every byte left (unbuffered: closing has nothing left to flush)
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    line = _one_error_line(err)
    assert "full" in line and "resume" in line
    filler.unlink()
    done = [t.number for t in _trials(ws) if t.state == TrialState.COMPLETE]
    assert len(done) >= 2
    again = subprocess.run(_search(ws, "--trials", "1"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    trials = _trials(ws)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert set(done) <= {t.number for t in trials if t.state == TrialState.COMPLETE}


def test_a_library_block_whose_sha256_no_longer_matches_stops_the_cached_search(tmp_path: Path) -> None:
    from nas_core.library import build_library, open_library

    build_library(dataset="digits", workspace=tmp_path, minutes=0.02, train_samples=300, donors=("conv-a",), min_steps=10)
    for meta in open_library(tmp_path).blocks():  # tamper every stored block: whatever the sampler binds is refused
        (tmp_path / "library" / f"{meta.id}.safetensors").write_bytes(b"\0" * 64)
    proc = subprocess.run(_search(tmp_path, "--trials", "3", "--fidelity", "cached", "--space", "modular"), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "sha256" in line and "rebuild the library" in line
    trials = _trials(tmp_path)
    assert len(trials) == 1 and trials[0].state == TrialState.FAIL  # stopped at the first, not failed one by one
    assert "sha256" in trial_record(trials[0])["reason"]


def test_a_full_disk_reported_by_a_library_in_its_own_words_is_a_disk_full() -> None:
    """safetensors raises its own error type on a full disk; the search must stop with the one disk-full line, not a traceback."""
    from nas_core.errors import WorkspaceError
    from nas_core.workspace.faults import as_fatal

    class SafetensorError(Exception):
        pass

    fatal = as_fatal(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"), where="ws")
    assert isinstance(fatal, WorkspaceError) and "full" in str(fatal) and "resume" in str(fatal)


def test_a_trial_left_without_an_owner_record_by_a_dead_process_is_reclaimed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk filled up between asking for a trial and recording its owner: the next run fails that trial, so the
    study holds no RUNNING trial forever; one started after this process (someone else's, about to record) is kept."""
    import datetime

    from nas_core.schema.record import trial_record
    from nas_core.workspace import owners

    study = optuna.create_study(study_name="o", storage=f"sqlite:///{tmp_path / 'o.db'}")
    dead = study.ask()
    monkeypatch.setattr(owners, "_IMPORTED_AT", datetime.datetime.now() + datetime.timedelta(seconds=1))
    assert owners.reclaim_dead_trials(study) == [dead.number]
    t = study.trials[dead.number]
    assert t.state == TrialState.FAIL and "before it recorded who ran it" in trial_record(t)["reason"]
    monkeypatch.setattr(owners, "_IMPORTED_AT", datetime.datetime.now() - datetime.timedelta(days=1))
    fresh = study.ask()
    assert owners.reclaim_dead_trials(study) == [] and study.trials[fresh.number].state == TrialState.RUNNING
