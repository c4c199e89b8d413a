"""Throughput of one study with N local workers, SQLite vs PostgreSQL, and the storage's ceiling.

Starts a PostgreSQL server on loopback (Debian's `postgresql`, initdb + pg_ctl in a temporary folder), then runs
`python -m nas_core search --workers N` as a user would, with
- the `trivial` evaluator (benchmarks/plugins/moca_trivial.py, loaded through MOCA_PLUGINS): the engine and the
  storage alone — overhead per trial and trials/s, up to 8 workers (the storage-bound ceiling);
- the same trivial runs through Optuna's gRPC storage proxy (`python -m nas_core storage-proxy` in front of the same
  PostgreSQL, workers on `--storage grpc://127.0.0.1:PORT`): does the proxy raise the ceiling?
- real digits training (2 epochs, 600 training images): trials per minute with 1, 2 and 4 workers.
Rates are taken from the trials' own start/complete times in the study (process start-up excluded).

Usage: python benchmarks/workers.py [--trivial-trials 240] [--digits-trials 12] [--skip-digits]
(--skip-digits keeps the digits rows of the last results file, marked as carried over.)
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


@contextmanager
def grpc_proxy(pg: str):
    """`python -m nas_core storage-proxy` in front of ``pg`` on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "nas_core", "storage-proxy", "--storage", pg, "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"error: the storage proxy exited: {proc.communicate()[1].strip()[-500:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("error: the storage proxy did not listen within 120 s")
            time.sleep(0.1)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def run(storage: str | None, workers: int, trials: int, study: str, evaluator: str, *, read_storage: str | None = None) -> dict:
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
            return {"storage": storage_url.split(":")[0], "workers": workers, "evaluator": evaluator,
                    "error": proc.stderr.strip().splitlines()[-1:]}
        all_trials = optuna.load_study(study_name=study, storage=read_storage or storage_url).get_trials(deepcopy=False)
        trials_ = [t for t in all_trials if t.state.name == "COMPLETE" and "duplicate_of" not in trial_record(t)]
        first = min(t.datetime_start for t in trials_)
        last = max(t.datetime_complete for t in trials_)
        span = (last - first).total_seconds()
        done = len(trials_)
        return {"storage": "grpc proxy -> postgresql" if storage_url.startswith("grpc") else storage_url.split(":")[0].split("+")[0],
                "workers": workers, "evaluator": evaluator, "trials": done,
                "not_complete_or_duplicate": len(all_trials) - done,
                "span_s": round(span, 2), "wall_s": round(wall, 2), "trials_per_s": round(done / span, 2) if span else None,
                "trials_per_min": round(60 * done / span, 1) if span else None,
                "ms_per_trial_per_worker": round(1000 * span * workers / done, 1) if done else None}


def summary(rows: list[dict]) -> list[str]:
    """Engine overhead per trial (1 worker) and the 8-worker ceiling per storage, and whether the proxy raised it."""
    def get(storage: str, n: int) -> dict | None:
        return next((r for r in rows if r.get("storage") == storage and r["workers"] == n and r["evaluator"] == "trivial"
                     and "error" not in r), None)

    names = ["sqlite", "postgresql", "grpc proxy -> postgresql"]
    out = ["| storage | overhead per trial, 1 worker (ms) | ceiling, 8 workers (trials/s) | best trials/s (workers) |", "|---|---|---|---|"]
    for name in names:
        one, eight = get(name, 1), get(name, 8)
        best = max((r for r in rows if r.get("storage") == name and r["evaluator"] == "trivial" and "error" not in r),
                   key=lambda r: r["trials_per_s"] or 0, default=None)
        out.append(f"| {name} | {one['ms_per_trial_per_worker'] if one else 'n/a'} | {eight['trials_per_s'] if eight else 'n/a'} | "
                   f"{best['trials_per_s'] if best else 'n/a'} ({best['workers'] if best else '-'}) |")
    pg8, grpc8 = get("postgresql", 8), get("grpc proxy -> postgresql", 8)
    best = {name: max((r["trials_per_s"] or 0 for r in rows if r.get("storage") == name and r["evaluator"] == "trivial"
                       and "error" not in r), default=0) for name in names}
    if pg8 and grpc8:
        ratio = grpc8["trials_per_s"] / pg8["trials_per_s"]
        best_ratio = best["grpc proxy -> postgresql"] / best["postgresql"] if best["postgresql"] else float("nan")
        out += ["", f"At 8 workers the gRPC proxy gives {ratio:.2f}x the rate of PostgreSQL direct; its best rate over 1-8 workers "
                    f"is {best_ratio:.2f}x PostgreSQL's best. The proxy " + ("raises" if best_ratio > 1.1 else "does not raise")
                    + " the ceiling here (raising it would take more than 1.1x on this shared machine)."]
    else:
        errors = [r for r in rows if "error" in r]
        out += ["", f"Missing rows (errors): {errors}"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trivial-trials", type=int, default=240)
    parser.add_argument("--digits-trials", type=int, default=12)
    parser.add_argument("--skip-digits", action="store_true", help="keep the digits rows of the last results file")
    parser.add_argument("--render", action="store_true", help="only rewrite workers.md from workers.json")
    args = parser.parse_args()
    if args.render:
        out = json.loads((RESULTS / "workers.json").read_text())
        render(out["rows"], out["machine"]["load_after"])
        return 0
    rows = []
    with postgres() as pg:
        rows.append(run(None, 1, args.trivial_trials, "sqlite-1", "trivial"))
        for n in (1, 2, 4, 8):
            rows.append(run(pg, n, args.trivial_trials, f"pg-trivial-{n}", "trivial"))
        with grpc_proxy(pg) as proxy:
            for n in (1, 2, 4, 8):
                rows.append(run(proxy, n, args.trivial_trials, f"grpc-trivial-{n}", "trivial", read_storage=pg))
        if args.skip_digits:
            old = json.loads((RESULTS / "workers.json").read_text()) if (RESULTS / "workers.json").exists() else {"rows": []}
            rows += [{**r, "carried_over": True} for r in old["rows"] if r.get("evaluator") == "digits"]
        else:
            for n in (1, 2, 4):
                rows.append(run(pg, n, args.digits_trials, f"pg-digits-{n}", "digits"))
    for r in rows:
        print(json.dumps(r), file=sys.stderr)
    load = os.getloadavg()
    out = {"rows": rows, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_after": load}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "workers.json").write_text(json.dumps(out, indent=2))
    render(rows, load)
    return 0


def render(rows: list[dict], load: list[float]) -> None:
    """workers.md from the rows, with the reading kept by hand in benchmarks/results/workers_reading.md appended."""
    lines = ["# Workers: one study, N local worker processes", "",
             f"`search --workers N` on a machine with {os.cpu_count()} CPU cores (load average after the runs: "
             f"{', '.join(f'{x:.1f}' for x in load)}). Rates from the trials' own start/complete times (process start-up excluded), over COMPLETE trials that were trained (duplicates answered from the study are left out).", "",
             "| storage | evaluator | workers | trials | span s | trials/min | trials/s | ms per trial per worker |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r.get('storage', '?')} | {r['evaluator']} | {r['workers']} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['storage']} | {r['evaluator']}{' (carried over from the last run)' if r.get('carried_over') else ''} | "
                     f"{r['workers']} | {r['trials']} | {r['span_s']} | {r['trials_per_min']} | "
                     f"{r['trials_per_s']} | {r['ms_per_trial_per_worker']} |")
    lines += ["", *summary(rows)]
    lines += ["", "The `trivial` rows are the engine and storage alone (the overhead per trial is their last column at 1 worker); "
              "the 8-worker trivial row is the storage-bound ceiling on this machine. With 2 cores, more than 2 workers "
              "compete for the CPU, so the digits rows cannot scale past 2 here."]
    reading = RESULTS / "workers_reading.md"
    if reading.exists():
        lines += ["", reading.read_text().rstrip()]
    (RESULTS / "workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
