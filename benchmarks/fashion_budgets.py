"""What the default path hands over when it is given less than an hour: Fashion-MNIST at shorter --timeout budgets.

``fashion_default.py``'s anytime table asks what each arm holds at 900, 1,800 and 3,600 s of one hour-long run. A search
whose hour is one training holds nothing until that training ends (its one-cycle schedule runs to the end of the hour),
so its 900 and 1,800 s cells are empty. The other reading of "anytime" is the one a user with less time lives: they run
``search --timeout 900`` (or 1800), and the planner fits the one training (and the small head) to that budget. This runs
the default arm (``fashion_default.py --arm default``, a real CLI search with nothing beside it) once per budget and
writes the table beside the reference's held accuracy at the same marks (from an earlier ``fashion_default`` JSON).

    python benchmarks/fashion_budgets.py --budgets 900 1800 --seed 9 --threads 2 [--baselines results/fashion_default.json]
    python benchmarks/fashion_budgets.py --budgets 900 1800 --seed 9 --from-logs A.log B.log   # arms already run, in order

Writes results/fashion_budgets_seedN.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fashion_default import held_at, last_result  # type: ignore[import-not-found]  # beside this script (run as python benchmarks/...)

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


def _result(text: str, where: str) -> dict[str, Any]:
    found = last_result(text)
    if found is None:
        raise SystemExit(f"error: {where} has no RESULT line; pass the output of a finished fashion_default.py --arm default run")
    return found


def _plan(workspace: Path) -> str:
    log = workspace / "default" / "cli.log"
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("plan: ")] if log.exists() else []
    return lines[-1][len("plan: "):] if lines else ""


def run_arm(budget: int, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    workspace = Path(args.workspace) / f"b{budget}"
    cmd = [sys.executable, str(ROOT / "fashion_default.py"), "--arm", "default", "--budget-s", str(budget), "--seed", str(args.seed),
           "--threads", str(args.threads), "--workspace", str(workspace)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return _result(out.stdout, " ".join(cmd)), _plan(workspace)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, nargs="+", default=[900, 1800])
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workspace", default=str(ROOT / "work" / "fashion_budgets"))
    ap.add_argument("--baselines", default=str(RESULTS / "fashion_default.json"), help="a fashion_default JSON with the reference arm")
    ap.add_argument("--from-logs", nargs="*", default=None, metavar="LOG",
                    help="the outputs of fashion_default.py --arm default runs already made, one per budget in order; their "
                         "workspaces (for the plan) are read from the RESULT's best_config path")
    args = ap.parse_args()
    if args.from_logs is not None and len(args.from_logs) != len(args.budgets):
        print(f"error: {len(args.from_logs)} logs for {len(args.budgets)} budgets; pass one log per budget", file=sys.stderr)
        return 2
    reference = json.loads(Path(args.baselines).read_text())["arms"]["reference"]
    rows = []
    for i, budget in enumerate(args.budgets):
        if args.from_logs is not None:
            arm = _result(Path(args.from_logs[i]).read_text(), args.from_logs[i])
            best = Path(arm["best_config"]) if arm.get("best_config") else None
            plan = _plan(best.parent.parent.parent) if best else ""
        else:
            arm, plan = run_arm(budget, args)
        final, small = arm.get("final") or {}, arm.get("pareto_le_100k") or {}
        rows.append({"budget_s": budget, "wall_s": round(float(arm["wall_s"]), 1), "exit_code": arm.get("exit_code"),
                     "test_accuracy": final.get("test_accuracy"), "params": final.get("params"), "summary": final.get("summary"),
                     "small_test_accuracy": small.get("test_accuracy"), "small_params": small.get("params"),
                     "reference_held": held_at(reference["anytime"], budget), "plan": plan, "trials": arm.get("trials")})
    out = {"seed": args.seed, "threads": args.threads, "baselines": Path(args.baselines).name, "rows": rows}
    stem = f"fashion_budgets_seed{args.seed}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")

    def acc(v: Any) -> str:
        return "-" if v is None else f"{float(v):.4f}"

    md = [f"# Fashion-MNIST: the default path at shorter budgets (seed {args.seed}, {args.threads} threads, nothing beside it)", "",
          "Each row is `python -m nas_core search --dataset fashion-mnist --timeout B` as a user runs it "
          "(`benchmarks/fashion_budgets.py`, through `fashion_default.py --arm default`). The reference column is what the "
          f"one-cycle 4-conv BN reference of `{Path(args.baselines).name}` held at that second of its own run.", "",
          "| --timeout | wall | test | params | <= 100K point on the front | reference held then |", "|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        small = f"{acc(r['small_test_accuracy'])} ({int(r['small_params']):,})" if r["small_params"] else "none"
        params = f"{int(r['params']):,}" if r["params"] else "-"
        md.append(f"| {r['budget_s']} s | {r['wall_s']:.0f} s | {acc(r['test_accuracy'])} | {params} | {small} | {acc(r['reference_held'])} |")
    md += ["", *[f"- {r['budget_s']} s plan: {r['plan']}" for r in rows], ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
