"""How well does each cheap fidelity rank architectures? Kendall tau / Spearman against full training, and cost.

30 architectures sampled (seeded) from the ``modular`` space on a Fashion-MNIST subset and bound to a
module library built on the same training subset, so every fidelity scores the same networks. Ground
truth: each trained from scratch for a fixed number of epochs (same recipe for all), accuracy on a
held-out subset of the official test set; a second ground truth trains the same networks end to end from
their library weights (the product's fine-tune path), same recipe. Fidelities: ``cached`` (MoCAFT, default
options), ``cached-adapters`` (library blocks frozen), each zero-cost proxy, and 1-epoch training. ``cost_ratio`` = fidelity wall time / ground-truth wall time over the 30 networks
(the one-off library build is reported separately). Writes results/fidelity.json (+ fidelity_details.json),
fidelity.md and fidelity.png.

    python benchmarks/fidelity.py [--archs 30] [--epochs 6] [--train 3000] [--max-mflops 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
# The proxy trains for one epoch on 1000 of the training images; its reporting-only test accuracy uses 500
# images (the ranking signal is the validation accuracy). "cached" is the default mode (the stem's features
# cached, every layer after it trained, library blocks from their weights); "cached-adapters" freezes every
# library block and trains only adapters, unmatched blocks and the head.
CACHED_OPTIONS = {"cached_epochs": 1, "cached_train_samples": 1000, "cached_test_samples": 500}
CACHED_VARIANTS = {"cached": {}, "cached-adapters": {"cached_train": "adapters"}}


def sample_architectures(n: int, data: Any, library: Any, *, seed: int, max_mflops: float) -> list[Any]:
    """``n`` distinct library-bound architectures from the modular space under a FLOPs cap."""
    import optuna

    from nas_core.assemble import assemble
    from nas_core.evaluate import count_flops
    from nas_core.moca import bind_architecture
    from nas_core.space import get_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space("modular")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out, seen, tries = [], set(), 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        trial = study.ask()
        arch, _ = space.build(space.sample(trial), input_shape=tuple(data.input_shape), num_classes=data.num_classes, epochs=1)
        study.tell(trial, 0.0)
        bound = bind_architecture(arch, library, dataset=data.name)
        if bound.content_hash() in seen:
            continue
        if count_flops(assemble(bound), tuple(data.input_shape)) > max_mflops * 1e6:
            continue
        seen.add(bound.content_hash())
        out.append(bound)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=6, help="ground-truth training epochs (fixed budget, no early stopping)")
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=32, help="ground-truth and 1-epoch training batch size (default 32)")
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--max-mflops", type=float, default=8.0, help="FLOPs cap of the sampled networks (keeps ground truth affordable)")
    ap.add_argument("--library-min", type=float, default=3.0)
    ap.add_argument("--library-from", default=None, help="copy this library folder instead of building one")
    ap.add_argument("--library-build-s", type=float, default=None, help="with --library-from: the measured build time to report")
    ap.add_argument("--cached-options", default=None, help="JSON object overriding the cached fidelity options")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspace", default=str(ROOT / "work" / "fidelity"))
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args()
    if args.cached_options:
        CACHED_OPTIONS.update(json.loads(args.cached_options))

    import numpy as np
    import torch
    from scipy.stats import kendalltau, spearmanr

    torch.set_num_threads(args.threads)
    from nas_core.assemble import assemble
    from nas_core.data import load_dataset
    from nas_core.evaluate import EvalContext, predict, set_seed, train_model
    from nas_core.genotype import TrainingRecipe
    from nas_core.library import build_library, open_library
    from nas_core.moca import _load_library, cache_stats, cached_fidelity
    from nas_core.proxies import PROXIES, score

    ws = Path(args.workspace)
    shutil.rmtree(ws, ignore_errors=True)
    data = load_dataset("fashion-mnist", seed=args.seed, train_samples=args.train, val_samples=args.val, test_samples=args.test,
                        cache_dir=ws / "cache" / "data")
    t0 = time.perf_counter()
    if args.library_from:  # reuse a library built on the same split seed (its donors never saw validation or test data)
        shutil.copytree(Path(args.library_from), ws / "library")
        library = open_library(ws)
        print(f"library copied from {args.library_from} (built in {args.library_build_s} s by the same command)", flush=True)
    else:
        library = build_library(dataset="fashion-mnist", workspace=ws, minutes=args.library_min, seed=args.seed, data=data, min_steps=100,
                                emit=lambda m: print(m, flush=True))
    library_s = time.perf_counter() - t0 if not args.library_from else float(args.library_build_s or 0.0)
    archs = sample_architectures(args.archs, data, library, seed=args.seed, max_mflops=args.max_mflops)
    print(f"{len(archs)} architectures; library {library_s:.0f} s", flush=True)
    recipe = TrainingRecipe(optimizer="adam", lr=1e-3, batch_size=args.batch_size, epochs=args.epochs, patience=args.epochs + 1)
    cpu = torch.device("cpu")
    rows: list[dict[str, Any]] = []

    def ground_truth(arch: Any, seed: int, *, from_library: bool) -> tuple[float, float]:
        """(test accuracy, training seconds) after the fixed budget, from scratch or from the library weights."""
        set_seed(seed)
        model = assemble(arch)
        if from_library:
            _load_library(model, library)
        t = time.perf_counter()
        train_model(model, data, recipe, device=cpu, seed=seed)
        seconds = time.perf_counter() - t
        return float((predict(model, data.x_test, cpu) == data.y_test.numpy()).mean()), seconds

    for i, arch in enumerate(archs):
        row: dict[str, Any] = {"summary": arch.summary(), "params": sum(p.numel() for p in assemble(arch).parameters())}
        # ground truth: full training from scratch, fixed budget; the second one trains end to end from the
        # library weights (how MoCA trains a finalist)
        row["truth"], row["truth_s"] = ground_truth(arch, args.seed + i, from_library=False)
        row["truth_library"], row["truth_library_s"] = ground_truth(arch, args.seed + i, from_library=True)
        # 1-epoch training
        set_seed(args.seed + i)
        model = assemble(arch)
        t = time.perf_counter()
        hist = train_model(model, data, recipe, device=cpu, seed=args.seed + i, epochs=1)
        row["train-1-epoch_s"] = time.perf_counter() - t
        row["train-1-epoch"] = hist[-1]["val_accuracy"]
        # cached (MoCAFT): timed including the prefix features it has to compute (cache misses)
        for name, extra in CACHED_VARIANTS.items():
            t = time.perf_counter()
            res = cached_fidelity(EvalContext(arch=arch, recipe=recipe, data=data, device=cpu, seed=args.seed + i, workspace=ws,
                                              options={**CACHED_OPTIONS, **extra}))
            row[f"{name}_s"] = time.perf_counter() - t
            row[name] = res.metrics["val_accuracy"]
            row[f"{name}_prefix_layers"] = res.extra["frozen_prefix_layers"]
        # zero-cost proxies on one minibatch of 64
        x, y = data.x_train[:64], data.y_train[:64]
        for name in PROXIES.names():
            set_seed(args.seed + i)
            model = assemble(arch)
            t = time.perf_counter()
            row[name] = score(name, model, x, y)
            row[f"{name}_s"] = time.perf_counter() - t
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    truth = np.array([r["truth"] for r in rows])
    truth_lib = np.array([r["truth_library"] for r in rows])
    truth_s = sum(r["truth_s"] for r in rows)
    result: dict[str, dict[str, float]] = {}
    for name in [*CACHED_VARIANTS, *PROXIES.names(), "train-1-epoch"]:
        values = np.array([r[name] for r in rows])
        cost = sum(r[f"{name}_s"] for r in rows)
        result[name] = {"kendall_tau": float(kendalltau(values, truth).statistic), "spearman": float(spearmanr(values, truth).statistic),
                        "cost_ratio": cost / truth_s, "speedup": truth_s / cost, "seconds": cost,
                        "kendall_tau_library_init": float(kendalltau(values, truth_lib).statistic),
                        "spearman_library_init": float(spearmanr(values, truth_lib).statistic)}
    agreement = float(kendalltau(truth, truth_lib).statistic)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "fidelity.json").write_text(json.dumps(result, indent=2))
    details = {"archs": len(rows), "ground_truth": {"epochs": args.epochs, "recipe": recipe.to_dict(), "train_samples": args.train,
               "val_samples": args.val, "test_samples": args.test, "seconds": truth_s,
               "accuracy_range": [float(truth.min()), float(truth.max())],
               "library_init_seconds": sum(r["truth_library_s"] for r in rows),
               "library_init_accuracy_range": [float(truth_lib.min()), float(truth_lib.max())],
               "kendall_tau_scratch_vs_library_init": agreement},
               "library_build_s": library_s, "library_blocks": len(library), "max_mflops": args.max_mflops, "threads": args.threads,
               "feature_cache": cache_stats(ws).to_dict(), "rows": rows}
    (dest / "fidelity_details.json").write_text(json.dumps(details, indent=2))
    md = ["# Fidelity benchmark: rank correlation with full training (Fashion-MNIST subset)", "",
          f"{len(rows)} architectures sampled (seeded) from the `modular` space (<= {args.max_mflops:g} MFLOPs) and bound to a "
          f"{len(library)}-block library built on the same {args.train}-sample training subset in {library_s:.0f} s (not counted below). "
          f"Ground truth: trained from scratch for {args.epochs} epochs (Adam 1e-3, batch {args.batch_size}), accuracy on {args.test} official test images "
          f"(range {truth.min():.3f}-{truth.max():.3f}); {truth_s:.0f} s in total. A second ground truth trains the same networks with the "
          f"same recipe end to end from their library weights (range {truth_lib.min():.3f}-{truth_lib.max():.3f}); the two ground truths "
          f"agree with Kendall tau {agreement:.3f}, which bounds what any proxy can reach. {args.threads} torch threads.",
          f"Cached options: {CACHED_OPTIONS}, variants {CACHED_VARIANTS}; their cost is the whole fidelity call (prefix features on a miss, "
          "training, validation/test prediction, latency and FLOPs measurement). Zero-cost proxies: one minibatch of 64. "
          "Cost ratio: fidelity seconds / from-scratch ground-truth seconds.", "",
          "| fidelity | Kendall tau | Spearman | tau vs library-init truth | cost ratio | cheaper by |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in result.items():
        md.append(f"| {name} | {r['kendall_tau']:.3f} | {r['spearman']:.3f} | {r['kendall_tau_library_init']:.3f} | {r['cost_ratio']:.4f} "
                  f"| {r['speedup']:.0f}x |")
    c = result["cached"]
    md += ["", f"Goal: cached tau >= 0.7 at >= 20x cheaper. Measured: tau {c['kendall_tau']:.3f}, {c['speedup']:.1f}x cheaper "
               f"({'met' if c['kendall_tau'] >= 0.7 and c['speedup'] >= 20 else 'missed'}). Feature cache: {details['feature_cache']}.", ""]
    (dest / "fidelity.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in result.items():
            ax.scatter(r["speedup"], r["kendall_tau"])
            ax.annotate(name, (r["speedup"], r["kendall_tau"]), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("times cheaper than full training")
        ax.set_ylabel("Kendall tau vs full training")
        ax.axhline(0.7, ls="--", lw=0.8)
        ax.axvline(20, ls="--", lw=0.8)
        fig.tight_layout()
        fig.savefig(dest / "fidelity.png", dpi=120)
    except ImportError:
        pass
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
