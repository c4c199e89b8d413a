"""Two arms of ``digits_default.py`` run over the same seeds, compared seed by seed with a paired bootstrap.

``digits_default.py --extra`` runs the README command with extra flags (e.g. ``--fidelity-option screen=off``); two such
runs over the same seeds are the two arms. This writes ``<name>.md`` / ``<name>.json``: per seed the test accuracy, the
best trial, the final training's epochs, the wall time and the trials' outcome of each arm, then the paired differences
(arm A minus arm B) of test accuracy and wall time with their 95 % bootstrap intervals (``startup.paired_bootstrap``),
and how many seeds each arm meets the goal (>= 0.99 test within 120 s).

    python benchmarks/paired_arms.py --a results/digits_screen_on.json --b results/digits_screen_off.json \
        --labels "screen on,screen off" --name digits_screening
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from startup import paired_bootstrap

ROOT = Path(__file__).resolve().parent


def compare(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str]) -> dict[str, Any]:
    rows_a = {r["seed"]: r for r in a["per_seed"]}
    rows_b = {r["seed"]: r for r in b["per_seed"]}
    seeds = sorted(set(rows_a) & set(rows_b))
    paired = [(rows_a[s], rows_b[s]) for s in seeds if "test_accuracy" in rows_a[s] and "test_accuracy" in rows_b[s]]
    acc = [ra["test_accuracy"] - rb["test_accuracy"] for ra, rb in paired]
    wall = [ra["wall_s"] - rb["wall_s"] for ra, rb in paired]
    return {"labels": list(labels), "seeds": seeds,
            "met": {labels[0]: sum(bool(rows_a[s].get("goal_met")) for s in seeds), labels[1]: sum(bool(rows_b[s].get("goal_met")) for s in seeds)},
            "test_accuracy_diff_mean": statistics.fmean(acc) if acc else None,
            "test_accuracy_diff_ci95": paired_bootstrap(acc) if acc else None,
            "wall_s_diff_mean": statistics.fmean(wall) if wall else None,
            "wall_s_diff_ci95": paired_bootstrap(wall) if wall else None,
            "better": sum(d > 0 for d in acc), "worse": sum(d < 0 for d in acc), "same": sum(d == 0 for d in acc)}


def markdown(result: dict[str, Any], a: dict[str, Any], b: dict[str, Any], title: str) -> str:
    la, lb = result["labels"]
    rows_a = {r["seed"]: r for r in a["per_seed"]}
    rows_b = {r["seed"]: r for r in b["per_seed"]}

    def cell(r: dict[str, Any]) -> str:
        if "test_accuracy" not in r:
            return f"failed: {r.get('error', '')} | - | - | {r['wall_s']:.0f}"
        line = r.get("search_line", "").split(" (stopped")[0].replace(" failed in", " failed,").rsplit(",", 1)[0]
        return f"{r['test_accuracy']:.4f} | {r.get('trial')} | {r.get('final_epochs') or '-'} | {r['wall_s']:.0f} ({line})"

    digits = "--dataset digits" in rows_a[result["seeds"][0]]["command"]
    lines = [f"# {title}", "",
             f"Arm A: {la}; arm B: {lb}. The README command per seed, a fresh process and workspace each "
             f"(`{rows_a[result['seeds'][0]]['command'].split(' --workspace')[0]}` ...); both arms ran at the same time, one "
             "core each, on the shared 2-core machine." + (" Goal: test accuracy >= 0.99 within 120 s." if digits else ""), "",
             *([f"**Goal met: {la} {result['met'][la]} of {len(result['seeds'])}, {lb} {result['met'][lb]} of {len(result['seeds'])}.**", ""]
               if digits else []),
             f"| seed | {la}: test | best trial | final epochs | wall s (trials) | {lb}: test | best trial | final epochs | wall s (trials) |",
             "|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for s in result["seeds"]:
        lines.append(f"| {s} | {cell(rows_a[s])} | {cell(rows_b[s])} |")
    if result["test_accuracy_diff_ci95"]:
        lo, hi = result["test_accuracy_diff_ci95"]
        wlo, whi = result["wall_s_diff_ci95"]
        lines += ["", f"Paired over seeds, A minus B: test accuracy {result['test_accuracy_diff_mean'] * 100:+.2f} pt (95 % bootstrap "
                      f"{lo * 100:+.2f} to {hi * 100:+.2f}); A better on {result['better']} seeds, worse on {result['worse']}, the same on "
                      f"{result['same']}. Wall time {result['wall_s_diff_mean']:+.1f} s ({wlo:+.1f} to {whi:+.1f})."
                      + (" One test image of 270 is 0.37 pt." if digits else "")]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True)
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--labels", default="A,B")
    ap.add_argument("--title", default="Digits: two arms of the README command, paired by seed")
    ap.add_argument("--name", default="digits_paired")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args()
    a, b = json.loads(args.a.read_text()), json.loads(args.b.read_text())
    la, lb = (x.strip() for x in args.labels.split(",", 1))
    result = compare(a, b, (la, lb))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"{args.name}.md").write_text(markdown(result, a, b, args.title))
    print((args.out / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
