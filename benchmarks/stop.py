"""Signal-to-exit time of a real `python -m nas_core search` process, per phase and signal.

Each run starts the CLI as a terminal would (SIGINT at its default disposition, its own session), waits for
the phase from its `--events-jsonl` stream, sends SIGINT (Ctrl-C) or SIGTERM (docker, Kubernetes, Colab),
and times until the process has exited. It then checks the study: no RUNNING trial left, no traceback.

Phases: start-up (signal 0.5-3.5 s after spawn: imports, data, storage; a run whose first trial had already
started by then is reported on its own row), training (after an epoch of trial 1),
end-of-trial (right after a trial's last epoch: restoring the best weights, predictions, latency, writes),
fine-tune (zero-cost search, after the first fine-tune epoch of a finalist), one-training (a budget that fits only
one training, after its second hold: the trial completes with the model it held, so ``complete`` is 1).

Usage: python benchmarks/stop.py [--repeats 3] [--phases start-up,training,...]
Writes benchmarks/results/stop.{json,md} (goal: every exit within 2 s of the signal); with some phases only,
stop_PHASE[_PHASE...].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GOAL_S = 2.0

BASE = ["--dataset", "digits", "--train-samples", "600", "--quiet", "--seed", "0", "--study", "stop"]
PHASES = {
    "start-up": BASE + ["--trials", "20", "--epochs", "3"],
    "training": BASE + ["--trials", "20", "--epochs", "4", "--patience", "4"],
    "end-of-trial": BASE + ["--trials", "20", "--epochs", "1", "--patience", "1"],
    "fine-tune": BASE + ["--trials", "6", "--epochs", "6", "--fidelity", "zero-cost", "--fidelity-option", "finetune_top_k=2"],
    # a budget that fits one training (500 epochs cannot run twice in 40 s): the stop keeps the model it held
    "one-training": BASE + ["--trials", "5", "--epochs", "500", "--patience", "2", "--timeout", "40"],
}


def _events(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


STARTUP_DELAYS = (0.5, 2.0, 3.5, 5.0, 6.5)  # seconds after spawn: imports, then data, storage and MLflow set-up


def _ready(phase: str, events: list[dict], spawned: float, delay: float) -> bool:
    if phase == "start-up":
        return time.monotonic() - spawned >= delay
    if phase == "training":
        return any(e["kind"] == "EpochProgress" and e["number"] == 1 for e in events)
    if phase == "one-training":  # well into it: its second hold (one is due every twelfth of the 40 s) has been shown
        return sum(e["kind"] == "EpochProgress" and "held_test_accuracy" in e.get("metrics", {}) for e in events) >= 2
    if phase == "end-of-trial":
        return any(e["kind"] == "EpochProgress" and e["number"] == 1 and e["epoch"] == e["epochs"] for e in events)
    return any(e["kind"] == "EpochProgress" and e.get("metrics", {}).get("phase") == "finetune" for e in events)


def one(phase: str, sig: int, delay: float = 1.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        events = ws / "events.jsonl"
        argv = [sys.executable, "-m", "nas_core", "search", "--workspace", str(ws), "--events-jsonl", str(events), *PHASES[phase]]
        spawned = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        while not _ready(phase, _events(events), spawned, delay):
            if proc.poll() is not None or time.monotonic() - spawned > 600:
                proc.kill()
                _, err = proc.communicate()
                return {"phase": phase, "signal": signal.Signals(sig).name, "error": f"never reached the phase: {err[-300:]}"}
            time.sleep(0.01)
        sent = time.monotonic()
        started = any(e["kind"] == "TrialStarted" for e in _events(events))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=600)
        exit_s = time.monotonic() - sent
        running, complete, reasons = 0, 0, []
        if (ws / "optuna.db").exists():
            con = sqlite3.connect(ws / "optuna.db")
            try:
                running = con.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
                complete = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
                reasons = [json.loads(r[0]) for r in con.execute(
                    "select a.value_json from trial_user_attributes a join trials t using (trial_id) "
                    "where a.key = 'reason' and t.state = 'PRUNED'")]
            except sqlite3.DatabaseError:
                pass  # stopped before the tables were made
            finally:
                con.close()
        if phase == "start-up" and started:
            phase = "start-up (landed in trial 0)"
        return {"phase": phase, "signal": signal.Signals(sig).name, "exit_s": round(exit_s, 3), "returncode": proc.returncode,
                "delay_s": delay if phase.startswith("start-up") else None,
                "running_left": running, "complete": complete, "traceback": "Traceback" in err, "pruned_reasons": reasons}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phases", default=",".join(PHASES))
    args = parser.parse_args()
    runs = []
    for phase in args.phases.split(","):
        for sig in (signal.SIGINT, signal.SIGTERM):
            for i in range(args.repeats):
                r = one(phase, sig, STARTUP_DELAYS[i % len(STARTUP_DELAYS)])
                runs.append(r)
                print(json.dumps(r), file=sys.stderr)
    rows = []
    for phase in [*args.phases.split(","), "start-up (landed in trial 0)"]:
        for name, code in (("SIGINT", 130), ("SIGTERM", 143)):
            rs = [r for r in runs if r["phase"] == phase and r["signal"] == name and "exit_s" in r]
            times = [r["exit_s"] for r in rs]
            if not rs and phase not in PHASES:
                continue
            rows.append({
                "phase": phase, "signal": name, "n": len(rs), "median_s": statistics.median(times) if times else None,
                "max_s": max(times) if times else None, "exit_codes": sorted({r["returncode"] for r in rs}),
                "expected_code": code, "running_left": sum(r["running_left"] for r in rs), "tracebacks": sum(r["traceback"] for r in rs),
                "met": bool(times) and max(times) <= GOAL_S and all(r["returncode"] == code for r in rs)
                and not any(r["running_left"] or r["traceback"] for r in rs),
            })
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {"goal_s": GOAL_S, "rows": rows, "runs": runs, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                                     "load_after": load}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    phases = args.phases.split(",")
    name = "stop" if phases == list(PHASES) else "stop_" + "_".join(phases)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    lines = ["# Stop: signal-to-exit time of `python -m nas_core search`", "",
             f"Goal: exit within {GOAL_S:g} s of the signal in every phase, code 130 (SIGINT) / 143 (SIGTERM), no RUNNING trial, "
             "no traceback. Each row is a fresh process and workspace; times from the signal to the process's exit.", "",
             "| phase | signal | runs | median s | max s | exit codes | RUNNING left | tracebacks | met |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['phase']} | {r['signal']} | {r['n']} | {r['median_s']} | {r['max_s']} | {r['exit_codes']} | "
                     f"{r['running_left']} | {r['tracebacks']} | {'yes' if r['met'] else 'NO'} |")
    lines += ["", f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, load average after the runs {load}.",
              "Where the stopped trial was: the reasons recorded for PRUNED trials are in `stop.json` (`pruned_reasons`)."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
