"""Start-up of a search as a user meets it: `python -m nas_core search` in a new workspace, MLflow tracking on (the
default), until its first trial starts and until it exits.

Usage: python benchmarks/startup.py [--repeats 10] [--baseline-tree DIR] [--name startup]
Writes benchmarks/results/<name>.json and <name>.md.

Each repeat runs the tiny digits search (2 trials of 1 epoch on 300 images) in a fresh process and a fresh workspace;
the first trial's start is read from its ``--events-jsonl`` (``TrialStarted``), measured from just before the process
is spawned. ``--baseline-tree`` (a checkout of older code, e.g. ``git worktree add /tmp/old 45c3946``) runs the same
command on that code in alternation with this checkout, so both see the same machine; the difference of each pair is
judged by a paired bootstrap. The first repeat of this checkout runs with an empty template cache (``MOCA_CACHE_DIR``):
a user's very first search builds the MLflow store template (``nas_core.tracking``); the later ones copy it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
COMMAND = ["search", "--dataset", "digits", "--train-samples", "300", "--epochs", "1", "--trials", "2", "--seed", "0", "--quiet"]


def one_run(tree: Path, work: Path, cache: Path) -> dict[str, float]:
    """Seconds from spawn to the first trial's start, and to the process's exit, of one search in a new workspace."""
    ws = Path(tempfile.mkdtemp(dir=work))
    events = ws / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": str(tree), "MOCA_CACHE_DIR": str(cache)}
    argv = [sys.executable, "-m", "nas_core", *COMMAND, "--workspace", str(ws), "--study", "s", "--events-jsonl", str(events)]
    t0 = time.time()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    end = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: the search in {tree} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    first = next(json.loads(line)["timestamp"] for line in events.read_text().splitlines() if '"TrialStarted"' in line)
    shutil.rmtree(ws, ignore_errors=True)
    return {"first_trial_s": round(first - t0, 3), "exit_s": round(end, 3), "load1": round(os.getloadavg()[0], 2)}


def paired_bootstrap(diffs: list[float], n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean of ``diffs`` (resampled in pairs)."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--baseline-tree", type=Path, default=None, help="a checkout of older code to compare with, run alternately")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--name", default="startup", help="the result files' name (e.g. startup_loaded for a run beside other work)")
    args = ap.parse_args()
    work = ROOT / "benchmarks" / "work" / "startup"
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))  # empty: the first run of this checkout builds the template
    first_ever = one_run(ROOT, work, cache)
    print(f"this checkout, empty template cache: first trial at {first_ever['first_trial_s']:.2f} s, exit {first_ever['exit_s']:.2f} s")
    rows: list[dict[str, object]] = []
    for i in range(args.repeats):
        pair = [("this", ROOT), ("baseline", args.baseline_tree)] if args.baseline_tree else [("this", ROOT)]
        if i % 2:
            pair.reverse()  # alternate which goes first, so neither always runs right after the other's exit
        for name, tree in pair:
            assert tree is not None
            row = {"repeat": i, "code": name, **one_run(tree, work, cache)}
            rows.append(row)
            print(row, flush=True)
    shutil.rmtree(cache, ignore_errors=True)

    def stat(code: str, key: str) -> dict[str, float]:
        values = [float(r[key]) for r in rows if r["code"] == code]  # type: ignore[arg-type]
        return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}

    summary: dict[str, object] = {"this": {k: stat("this", k) for k in ("first_trial_s", "exit_s")}}
    if args.baseline_tree:
        summary["baseline"] = {k: stat("baseline", k) for k in ("first_trial_s", "exit_s")}
        for key in ("first_trial_s", "exit_s"):
            diffs = [float(a[key]) - float(b[key]) for a, b in zip(  # type: ignore[arg-type]
                [r for r in rows if r["code"] == "this"], [r for r in rows if r["code"] == "baseline"], strict=True)]
            lo, hi = paired_bootstrap(diffs)
            summary[f"{key}_this_minus_baseline"] = {"mean": round(statistics.fmean(diffs), 2), "ci95": [round(lo, 2), round(hi, 2)]}
    out = {"command": "python -m nas_core " + " ".join(COMMAND) + " --workspace NEW --study s", "repeats": args.repeats,
           "baseline_tree": str(args.baseline_tree) if args.baseline_tree else None, "cpus": os.cpu_count(),
           "machine": platform.processor() or platform.machine(), "first_ever": first_ever, "summary": summary, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# Start-up of a search in a new workspace", "",
             f"`{out['command']}` (MLflow tracking on), a fresh process and workspace per run, {args.repeats} runs per code"
             + (", alternating with the baseline code" if args.baseline_tree else "") + ". `benchmarks/startup.py`.", "",
             "| code | first trial starts (median, min-max) | process exits (median, min-max) |", "|---|---:|---:|"]
    for code in ("this", "baseline") if args.baseline_tree else ("this",):
        s = summary[code]
        assert isinstance(s, dict)
        lines.append(f"| {code} | {s['first_trial_s']['median']:.2f} s ({s['first_trial_s']['min']:.2f}-{s['first_trial_s']['max']:.2f}) "
                     f"| {s['exit_s']['median']:.2f} s ({s['exit_s']['min']:.2f}-{s['exit_s']['max']:.2f}) |")
    lines += ["", f"- The very first search of this code with an empty template cache (it builds the MLflow store template): first "
              f"trial at {first_ever['first_trial_s']:.2f} s, exit at {first_ever['exit_s']:.2f} s."]
    for key, label in (("first_trial_s", "first trial"), ("exit_s", "exit")):
        d = summary.get(f"{key}_this_minus_baseline")
        if isinstance(d, dict):
            lines.append(f"- {label}, this minus baseline, paired: {d['mean']:+.2f} s (95 % bootstrap {d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f}).")
    loads = [float(r["load1"]) for r in rows]  # type: ignore[arg-type]
    lines.append(f"- Load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}; {os.cpu_count()} CPUs.")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
