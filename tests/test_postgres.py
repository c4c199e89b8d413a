"""Many workers, one study: two `python -m nas_core worker` processes share a study in a real PostgreSQL on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import mlflow_runs

ROOT = Path(__file__).resolve().parents[1]


def test_two_workers_share_one_study(postgres_url: str, tmp_path: Path) -> None:
    import optuna

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--dataset", "digits", "--study", "shared", "--storage", postgres_url, "--trials", "2", "--epochs", "1",
            "--train-samples", "200", "--val-samples", "100", "--device", "cpu", "--quiet"]
    workers = [
        subprocess.Popen([sys.executable, "-m", "nas_core", "worker", *args, "--seed", str(i), "--workspace", str(tmp_path / f"w{i}")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err
        assert out.strip().splitlines()[-1].endswith("best_config.json")
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert len({t.number for t in study.trials}) == 4
    # each trial was screened (training.screening) and then trained in full or screened out, nothing else
    from nas_core.schema.record import SCREEN_KEY, trial_record

    for t in study.trials:
        assert t.state.name == "COMPLETE" or trial_record(t)["reason"].startswith("screened out"), (t.state, trial_record(t).get("reason"))
    assert any(t.state.name == "COMPLETE" for t in study.trials)
    # the screen ranks against the other worker's candidates too (each worker ran two, so a pool of 3+ holds both)
    assert max(t.user_attrs[SCREEN_KEY]["pool"] for t in study.trials) >= 3


def _trials(url: str, study: str) -> list:
    import optuna

    from nas_core.workspace.storage import shared_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        # One storage for every poll: a new one per call is a new connection pool, and polling every 50 ms while
        # the workers start on a loaded machine ran PostgreSQL out of connections ("too many clients already").
        return optuna.load_study(study_name=study, storage=shared_storage(url)).get_trials(deepcopy=False)
    except KeyError:
        return []


def test_search_with_three_workers_one_killed_is_retried_and_finalized_once(postgres_url: str, tmp_path: Path) -> None:
    """`search --workers 3` on PostgreSQL: one worker killed with -9 mid-trial; its trial is failed and queued again, every
    trial is counted once, the final phase runs once, and MLflow holds one parent run with every trial nested under it."""
    import time

    from optuna.trial import TrialState

    from nas_core.claims import claims

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "nas_core", "search", "--workers", "3", "--dataset", "digits", "--study", "team",
            "--storage", postgres_url, "--trials", "9", "--epochs", "2", "--train-samples", "300", "--val-samples", "100",
            "--fidelity", "zero-cost", "--fidelity-option", "finetune_top_k=2", "--device", "cpu", "--quiet",
            "--workspace", str(tmp_path)]
    parent = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 300
    victim = None
    while victim is None:
        assert parent.poll() is None, parent.communicate()[1]
        assert time.monotonic() < deadline, "no worker trial started"
        # a worker's trial that is training: sampled and built (its summary is recorded), so its parameters are complete
        running = [t for t in _trials(postgres_url, "team")
                   if t.state == TrialState.RUNNING and t.user_attrs.get("owner") and t.user_attrs.get("summary")]
        owners = {t.user_attrs["owner"]["pid"] for t in running} - {parent.pid}
        victim = min(owners) if owners else None
        time.sleep(0.05)
    os.kill(victim, 9)
    out, err = parent.communicate(timeout=900)
    assert parent.returncode == 0, err
    assert "worker: " in err  # the dead worker is reported
    assert out.strip().splitlines()[-1].endswith("best_config.json")
    trials = _trials(postgres_url, "team")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    dead = [t for t in trials if t.state == TrialState.FAIL and "reclaimed" in t.user_attrs.get("reason", "")]
    assert len(dead) == 1 and dead[0].user_attrs["owner"]["pid"] == victim
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead[0].number]
    assert len(retries) == 1 and retries[0].params == dead[0].params
    assert len({t.number for t in trials}) == len(trials)  # nothing counted twice
    finals = [c for c in claims(postgres_url, "team") if c["what"].startswith("finalize@")]
    assert len(finals) == 1
    import optuna

    from nas_core.export import final_results

    study = optuna.load_study(study_name="team", storage=postgres_url)
    assert len(final_results(study)) == 2 and "final_results" not in study.user_attrs  # one record per finalist
    _, parents, nested = mlflow_runs(tmp_path / "mlflow.db", "team")
    assert len(parents) == 1
    assert nested and all(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in nested)
    finished = [t for t in trials if t.state.is_finished()]
    assert {int(r.data.tags["trial_number"]) for r in nested} <= {t.number for t in finished}


def test_finalize_runs_once_per_study_state(postgres_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = ["--dataset", "digits", "--study", "fin", "--storage", postgres_url, "--epochs", "1", "--train-samples", "200",
            "--val-samples", "100", "--fidelity", "zero-cost", "--device", "cpu", "--quiet", "--workspace", str(tmp_path)]
    run = subprocess.run([sys.executable, "-m", "nas_core", "worker", *base, "--trials", "3", "--no-finalize"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr
    fin = [sys.executable, "-m", "nas_core", "finalize", "--study", "fin", "--storage", postgres_url, "--workspace", str(tmp_path)]
    first = subprocess.run(fin, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1].endswith("best_config.json")
    again = subprocess.run(fin, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "was run by another worker" in again.stderr
    from nas_core.claims import claims

    assert len([c for c in claims(postgres_url, "fin") if c["what"].startswith("finalize@")]) == 1
