"""Throughput of one study with N local workers, SQLite vs PostgreSQL, and the storage's ceiling.

Starts a PostgreSQL server on loopback (Debian's `postgresql`, initdb + pg_ctl in a temporary folder), then runs
`python -m nas_core search --workers N` as a user would, with
- the `trivial` evaluator (benchmarks/plugins/moca_trivial.py, loaded through MOCA_PLUGINS): the engine and the
  storage alone — overhead per trial and trials/s, up to 8 workers (the storage-bound ceiling);
- real digits training (2 epochs, 600 training images): trials per minute with 1, 2 and 4 workers.
Rates are taken from the trials' own start/complete times in the study (process start-up excluded).

Usage: python benchmarks/workers.py [--trivial-trials 240] [--digits-trials 12]
Writes benchmarks/results/workers.{json,md}.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@contextmanager
def postgres():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise SystemExit("error: PostgreSQL is not installed (sudo apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="moca-pg-bench-"))
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chmod(base, 0o755)
        data.mkdir()
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-t", "60",
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def run(storage: str | None, workers: int, trials: int, study: str, evaluator: str) -> dict:
    import optuna

    from nas_core.schema.record import trial_record

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as ws:
        storage_url = storage or f"sqlite:///{ws}/optuna.db"
        extra = (["--fidelity", "trivial", "--no-tracking"] if evaluator == "trivial"
                 else ["--fidelity", "train", "--epochs", "2", "--patience", "2", "--train-samples", "600"])
        argv = [sys.executable, "-m", "nas_core", "search", "--dataset", "digits", "--study", study, "--storage", storage_url,
                "--workspace", ws, "--trials", str(trials), "--workers", str(workers), "--quiet", "--device", "cpu", *extra]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks" / "plugins")]),
               "MOCA_PLUGINS": "moca_trivial"}
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"workers": workers, "evaluator": evaluator, "error": proc.stderr.strip().splitlines()[-1:]}
        all_trials = optuna.load_study(study_name=study, storage=storage_url).get_trials(deepcopy=False)
        trials_ = [t for t in all_trials if t.state.name == "COMPLETE" and "duplicate_of" not in trial_record(t)]
        first = min(t.datetime_start for t in trials_)
        last = max(t.datetime_complete for t in trials_)
        span = (last - first).total_seconds()
        done = len(trials_)
        return {"storage": storage_url.split(":")[0].split("+")[0], "workers": workers, "evaluator": evaluator, "trials": done,
                "not_complete_or_duplicate": len(all_trials) - done,
                "span_s": round(span, 2), "wall_s": round(wall, 2), "trials_per_s": round(done / span, 2) if span else None,
                "trials_per_min": round(60 * done / span, 1) if span else None,
                "ms_per_trial_per_worker": round(1000 * span * workers / done, 1) if done else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trivial-trials", type=int, default=240)
    parser.add_argument("--digits-trials", type=int, default=12)
    args = parser.parse_args()
    rows = []
    with postgres() as pg:
        rows.append(run(None, 1, args.trivial_trials, "sqlite-1", "trivial"))
        for n in (1, 2, 4, 8):
            rows.append(run(pg, n, args.trivial_trials, f"pg-trivial-{n}", "trivial"))
        for n in (1, 2, 4):
            rows.append(run(pg, n, args.digits_trials, f"pg-digits-{n}", "digits"))
    for r in rows:
        print(json.dumps(r), file=sys.stderr)
    load = os.getloadavg()
    out = {"rows": rows, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_after": load}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "workers.json").write_text(json.dumps(out, indent=2))
    lines = ["# Workers: one study, N local worker processes", "",
             f"`search --workers N` on a machine with {os.cpu_count()} CPU cores (load average after the runs: "
             f"{', '.join(f'{x:.1f}' for x in load)}). Rates from the trials' own start/complete times (process start-up excluded), over COMPLETE trials that were trained (duplicates answered from the study are left out).", "",
             "| storage | evaluator | workers | trials | span s | trials/min | trials/s | ms per trial per worker |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r.get('storage', '?')} | {r['evaluator']} | {r['workers']} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['storage']} | {r['evaluator']} | {r['workers']} | {r['trials']} | {r['span_s']} | {r['trials_per_min']} | "
                     f"{r['trials_per_s']} | {r['ms_per_trial_per_worker']} |")
    lines += ["", "The `trivial` rows are the engine and storage alone (the overhead per trial is their last column at 1 worker); "
              "the 8-worker trivial row is the storage-bound ceiling on this machine. With 2 cores, more than 2 workers "
              "compete for the CPU, so the digits rows cannot scale past 2 here."]
    (RESULTS / "workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
