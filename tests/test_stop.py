"""Ctrl-C, SIGTERM and kill -9 on a real ``python -m nas_core search`` process never leave the study dirty.

Each search is started as a terminal starts it: SIGINT at its default disposition (a child of a
script started in the background would inherit "ignored"), in its own session so a signal reaches
only it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas_core.owners import owner_alive, owner_record, reclaim_dead_trials
from nas_core.schema.record import trial_record

ROOT = Path(__file__).resolve().parent.parent
STUDY = "stop"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _argv(workspace: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nas_core", "search", "--dataset", "digits", "--workspace", str(workspace), "--study", STUDY,
            "--train-samples", "400", "--quiet", "--seed", "0", "--events-jsonl", str(workspace / "events.jsonl"), *extra]


def _start(workspace: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    workspace.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(_argv(workspace, *extra), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _events(workspace: Path) -> list[dict]:
    path = workspace / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # the line being written
    return out


def _wait_for(proc: subprocess.Popen[str], cond, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the search ended (rc {proc.returncode}) before {what}: {err[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _trials(workspace: Path) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{workspace / 'optuna.db'}").get_trials(deepcopy=False)


def _training(workspace: Path, number: int) -> bool:
    return any(e["kind"] == "EpochProgress" and e["number"] == number for e in _events(workspace))


@pytest.mark.parametrize("sig, code", [pytest.param(signal.SIGINT, 130, id="ctrl-c"), pytest.param(signal.SIGTERM, 143, id="sigterm")])
def test_a_signal_mid_training_prunes_the_trial_writes_outputs_and_exits(tmp_path: Path, sig: int, code: int) -> None:
    proc = _start(tmp_path, "--trials", "20", "--epochs", "3", "--patience", "3")
    # one trial finished (so there are outputs to write), the next one training
    _wait_for(proc, lambda: _training(tmp_path, 1), "the second trial trained an epoch")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "terminate called" not in err, err
    assert signal.Signals(sig).name in err and "stopping" in err
    trials = _trials(tmp_path)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    assert [t.number for t in stopped] == [1]
    assert "stopped by the user" in trial_record(stopped[0])["reason"]
    assert trials[0].state == TrialState.COMPLETE
    best = Path(out.strip().splitlines()[-1])
    assert best.name == "best_config.json" and best.exists()
    assert (tmp_path / STUDY / "summary.md").exists() or any((tmp_path / STUDY).iterdir())


def _held(workspace: Path) -> int:
    return sum(e["kind"] == "EpochProgress" and "held_test_accuracy" in e["metrics"] for e in _events(workspace))


def test_ctrl_c_mid_one_training_keeps_the_model_it_held_with_its_test_accuracy(tmp_path: Path) -> None:
    """A budget that fits one training (500 epochs a trial cannot run twice in 40 s on 400 digits): the hour's only result
    must not be lost to a Stop. It holds a measured model at its first epoch and at intervals, and Ctrl-C hands that over:
    the trial completes with the held model's figures, its config says it was stopped, and outputs are written."""
    proc = _start(tmp_path, "--trials", "5", "--epochs", "500", "--patience", "2", "--timeout", "40")
    # holds every twelfth of the 40 s: wait for the progress stream to show a second one (not for a number of epochs,
    # whose seconds depend on the machine's load)
    _wait_for(proc, lambda: _held(tmp_path) >= 2, "the one training's second hold")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    trials = _trials(tmp_path)
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE)]
    record = trial_record(trials[0])
    holds = record["fidelity_extra"]["holds"]
    assert len(holds) >= 2 and holds[0]["epoch"] == 1
    kept = record["fidelity_extra"]["stopped"]["kept_epoch"]
    assert kept == holds[-1]["epoch"] == record["metrics"]["epochs_trained"] and len(record["history"]) == kept
    assert record["metrics"]["test_accuracy"] == holds[-1]["test_accuracy"] > 0.5  # a trained model's own figures, not nothing
    assert record["metrics"]["latency_ms"] > 0 and record["metrics"]["params"] > 0
    # each hold is in its epoch's row, so the progress stream (the CLI's bar, the Search page's log) says what a stop keeps
    shown = {e["epoch"]: e["metrics"]["held_test_accuracy"] for e in _events(tmp_path)
             if e["kind"] == "EpochProgress" and "held_test_accuracy" in e["metrics"]}
    assert shown == {h["epoch"]: h["test_accuracy"] for h in holds}
    # it trains on the training and validation splits: every epoch's validation score is marked as not held out in the
    # progress stream (the CLI's bar and the Search page's log)
    progress = [e for e in _events(tmp_path) if e["kind"] == "EpochProgress"]
    assert progress and all(e["metrics"]["val_trained_on"] == 1.0 for e in progress)
    from nas_core import events as ev
    from nas_core.views.search_page import event_line

    line = event_line(ev.EpochProgress("stop", number=0, epoch=kept, epochs=500, metrics=next(e for e in progress if e["epoch"] == kept)["metrics"]))
    assert f"model held, test {holds[-1]['test_accuracy']:.4f}: a Stop now keeps it" in line
    assert f"val acc {record['history'][-1]['val_accuracy']:.4f} (trained on) — model held" in line
    best = Path(out.strip().splitlines()[-1])
    assert best.name == "best_config.json" and best.exists()
    cfg = json.loads(best.read_text())
    planned = cfg["training"]["epochs"]
    assert cfg["provenance"]["stopped_early"]["after_epoch"] == kept < planned and "cut_by_budget" not in cfg["provenance"]
    assert "stopped by the user" in cfg["provenance"]["stopped_early"]["why"]
    assert cfg["metrics"]["test_accuracy"] == record["metrics"]["test_accuracy"]
    assert f"keeps the model it held at epoch {kept} of its {planned}" in (best.parent / "summary.md").read_text()
    # the weights written are the held ones: loaded, they give the test accuracy measured when the model was held
    from nas_core.data import load_dataset
    from nas_core.deploy.config import build_model
    from nas_core.training.measure import predict

    model = build_model(best, weights=best.parent / "best_weights.safetensors")
    data = load_dataset("digits", seed=0, train_samples=400)
    import torch

    acc = float((predict(model, data.x_test, torch.device("cpu")) == data.y_test.numpy()).mean())
    assert acc == pytest.approx(record["metrics"]["test_accuracy"], abs=1e-9)


def test_a_signal_during_start_up_exits_cleanly(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--trials", "5", "--epochs", "2")
    time.sleep(0.5)  # the process is importing torch: the start-up phase (nothing to wait on from outside)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 3, err
    db = tmp_path / "optuna.db"
    if db.exists():  # it may have got as far as opening the study
        assert not [t for t in _trials(tmp_path) if t.state == TrialState.RUNNING]


def test_a_second_ctrl_c_exits_at_once_and_the_next_run_reclaims_what_it_left(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--trials", "20", "--epochs", "50", "--patience", "50")
    _wait_for(proc, lambda: _training(tmp_path, 0), "the first trial trained an epoch")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "terminate called" not in err, err
    # whatever the second signal cut short, the next run (default 120 s heartbeat grace) leaves nothing RUNNING
    nxt = subprocess.run(_argv(tmp_path, "--trials", "1", "--epochs", "1"), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=600)
    assert nxt.returncode == 0, nxt.stderr
    trials = _trials(tmp_path)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[0].state in (TrialState.PRUNED, TrialState.FAIL)


def test_kill_9_then_the_same_command_reclaims_the_dead_trial_at_once(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--trials", "5", "--epochs", "50", "--patience", "50")
    try:
        _wait_for(proc, lambda: _training(tmp_path, 0), "the first trial trained an epoch")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    dead = [t for t in _trials(tmp_path) if t.state == TrialState.RUNNING]
    assert len(dead) == 1 and dead[0].user_attrs["owner"]["pid"] == proc.pid
    # the default grace (120 s) has not passed: only the owner record tells the next run the trial is dead
    started = time.monotonic()
    nxt = subprocess.run(_argv(tmp_path, "--trials", "1", "--epochs", "1"), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=600)
    assert nxt.returncode == 0, nxt.stderr
    assert time.monotonic() - started < 120
    assert "queued again" in nxt.stderr
    trials = {t.number: t for t in _trials(tmp_path)}
    assert trials[dead[0].number].state == TrialState.FAIL
    assert "reclaimed" in trials[dead[0].number].user_attrs["reason"]
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead[0].number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == dead[0].params
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]


# --- the owner record ------------------------------------------------------------------------------------------------


def test_owner_alive_tells_this_machine_apart_from_others_and_reused_pids() -> None:
    me = owner_record()
    assert owner_alive(me) is True
    assert owner_alive({**me, "host": socket.gethostname() + "-elsewhere"}) is None  # only the heartbeat can tell
    assert owner_alive({**me, "start": (me["start"] or 0) + 1}) is (False if me["start"] is not None else True)  # pid reused
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert owner_alive({**me, "pid": gone.pid, "start": None}) is False


def test_reclaim_skips_live_and_foreign_owners_and_retries_once(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="r")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    owners = {
        "dead": {**owner_record(), "pid": gone.pid, "start": None},
        "alive": owner_record(),
        "foreign": {**owner_record(), "host": "another-machine", "pid": gone.pid},
    }
    numbers = {}
    for name, owner in owners.items():
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        t.set_user_attr("owner", owner)
        numbers[name] = t.number
    # "alive" is this very process: reclaim must skip it (another search of ours may be running it)
    assert reclaim_dead_trials(study) == [numbers["dead"]]
    assert reclaim_dead_trials(study) == []  # a second worker finds nothing left to reclaim
    trials = study.get_trials(deepcopy=False)
    assert trials[numbers["dead"]].state == TrialState.FAIL
    assert trials[numbers["alive"]].state == TrialState.RUNNING and trials[numbers["foreign"]].state == TrialState.RUNNING
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == trials[numbers["dead"]].params and "owner" not in waiting[0].user_attrs
    # the retry dies too: it is failed but not queued a third time
    retry = study.ask()
    assert retry.number == waiting[0].number
    retry.set_user_attr("owner", owners["dead"])
    assert reclaim_dead_trials(study) == [retry.number]
    assert not [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_the_command_line_imports_exits_with_one_line(tmp_path: Path, sig: signal.Signals) -> None:
    """Before the command installs its handlers it is importing (a second or more on a busy machine, where a Ctrl-C used
    to print a KeyboardInterrupt traceback): the signal ends it at once, with one line. Made deterministic by holding
    the import of the CLI until the signal has been sent."""
    mark = tmp_path / "importing"
    code = (
        "import sys, time, pathlib\n"
        "class Hold:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'nas_core.cli':\n"
        f"            pathlib.Path({str(mark)!r}).write_text('now')\n"
        "            time.sleep(60)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hold())\n"
        "sys.argv = ['moca', 'search', '--dataset', 'digits', '--trials', '1']\n"
        "from nas_core.__main__ import run\n"
        "run()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    _wait_for(proc, mark.exists, "the command line is importing")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    assert err.splitlines() == [f"{sig.name} while starting up: exiting; nothing was started"]
    assert not list(tmp_path.glob("*.db"))
