"""Done-when check on digits: a 20-trial `--space modular --fidelity cached` search vs the same search with
`--fidelity train`, measured in one run, and the test accuracy of the cached search's best config after its
fine-tune phase. ``--seeds 0,1,2`` repeats the pair per seed (each with its own library build) and reports
every one; the first seed is the headline. Writes results/digits_speed.json and .md.

    python benchmarks/digits_speed.py [--trials 20] [--threads 1] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent


def measure(seed: int, ws: Path, args: Any) -> dict[str, Any]:
    """Library build, warm-up, then the cached and the train search on one workspace; their figures."""
    from nas_core.library import build_library
    from nas_core.moca import cache_stats
    from nas_core.search import SearchConfig, run_search

    shutil.rmtree(ws, ignore_errors=True)
    t0 = time.perf_counter()
    lib = build_library(dataset="digits", workspace=ws, minutes=args.library_minutes, seed=seed, emit=print)
    library_s = time.perf_counter() - t0
    # Warm-up: the first search in a process pays one-off imports (MLflow, sklearn, optimizers) and the creation of the
    # workspace's MLflow and Optuna databases, which both timed searches then share; pay them before timing.
    run_search(SearchConfig(dataset="digits", trials=1, epochs=1, workspace=str(ws), space="modular", fidelity="train",
                            train_samples=100, study="warmup"))
    runs = {}
    for fidelity in ("cached", "train"):
        cfg = SearchConfig(dataset="digits", trials=args.trials, epochs=args.epochs, workspace=str(ws), space="modular",
                           fidelity=fidelity, study=f"digits-modular-{fidelity}", seed=seed)
        t = time.perf_counter()
        res = run_search(cfg)
        wall = time.perf_counter() - t
        best = json.loads(Path(res.best_config).read_text())
        runs[fidelity] = {"wall_s": wall, "n_complete": res.n_complete, "n_failed": res.n_failed,
                          "best_test_accuracy": best["metrics"]["test_accuracy"], "best_val_accuracy": best["metrics"]["val_accuracy"],
                          "best_proxy_accuracy": best["metrics"].get("proxy_accuracy"), "best_final_accuracy": best["metrics"].get("final_accuracy"),
                          "best_params": best["metrics"]["params"], "best_summary": res.best_config}
        if fidelity == "cached":
            runs[fidelity]["feature_cache"] = cache_stats(ws).to_dict()
        print(seed, fidelity, json.dumps(runs[fidelity]), flush=True)
    out = {
        "dataset": "digits", "space": "modular", "seed": seed, "trials": args.trials, "epochs": args.epochs, "threads": args.threads,
        "library_build_s": library_s, "library_blocks": len(lib), "runs": runs,
        "wall_ratio_cached_over_train": runs["cached"]["wall_s"] / runs["train"]["wall_s"],
        "wall_ratio_including_library_build": (runs["cached"]["wall_s"] + library_s) / runs["train"]["wall_s"],
        "goal": "cached wall <= 0.2 x train wall, best config >= 0.97 test accuracy after fine-tune",
    }
    out["goal_met"] = out["wall_ratio_cached_over_train"] <= 0.2 and runs["cached"]["best_test_accuracy"] >= 0.97
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--library-minutes", type=float, default=1.0)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds of the library build and both searches (default 0)")
    ap.add_argument("--workspace", default=str(ROOT / "work" / "digits_speed"))
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = [measure(seed, Path(args.workspace) if i == 0 else Path(args.workspace) / f"seed{seed}", args) for i, seed in enumerate(seeds)]
    out = {**results[0], "per_seed": results}
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "digits_speed.json").write_text(json.dumps(out, indent=2))
    c, t = out["runs"]["cached"], out["runs"]["train"]
    md = [
        "# Digits: cached vs train fidelity (20-trial modular search)", "",
        f"Measured in one run per seed (after a warm-up search that pays the one-off imports), {args.threads} torch thread(s), same seed for "
        f"both searches, sampler (tpe), objectives (accuracy, latency_ms), {args.epochs} max epochs, MLflow tracking on, defaults otherwise "
        "(cached: proxy trains everything after the stem for one epoch; the top 2 are fine-tuned end to end).", "",
        f"Seed {out['seed']}:", "",
        "| fidelity | wall s | complete | best val acc | best test acc | proxy acc | params |", "|---|---:|---:|---:|---:|---:|---:|",
        f"| cached | {c['wall_s']:.1f} | {c['n_complete']} | {c['best_val_accuracy']:.4f} | {c['best_test_accuracy']:.4f} | {c['best_proxy_accuracy']} | {c['best_params']:,} |",
        f"| train | {t['wall_s']:.1f} | {t['n_complete']} | {t['best_val_accuracy']:.4f} | {t['best_test_accuracy']:.4f} | - | {t['best_params']:,} |", "",
        f"Wall ratio cached/train: **{out['wall_ratio_cached_over_train']:.3f}** (goal <= 0.2); including the one-off library build "
        f"({out['library_build_s']:.1f} s, {out['library_blocks']} blocks): {out['wall_ratio_including_library_build']:.3f}.",
        f"Feature cache: {c['feature_cache']}.", "",
    ]
    if len(results) > 1:
        md += ["Every seed (each its own library build and pair of searches):", "",
               "| seed | cached s | train s | ratio | cached best test acc | train best test acc | goal met |", "|---:|---:|---:|---:|---:|---:|---|"]
        for r in results:
            rc, rt = r["runs"]["cached"], r["runs"]["train"]
            md.append(f"| {r['seed']} | {rc['wall_s']:.1f} | {rt['wall_s']:.1f} | {r['wall_ratio_cached_over_train']:.3f} | "
                      f"{rc['best_test_accuracy']:.4f} | {rt['best_test_accuracy']:.4f} | {'yes' if r['goal_met'] else 'no'} |")
        md.append("")
    (dest / "digits_speed.md").write_text("\n".join(md))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
