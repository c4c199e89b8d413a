"""Fashion-MNIST under a wall budget: a search path beside the baselines a user would pick instead, in one run.

``--arms default`` (the default; issue 16's done-when 1): the default CLI path (``search --dataset fashion-mnist
--timeout B``), the 4-conv BN CNN with the one-cycle recipe, and seed-cnn plain search + retrain, at equal budget in one
run on the 2 cores. This runs ``benchmarks/fashion_default.py``'s driver (see its docstring for the arms, lanes and
anytime table) and writes results/fashion_mnist_default.{json,md,png} and fashion_mnist_default_best_config.json:

    python benchmarks/fashion_mnist.py [--budget-s 3600] [--seed 0] [--threads 1]

``--arms moca``: the modular cached (MoCA) path, the comparison this benchmark first made. Arms (each timed on its own
wall clock):

- ``moca``: build the module library on Fashion-MNIST, run a ``modular`` search with the ``cached``
  fidelity (objectives accuracy + params; the fine-tune phase included), then retrain the chosen
  config (best accuracy) on the full 51k training split for the rest of the budget, and evaluate on
  the official 10k test set.
- ``baseline``: the ``seed-cnn`` space searched with plain full training (``train`` fidelity) for the
  same search-phase budget, its best config retrained the same way for the same remaining budget;
  then the hand-designed reference, a 4-conv batch-norm CNN, trained for ``--reference-s``.

By default the two arms run in parallel, one process and ``--threads`` torch threads each, so both
see the same machine at the same time. Writes results/fashion_mnist.json and fashion_mnist.md.

    python benchmarks/fashion_mnist.py --arms moca [--budget-s 3600] [--threads 1] [--reference-s 900]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

PUBLISHED = [
    ("2Conv+pool", 0.916),
    ("2-conv, <100K params", 0.925),
    ("2Conv+pool+BN", 0.934),
    ("Google AutoML (24 compute hours)", 0.939),
    ("MobileNet", 0.950),
    ("DENSER", 0.953),
]


def _log(arm: str, msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {arm}: {msg}", flush=True)


def _data(ws: Path) -> Any:
    from nas_core.data import load_dataset

    return load_dataset("fashion-mnist", seed=0, cache_dir=ws / "cache" / "data")


def _epoch_seconds(model: Any, data: Any, recipe: Any, batches: int = 12) -> float:
    """Seconds per training epoch on the full training split, from a few timed batches (+ validation)."""
    import copy

    import torch

    from nas_core.evaluate import make_optimizer

    m = copy.deepcopy(model).train()
    opt = make_optimizer(m.parameters(), recipe)
    bs = recipe.batch_size
    x, y = data.x_train[: bs * batches], data.y_train[: bs * batches]
    t0 = time.perf_counter()
    for i in range(0, len(x), bs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x[i : i + bs]), y[i : i + bs]).backward()
        opt.step()
    per_sample = (time.perf_counter() - t0) / len(x)
    m.eval()
    t1 = time.perf_counter()
    with torch.no_grad():
        m(data.x_val[:1024])
    per_val = (time.perf_counter() - t1) / 1024
    return per_sample * len(data.x_train) + per_val * len(data.x_val)


def retrain_for(model: Any, data: Any, recipe: Any, *, seconds: float, arm: str, seed: int = 0) -> dict[str, Any]:
    """Train for about ``seconds`` (epochs fitted to the budget, cosine schedule, shift+flip) and measure on the test set."""
    import torch

    from nas_core.evaluate import StopRequested, measure_model, train_model

    epoch_s = _epoch_seconds(model, data, recipe)
    epochs = max(1, int(seconds // (epoch_s * 1.05)))
    recipe = replace(recipe, epochs=epochs, patience=epochs + 1, augmentation="shift+flip")
    _log(arm, f"retrain: {epoch_s:.0f} s/epoch estimated, {epochs} epochs in {seconds:.0f} s; recipe {recipe.to_dict()}")
    t0 = time.perf_counter()
    deadline = t0 + max(seconds, 1.0)
    history: list[dict[str, Any]] = []

    def on_epoch(e: int, n: int, row: dict[str, Any]) -> None:
        history.append(row)
        _log(arm, f"epoch {e}/{n} val {row['val_accuracy']:.4f} ({row['seconds']:.0f} s)")

    try:
        train_model(model, data, recipe, device=torch.device("cpu"), seed=seed, on_epoch=on_epoch,
                    should_stop=lambda: time.perf_counter() > deadline)
        stopped = False
    except StopRequested:  # the budget ended mid-epoch: keep the weights as they are
        stopped = True
        _log(arm, "budget reached mid-epoch; measuring the current weights")
    train_s = time.perf_counter() - t0
    measured = measure_model(model, data, torch.device("cpu"))
    return {**measured["metrics"], "epochs": len(history), "retrain_s": train_s, "recipe": recipe.to_dict(), "stopped_mid_epoch": stopped,
            "history": [{k: v for k, v in r.items()} for r in history], "latency_how": measured["latency"]["how"]}


# Both spaces are trimmed the same way for a CPU budget: no full-resolution stages, at most 64-128 channels.
SPACES = {
    "modular": {"base": "modular", "name": "modular-cpu", "params": {"stem_stride": {"choices": [2]}, "stage_channels": {"choices": [16, 32, 64]}}},
    "seed-cnn": {"base": "seed-cnn", "name": "seed-cnn-cpu", "params": {
        "pooling": {"type": "categorical", "choices": [True]}, "conv_filters": {"choices": [32, 64, 128]}, "n_conv": {"high": 3},
        "fc_units": {"choices": [64, 128, 256]}}},
}


def pick_for_budget(result: Any, data: Any, seconds: float, *, min_epochs: int, arm: str, recipe: Any = None) -> tuple[Any, Path]:
    """The most accurate Pareto config that can train ``min_epochs`` full epochs in ``seconds`` (else the fastest)."""
    from nas_core.export import build_model, load_config

    if not result.best_config:
        raise SystemExit(f"{arm}: no trial completed in the search phase ({result.n_pruned} stopped by the budget, {result.n_failed} failed); "
                         "raise --budget-s or --search-fraction so that at least one trial can finish.")
    folder = Path(result.best_config).parent
    options = []
    for path in sorted((folder / "pareto").glob("trial_*.json")):
        cfg = load_config(path)
        epoch_s = _epoch_seconds(build_model(cfg), data, recipe or cfg.training, batches=6)
        options.append((cfg, path, epoch_s))
        _log(arm, f"pareto {path.stem}: val {cfg.metrics.get('val_accuracy', 0):.4f}, {cfg.metrics.get('params', 0):,} params, "
                  f"~{epoch_s:.0f} s/epoch")
    fits = [o for o in options if o[2] * min_epochs <= seconds]
    cfg, path, _ = max(fits, key=lambda o: o[0].metrics.get("val_accuracy", 0)) if fits else min(options, key=lambda o: o[2])
    return cfg, path


def _search(arm: str, ws: Path, *, space: str, fidelity: str, timeout: float, args: Any, options: dict[str, Any]) -> Any:
    from nas_core.search import SearchConfig, run_search

    cfg = SearchConfig(dataset="fashion-mnist", trials=None, timeout=timeout, seed=0, workspace=str(ws), study=f"fmnist-{arm}",
                       objectives=("accuracy", "params"), space=space, space_data=SPACES[space], sampler="tpe", fidelity=fidelity,
                       epochs=args.search_epochs,
                       patience=3, train_samples=args.search_train, val_samples=args.search_val, tracking=False,
                       fidelity_options=options)

    def show(event: Any) -> None:
        if type(event).__name__ == "TrialFinished":
            m = event.metrics
            _log(arm, f"trial {event.number} {event.state} val {m.get('val_accuracy', 0):.4f} params {int(m.get('params', 0)):,} "
                      f"({event.duration_s:.0f} s) {event.reason}")

    return run_search(cfg, emit=show)


def _pareto_small(study_name: str, ws: Path, limit: int = 100_000) -> dict[str, Any] | None:
    import optuna

    from nas_core.export import pareto_rows
    from nas_core.workspace import default_storage

    study = optuna.load_study(study_name=study_name, storage=default_storage(ws))
    trials, metrics = pareto_rows(study)
    small = [(t, m) for t, m in zip(trials, metrics) if m["params"] <= limit]
    if not small:
        return None
    t, m = max(small, key=lambda tm: tm[1]["val_accuracy"])
    return {"trial": t.number, "params": m["params"], "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
            "final_accuracy": m.get("final_accuracy"), "summary": t.user_attrs.get("summary", "")}


def arm_moca(args: Any) -> dict[str, Any]:
    from nas_core.export import build_model, load_weights
    from nas_core.genotype import TrainingRecipe
    from nas_core.library import build_library, load_library_weights
    from nas_core.moca import cache_stats

    ws = Path(args.workspace) / "moca"
    shutil.rmtree(ws, ignore_errors=True)
    start = time.perf_counter()
    data = _data(ws)
    lib = build_library(dataset="fashion-mnist", workspace=ws, minutes=args.library_min, seed=0, train_samples=args.library_train,
                        emit=lambda m: _log("moca", m), min_steps=args.library_min_steps)
    library_s = time.perf_counter() - start
    phase = args.budget_s * args.search_fraction
    finetune_reserve = 0.2 * phase
    search_timeout = max(60.0, phase - library_s - finetune_reserve)
    opts = {"finetune_top_k": 2, "finetune_epochs": 3, "finetune_seconds": finetune_reserve}
    res = _search("moca", ws, space="modular", fidelity="cached", timeout=search_timeout, args=args, options=opts)
    search_s = time.perf_counter() - start
    _log("moca", f"search phase done at {search_s:.0f} s: {res.n_complete} complete; best {res.best_config}")
    remaining = args.budget_s - (time.perf_counter() - start) - args.eval_reserve_s
    # the fine-tune phase's recipe (Adam 1e-3, batch 64): the proxy phase never evaluated the sampled one
    recipe = TrainingRecipe(optimizer="adam", lr=1e-3, batch_size=64)
    cfg, path = pick_for_budget(res, data, remaining, min_epochs=args.min_retrain_epochs, arm="moca", recipe=recipe)
    model = build_model(cfg)
    weights = Path(res.best_config).parent / "weights" / f"{path.stem}.safetensors"
    if weights.exists():
        load_weights(model, weights)
        init = f"search weights of {path.stem} (library blocks + adapters{', fine-tuned end to end' if cfg.metrics.get('final_accuracy') else ''})"
    else:
        init = f"library weights for {load_library_weights(model, cfg, workspace=ws)} blocks"
    remaining = args.budget_s - (time.perf_counter() - start) - args.eval_reserve_s
    final = retrain_for(model, data, recipe, seconds=remaining, arm="moca")
    wall = time.perf_counter() - start
    return {"arm": "moca", "wall_s": wall, "library_s": library_s, "library_blocks": len(lib), "search_phase_s": search_s,
            "n_trials": res.n_complete, "n_failed": res.n_failed, "feature_cache": cache_stats(ws).to_dict(),
            "chosen": {"summary": cfg.architecture.summary(), "search_metrics": {k: cfg.metrics.get(k) for k in (
                "proxy_accuracy", "final_accuracy", "val_accuracy", "test_accuracy", "params")}, "init": init},
            "final": final, "pareto_le_100k": _pareto_small("fmnist-moca", ws)}


def _reference_arch(input_shape: tuple[int, int, int], num_classes: int) -> Any:
    from nas_core.genotype import Architecture, BlockSpec, HeadSpec

    conv = lambda c: BlockSpec("conv", {"out_channels": c, "kernel": 3})  # noqa: E731
    pool = BlockSpec("pool", {"mode": "max"})
    stages = ((conv(32), conv(32), pool), (conv(64), conv(64), pool))
    return Architecture(input_shape, num_classes, stages, HeadSpec(pool="flatten", hidden=(128,), dropout=0.3)).validate()


def arm_baseline(args: Any) -> dict[str, Any]:
    from nas_core.assemble import assemble
    from nas_core.evaluate import set_seed
    from nas_core.export import build_model
    from nas_core.genotype import TrainingRecipe

    ws = Path(args.workspace) / "baseline"
    shutil.rmtree(ws, ignore_errors=True)
    start = time.perf_counter()
    data = _data(ws)
    res = _search("baseline", ws, space="seed-cnn", fidelity="train", timeout=args.budget_s * args.search_fraction, args=args, options={})
    search_s = time.perf_counter() - start
    _log("baseline", f"search phase done at {search_s:.0f} s: {res.n_complete} complete")
    remaining = args.budget_s - (time.perf_counter() - start) - args.eval_reserve_s
    cfg, _ = pick_for_budget(res, data, remaining, min_epochs=args.min_retrain_epochs, arm="baseline")
    set_seed(0)
    model = build_model(cfg)
    remaining = args.budget_s - (time.perf_counter() - start) - args.eval_reserve_s
    final = retrain_for(model, data, cfg.training, seconds=remaining, arm="baseline")
    wall = time.perf_counter() - start
    out = {"arm": "seed-cnn + full training", "wall_s": wall, "search_phase_s": search_s, "n_trials": res.n_complete,
           "chosen": {"summary": cfg.architecture.summary(), "search_metrics": {k: cfg.metrics.get(k) for k in ("val_accuracy", "test_accuracy", "params")}},
           "final": final, "pareto_le_100k": _pareto_small("fmnist-baseline", ws)}
    set_seed(0)
    ref = assemble(_reference_arch(tuple(data.input_shape), data.num_classes))
    t0 = time.perf_counter()
    ref_final = retrain_for(ref, data, TrainingRecipe(optimizer="adam", lr=1e-3, batch_size=128), seconds=args.reference_s, arm="reference")
    out["reference"] = {"summary": ref.arch.summary(), "wall_s": time.perf_counter() - t0, "final": ref_final}
    return out


def write_results(moca: dict[str, Any], base: dict[str, Any], args: Any, total_wall: float) -> None:
    ref = base["reference"]
    m, b, r = moca["final"], base["final"], ref["final"]
    small = moca.get("pareto_le_100k")
    small_acc = m["test_accuracy"] if m["params"] <= 100_000 else (small or {}).get("test_accuracy")
    out = {
        "test_accuracy": m["test_accuracy"], "params": m["params"], "latency_ms": m["latency_ms"], "wall_s": moca["wall_s"],
        "flops": m["flops"], "budget_s": args.budget_s, "threads_per_arm": args.threads, "parallel_arms": not args.sequential,
        "moca": moca, "seed_cnn_full_training": {k: v for k, v in base.items() if k != "reference"}, "reference_4conv_bn": ref,
        "gain_over_reference": m["test_accuracy"] - r["test_accuracy"], "gain_over_seed_cnn": m["test_accuracy"] - b["test_accuracy"],
        "pareto_le_100k_test_accuracy": small_acc,
        "goals": {"test_accuracy_ge_0.940_within_3600s": m["test_accuracy"] >= 0.940 and moca["wall_s"] <= 3600,
                  "at_least_1pt_above_reference": m["test_accuracy"] - r["test_accuracy"] >= 0.01,
                  "pareto_point_le_100k_params_ge_0.930": bool(small_acc is not None and small_acc >= 0.930)},
        "published": dict(PUBLISHED), "script_wall_s": total_wall,
    }
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "fashion_mnist.json").write_text(json.dumps(out, indent=2, default=str))
    rows = [(f"**MoCA-NAS** (modular + cached, {moca['wall_s'] / 60:.0f} min incl. library, search, retrain)", m["test_accuracy"], m["params"], m["latency_ms"]),
            (f"seed-cnn + full training, same budget ({base['wall_s'] / 60:.0f} min)", b["test_accuracy"], b["params"], b["latency_ms"]),
            (f"hand-designed 4-conv BN CNN ({ref['wall_s'] / 60:.0f} min)", r["test_accuracy"], r["params"], r["latency_ms"])]
    md = ["# Fashion-MNIST: the full MoCA-NAS path on CPU", "",
          f"Official 10k test set. Budget {args.budget_s:.0f} s per arm, {args.threads} torch thread(s) per arm, arms "
          f"{'in parallel' if not args.sequential else 'one after the other'} on a 2-core machine. Measured in one run by `benchmarks/fashion_mnist.py`.", "",
          "| model | test accuracy | params | latency ms (batch 1, CPU) |", "|---|---:|---:|---:|"]
    md += [f"| {name} | {acc:.4f} | {int(p):,} | {lat:.3f} |" for name, acc, p, lat in rows]
    md += ["", "Published (for reference, not run here):", "", "| model | test accuracy |", "|---|---:|"]
    md += [f"| {name} | {acc:.3f} |" for name, acc in PUBLISHED]
    md += ["", f"- MoCA chosen: `{moca['chosen']['summary']}` ({moca['chosen']['init']}); search phase {moca['search_phase_s']:.0f} s "
               f"({moca['n_trials']} trials, library {moca['library_s']:.0f} s), retrain {m['epochs']} epochs in {m['retrain_s']:.0f} s.",
           f"- seed-cnn chosen: `{base['chosen']['summary']}`; search phase {base['search_phase_s']:.0f} s ({base['n_trials']} trials), "
           f"retrain {b['epochs']} epochs in {b['retrain_s']:.0f} s.",
           f"- Gain over the reference: {out['gain_over_reference'] * 100:+.2f} points; over seed-cnn + full training: {out['gain_over_seed_cnn'] * 100:+.2f} points.",
           f"- Best Pareto point with <= 100K params: {small_acc if small_acc is None else f'{small_acc:.4f}'} test accuracy "
           f"({'the retrained chosen config' if m['params'] <= 100_000 else 'search-phase model, not retrained'}).",
           f"- Goals: {json.dumps(out['goals'])}", ""]
    (dest / "fashion_mnist.md").write_text("\n".join(md))


def default_arms_command(args: Any) -> list[str]:
    """The ``fashion_default.py`` run that ``--arms default`` is: the same budget, seed, threads and folders, its files
    named fashion_mnist_default.*."""
    return [sys.executable, str(ROOT / "fashion_default.py"), "--budget-s", str(args.budget_s), "--seed", str(args.seed),
            "--threads", str(args.threads), "--reference-epochs", str(args.reference_epochs), "--workspace", str(args.workspace),
            "--out", str(args.out), "--stem", "fashion_mnist_default"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", choices=["default", "moca"], default="default",
                    help="default: the default CLI path vs the one-cycle 4-conv reference and plain search (fashion_default.py's "
                    "driver); moca: the modular cached path vs seed-cnn full training (default: default)")
    ap.add_argument("--seed", type=int, default=0, help="--arms default: the seed of every arm (default 0)")
    ap.add_argument("--reference-epochs", type=int, default=12, help="--arms default: the one-cycle reference's epochs (default 12)")
    ap.add_argument("--arm", choices=["moca", "baseline"], default=None, help="--arms moca: run one arm only (used by the parallel driver)")
    ap.add_argument("--budget-s", type=float, default=3600.0, help="wall budget of each arm's search + retrain (default 3600)")
    ap.add_argument("--search-fraction", type=float, default=0.4, help="share of the budget for the search phase (default 0.4)")
    ap.add_argument("--reference-s", type=float, default=900.0, help="training time of the hand-designed reference (default 900)")
    ap.add_argument("--eval-reserve-s", type=float, default=90.0)
    ap.add_argument("--library-min", type=float, default=4.0)
    ap.add_argument("--library-train", type=int, default=20000)
    ap.add_argument("--library-min-steps", type=int, default=150, help="least training steps per donor (default 150)")
    ap.add_argument("--search-train", type=int, default=6000)
    ap.add_argument("--search-val", type=int, default=1500)
    ap.add_argument("--search-epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-retrain-epochs", type=int, default=8, help="retrain the most accurate Pareto config that fits this many epochs")
    ap.add_argument("--sequential", action="store_true", help="run the arms one after the other in this process")
    ap.add_argument("--workspace", default=str(ROOT / "work" / "fashion_mnist"))
    ap.add_argument("--out", default=str(ROOT / "results"))
    args = ap.parse_args()
    if args.arms == "default" and args.arm is None:
        return subprocess.run(default_arms_command(args), check=False).returncode

    import torch

    torch.set_num_threads(args.threads)
    ws = Path(args.workspace)
    ws.mkdir(parents=True, exist_ok=True)
    if args.arm:
        result = arm_moca(args) if args.arm == "moca" else arm_baseline(args)
        (ws / f"{args.arm}.json").write_text(json.dumps(result, indent=2, default=str))
        return 0
    start = time.perf_counter()
    if args.sequential:
        moca, base = arm_moca(args), arm_baseline(args)
    else:
        argv = [a for a in sys.argv[1:]]
        procs = [subprocess.Popen([sys.executable, __file__, *argv, "--arm", arm]) for arm in ("moca", "baseline")]
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"an arm failed (exit codes {codes})", file=sys.stderr)
            return 1
        moca = json.loads((ws / "moca.json").read_text())
        base = json.loads((ws / "baseline.json").read_text())
    write_results(moca, base, args, time.perf_counter() - start)
    print((Path(args.out) / "fashion_mnist.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
