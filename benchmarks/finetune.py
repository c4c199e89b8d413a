"""Fine-tune policies of the cached fidelity's second phase, compared on the *same* finalists.

For each seed a 20-trial `--space modular --fidelity cached` digits search runs once; then, per policy, the
finalists' proxy weights are rebuilt (the proxy is deterministic: the script checks that it reproduces each
finalist's recorded proxy accuracy) and the finalists are fine-tuned again with that policy's options. So the
policies differ only in how they fine-tune, not in which networks a noisy search happened to return.
Writes results/finetune.json and .md.

    python benchmarks/finetune.py [--seeds 0,1,2,3,4,5] [--threads 1] [--policies 'default,batch 128']
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

POLICIES: dict[str, dict[str, Any]] = {
    "to an early stop (default before)": {"finetune_epochs": 20},
    "5 epochs, cosine (default)": {},
    "4 epochs, cosine": {"finetune_epochs": 4},
    "3 epochs, cosine": {"finetune_epochs": 3},
    "to an early stop, patience 2": {"finetune_epochs": 20, "finetune_patience": 2},
    "5 epochs, cosine, batch 128": {"finetune_batch_size": 128},
    "5 epochs, cosine, batch 128, lr 2e-3": {"finetune_batch_size": 128, "finetune_lr": 2e-3},
    "top 1 only, 5 epochs, cosine": {"finetune_top_k": 1},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0,1,2,3,4,5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--policies", default="", help="comma-separated substrings: run only the policies whose name contains one (default all)")
    ap.add_argument("--workspace", default=str(ROOT / "work" / "finetune"))
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args()

    import optuna
    import torch

    from nas_core import moca
    from nas_core.data import load_dataset
    from nas_core.evaluate import EvalContext
    from nas_core.export import FINAL_RESULT_PREFIX
    from nas_core.genotype import ModelConfig
    from nas_core.library import build_library
    from nas_core.schema.record import trial_record
    from nas_core.search import SearchConfig, _save_weights, run_search
    from nas_core.workspace import default_storage, study_dir

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ws = Path(args.workspace)
    shutil.rmtree(ws, ignore_errors=True)
    build_library(dataset="digits", workspace=ws, minutes=1.0, seed=0, emit=print)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    cpu = torch.device("cpu")
    studies = {}
    for seed in seeds:
        cfg = SearchConfig(dataset="digits", trials=20, epochs=20, workspace=str(ws), space="modular", fidelity="cached",
                           study=f"seed{seed}", seed=seed, tracking=False)
        run_search(cfg)
        studies[seed] = cfg
    results: dict[str, Any] = {}
    wanted = [w.strip() for w in args.policies.split(",") if w.strip()]
    for name, opts in POLICIES.items():
        if wanted and not any(w in name for w in wanted):
            continue
        per_seed = []
        for seed, base in studies.items():
            cfg = replace(base, fidelity_options=opts)
            study = optuna.load_study(study_name=cfg.study, storage=default_storage(ws))
            data = load_dataset("digits", seed=seed, cache_dir=ws / "cache" / "data")
            for trial in moca._top_k(study, int(opts.get("finetune_top_k", 2))):
                mc = ModelConfig.from_dict(trial_record(trial)["config"])
                proxy = moca.cached_fidelity(EvalContext(arch=mc.architecture, recipe=mc.training, data=data, device=cpu,
                                                         seed=seed + trial.number, workspace=ws))
                if abs(proxy.metrics["val_accuracy"] - trial_record(trial)["metrics"]["val_accuracy"]) > 1e-9:
                    raise SystemExit(f"seed {seed} trial {trial.number}: the proxy did not reproduce its recorded accuracy")
                _save_weights(study_dir(ws, cfg.study) / "weights" / f"trial_{trial.number}.safetensors", proxy.state_dict)
            for key in [k for k in study.user_attrs if k.startswith(FINAL_RESULT_PREFIX)]:
                study.set_user_attr(key, None)  # forget the search's own fine-tune, so this one runs (None is no record)
            study.set_user_attr("final_results", {})
            t = time.perf_counter()
            done = moca.finalize_top_k(study=study, config=cfg, data=data, device=cpu, workspace=ws)
            seconds = time.perf_counter() - t
            best = max(done, key=lambda d: (d["final_accuracy"], -d["trial"]))  # how the best config is chosen
            per_seed.append({"seed": seed, "seconds": seconds, "best_test_accuracy": best["test_accuracy"],
                             "finalists": [{k: d[k] for k in ("trial", "final_accuracy", "test_accuracy", "seconds")} for d in done]})
            print(name, json.dumps(per_seed[-1]), flush=True)
        accs = [r["best_test_accuracy"] for r in per_seed]
        results[name] = {"options": opts, "seconds": sum(r["seconds"] for r in per_seed), "mean_test_accuracy": statistics.mean(accs),
                         "min_test_accuracy": min(accs), "per_seed": per_seed}
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "finetune.json").write_text(json.dumps({"seeds": seeds, "threads": args.threads, "policies": results}, indent=2))
    # "vs before" is against the old default when it ran, otherwise against the first policy run (--policies)
    base_name = "to an early stop (default before)" if "to an early stop (default before)" in results else next(iter(results))
    base = results[base_name]["seconds"]
    md = ["# Fine-tune policies on the same finalists (digits, cached fidelity)", "",
          f"Seeds {seeds}: one 20-trial modular cached search each (20 max epochs), then every policy fine-tunes the same top 2 "
          f"finalists from the same rebuilt proxy weights. {args.threads} torch thread(s). Best = the finalist with the best "
          "final validation accuracy, as the best config is chosen.", "",
          f"| policy | fine-tune s (all seeds) | vs {'before' if base_name.startswith('to an early stop (default') else base_name} | "
          "mean best test acc | min best test acc | per seed |",
          "|---|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        accs = ", ".join(f"{x['best_test_accuracy']:.3f}" for x in r["per_seed"])
        md.append(f"| {name} | {r['seconds']:.1f} | {r['seconds'] / base:.2f} | {r['mean_test_accuracy']:.4f} | "
                  f"{r['min_test_accuracy']:.4f} | {accs} |")
    (dest / "finetune.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
