"""Which cheap evaluation ranks the default space's candidates best, and does it beat counting parameters?

Candidates are sampled (seeded, uniformly at random) from the default ``seed-cnn`` space, training recipe
included, under a compute cap that keeps a CPU ground truth affordable. Each candidate is trained the
way ``train --config`` trains it (its own recipe, 15 epochs, no early stop) on 10,000 Fashion-MNIST
images; the ground truth is its accuracy on held-out official test images. Every cheap signal is then
scored by Kendall tau against that ground truth, and the difference to the free baselines (#params,
FLOPs) by a paired bootstrap over candidates (95 % percentile interval):

- free: ``params``, ``flops`` (and their logs: same ranks);
- zero-cost proxies (``nas_core.proxies``) on one seeded minibatch of 64;
- ``1-epoch``: an independent run (another seed) with the recipe's schedule compressed to one epoch,
  validation accuracy on 2,000 held-out training images;
- ``rung-1`` / ``rung-2``: an independent run with the 15-epoch schedule, cut after 1 (2) epochs (what
  successive halving sees at its first rungs), validation accuracy;
- ``tse-1`` / ``tse-rung-2``: training-speed estimation (Ru et al. 2021), minus the sum of the per-epoch mean
  training losses of those runs;
- ``rank-mean``: the mean rank of ``rung-1`` and ``tse-rung-1``; ``A+B`` (added later, see the report): the mean rank
  of a trained signal A and a free count B; ``ranker``: a ridge regression on
  log params, log FLOPs, the zero-cost scores and the rung-1 signals, its predictions made out of fold
  (5-fold cross-validation), so no candidate is scored by a model that saw its ground truth.

Cost ratio: the cheap signal's measured seconds over the ground truth's. Rows are written as they finish
to ``<workspace>/rows-seed<S>.jsonl`` and a rerun resumes (a fresh clone starts from the committed
``results/ranking_rows.json`` of the default setup); ``--jobs`` runs candidates in that many processes (one
torch thread each; the committed rows follow every finished candidate). ``--report-only`` rewrites
results/ranking.{json,md,png} from the rows; a sample of another ``--seed`` S writes ``ranking_seedS.*`` and
``ranking_rows_seedS.json`` beside them.

    python benchmarks/ranking.py [--archs 60] [--epochs 15] [--train 10000] [--jobs 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

SPACE = "seed-cnn"
DATASET = "fashion-mnist"


class _Cut(Exception):
    """Raised from the epoch callback to end a run after its rung."""


def _data(args: argparse.Namespace) -> Any:
    from nas_core.data import load_dataset

    return load_dataset(DATASET, seed=args.seed, train_samples=args.train, val_samples=args.val, test_samples=args.test,
                        cache_dir=Path(args.workspace) / "cache")


def sample_candidates(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``args.archs`` distinct space values under the compute cap (FLOPs and parameters), in sampling order."""
    import optuna
    import torch

    from nas_core.assemble import assemble
    from nas_core.evaluate import count_flops
    from nas_core.space import get_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(400 * args.archs):
        if len(out) >= args.archs:
            break
        trial = study.ask()
        values = space.sample(trial)
        study.tell(trial, 0.0)
        arch, _ = space.build(values, input_shape=(1, 28, 28), num_classes=10, epochs=args.epochs)
        key = json.dumps(values, sort_keys=True)
        if key in seen:
            continue
        with torch.device("meta"):  # shapes only: a 27M-parameter candidate costs nothing to count
            params = sum(p.numel() for p in assemble(arch).parameters())
        if params > args.max_params:
            continue
        flops = count_flops(assemble(arch), (1, 28, 28))
        if flops > args.max_mflops * 1e6:
            continue
        seen.add(key)
        out.append({"index": len(out), "values": values, "params": params, "flops": flops, "summary": arch.summary()})
    return out


def evaluate_candidate(cand: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Ground truth and every cheap signal of one candidate (runs in a worker process)."""
    import torch

    torch.set_num_threads(1)
    from nas_core.assemble import assemble
    from nas_core.evaluate import predict, set_seed, train_model
    from nas_core.proxies import PROXIES, score
    from nas_core.space import get_space
    from nas_core.training.screening import SCREEN_SEED_OFFSET, screen_candidate

    data = _data(args)
    cpu = torch.device("cpu")
    space = get_space(SPACE)
    i = int(cand["index"])
    seed = args.seed * 1000 + i
    row: dict[str, Any] = {k: cand[k] for k in ("index", "values", "params", "flops", "summary")}

    def build(epochs: int) -> tuple[Any, Any]:
        arch, recipe = space.build(cand["values"], input_shape=(1, 28, 28), num_classes=10, epochs=epochs)
        recipe = type(recipe)(**{**recipe.to_dict(), "patience": epochs + 1})  # no early stop: a fixed budget
        return arch, recipe

    # Ground truth: the recipe train uses, fixed epochs, test accuracy.
    arch, recipe = build(args.epochs)
    set_seed(seed)
    model = assemble(arch)
    t = time.perf_counter()
    try:
        hist = train_model(model, data, recipe, device=cpu, seed=seed)
        row["truth"] = float((predict(model, data.x_test, cpu) == data.y_test.numpy()).mean())
    except Exception as exc:  # noqa: BLE001 - a diverged candidate is a real outcome: the worst accuracy
        hist, row["truth"], row["truth_error"] = [], 0.1, str(exc).splitlines()[0]
    row["truth_s"] = time.perf_counter() - t
    row["truth_history"] = hist

    # 1-epoch: what the search's screen runs (training.screening.screen_candidate): an independent seed, the recipe's
    # schedule compressed to one epoch. (Before the screen existed this was inlined here; same seed, same calls.)
    t = time.perf_counter()
    try:
        screen = screen_candidate(arch, recipe, data, device=cpu, seed=seed + SCREEN_SEED_OFFSET)
        row["1-epoch"] = screen["val_accuracy"]
        row["tse-1"] = -screen["train_loss"] if math.isfinite(screen["train_loss"]) else -1e9
    except Exception:  # noqa: BLE001
        row["1-epoch"], row["tse-1"] = 0.0, -1e9
    row["1-epoch_s"] = row["tse-1_s"] = time.perf_counter() - t

    # Rungs: independent seed, the full-length schedule cut after two epochs.
    set_seed(seed + 700_000)
    model = assemble(arch)
    seen: list[dict[str, float]] = []
    start = time.perf_counter()

    def on_epoch(epoch: int, total: int, r: dict[str, float]) -> None:
        seen.append({**r, "elapsed": time.perf_counter() - start})
        if epoch >= 2:
            raise _Cut

    try:
        train_model(model, data, recipe, device=cpu, seed=seed + 700_000, on_epoch=on_epoch)
    except _Cut:
        pass
    except Exception:  # noqa: BLE001
        pass
    for k in (1, 2):
        if len(seen) >= k:
            row[f"rung-{k}"] = seen[k - 1]["val_accuracy"]
            row[f"tse-rung-{k}"] = -sum(r["train_loss"] for r in seen[:k])
            row[f"rung-{k}_s"] = row[f"tse-rung-{k}_s"] = seen[k - 1]["elapsed"]
        else:
            row[f"rung-{k}"], row[f"tse-rung-{k}"] = 0.0, -1e9
            row[f"rung-{k}_s"] = row[f"tse-rung-{k}_s"] = time.perf_counter() - start

    # Zero-cost proxies on one seeded minibatch.
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.x_train), generator=gen)[:64]
    x, y = data.x_train[idx], data.y_train[idx]
    for name in PROXIES.names():
        set_seed(seed)
        model = assemble(arch)
        t = time.perf_counter()
        row[name] = score(name, model, x, y)
        row[f"{name}_s"] = time.perf_counter() - t
    return row


def _worker(job: tuple[dict[str, Any], argparse.Namespace]) -> dict[str, Any]:
    cand, args = job
    return evaluate_candidate(cand, args)


# ------------------------------------------------------------------------------------------------ statistics

FREE = ("params", "flops")
COMBINED = ("1-epoch", "rung-1", "rung-2", "tse-1")  # trained signals also scored as a mean rank with each free count


def _kendall(a: Any, b: Any) -> float:
    """nas_core's Kendall tau-b (the one the Analytics page shows), 0 where a resample leaves a signal constant."""
    from nas_core.ranking import kendall

    value = kendall(a, b)
    return value if math.isfinite(value) else 0.0


def _ranker_predictions(rows: list[dict[str, Any]], features: list[str], truth: Any, seed: int) -> Any:
    """Out-of-fold ridge predictions (5 folds, standardised features, alpha 1)."""
    import numpy as np

    x = np.array([[float(r[f]) for f in features] for r in rows])
    x[:, [i for i, f in enumerate(features) if f in FREE]] = np.log(x[:, [i for i, f in enumerate(features) if f in FREE]])
    pred = np.zeros(len(rows))
    folds = np.random.default_rng(seed).permutation(len(rows)) % 5
    for k in range(5):
        tr, te = folds != k, folds == k
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-9
        a = np.c_[np.ones(tr.sum()), (x[tr] - mu) / sd]
        w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]) * 1.0, a.T @ truth[tr])
        pred[te] = np.c_[np.ones(te.sum()), (x[te] - mu) / sd] @ w
    return pred


def analyse(rows: list[dict[str, Any]], *, boot: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from nas_core.training.screening import mean_rank

    rows = sorted(rows, key=lambda r: r["index"])
    truth = np.array([r["truth"] for r in rows])
    truth_s = sum(r["truth_s"] for r in rows)
    from nas_core.proxies import PROXIES

    proxies = [p for p in PROXIES.names() if p in rows[0]]
    signals: dict[str, Any] = {name: np.array([float(r[name]) for r in rows]) for name in
                               [*FREE, *proxies, "1-epoch", "tse-1", "rung-1", "tse-rung-1", "rung-2", "tse-rung-2"]}
    cost: dict[str, float] = {name: 0.0 for name in FREE}
    for name in signals:
        if name not in FREE:
            cost[name] = sum(float(r[f"{name}_s"]) for r in rows)
    signals["rank-mean"] = np.asarray(mean_rank(signals["rung-1"], signals["tse-rung-1"]))
    cost["rank-mean"] = cost["rung-1"]
    # Combinations with no fitted weight: the mean rank of a trained signal and a free count (capacity). Added after the
    # first report, all eight at once, so one of them clearing the bar is weaker evidence than its interval says.
    for trained in COMBINED:
        for base in FREE:
            signals[f"{trained}+{base}"] = np.asarray(mean_rank(signals[trained], signals[base]))  # the search's screen score
            cost[f"{trained}+{base}"] = cost[trained]
    feats = [*FREE, *proxies, "rung-1", "tse-rung-1"]
    signals["ranker"] = _ranker_predictions(rows, feats, truth, seed)
    cost["ranker"] = cost["rung-1"] + sum(cost[p] for p in proxies)

    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, len(rows), len(rows)) for _ in range(boot)]
    out: dict[str, Any] = {}
    for name, values in signals.items():
        tau = _kendall(values, truth)
        entry: dict[str, Any] = {"kendall_tau": tau, "cost_ratio": cost[name] / truth_s,
                                 "cheaper_by": (truth_s / cost[name]) if cost[name] > 0 else None}
        taus = np.array([_kendall(values[s], truth[s]) for s in samples])
        entry["tau_ci95"] = [float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))]
        for base in FREE:
            if name == base:
                continue
            diffs = taus - np.array([_kendall(signals[base][s], truth[s]) for s in samples])
            entry[f"minus_{base}"] = tau - _kendall(signals[base], truth)
            entry[f"minus_{base}_ci95"] = [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]
        out[name] = entry
    return {"signals": out, "n": len(rows), "truth_seconds": truth_s, "truth_range": [float(truth.min()), float(truth.max())],
            "truth_median": float(np.median(truth))}


def _suffix(args: argparse.Namespace) -> str:
    """File-name suffix of a sample: none for the first (seed 0), ``_seed7`` for the independent one, and so on."""
    return "" if args.seed == 0 else f"_seed{args.seed}"


def report(rows: list[dict[str, Any]], args: argparse.Namespace, dest: Path) -> dict[str, Any]:
    result = analyse(rows, boot=args.boot, seed=args.seed)
    result["setup"] = {"space": SPACE, "dataset": DATASET, "train": args.train, "val": args.val, "test": args.test,
                       "epochs": args.epochs, "max_mflops": args.max_mflops, "max_params": args.max_params, "seed": args.seed,
                       "bootstrap": args.boot, "jobs": args.jobs}
    sig = result["signals"]
    # The default search ranks with the cheapest signal that beats both free baselines by the bootstrap (if any).
    eligible = [n for n, e in sig.items() if n not in FREE and (e["cheaper_by"] or 0) >= 10
                and e["minus_params_ci95"][0] > 0 and e["minus_flops_ci95"][0] > 0]
    result["beats_free_baselines"] = eligible
    dest.mkdir(parents=True, exist_ok=True)
    sfx = _suffix(args)
    (dest / f"ranking{sfx}.json").write_text(json.dumps(result, indent=2))
    (dest / f"ranking_rows{sfx}.json").write_text(json.dumps(sorted(rows, key=lambda r: r["index"]), indent=1))
    partial = f" (partial: {result['n']} of {args.archs})" if result["n"] < args.archs else ""
    md = [f"# Ranking benchmark: cheap evaluation vs #params and FLOPs (default space, Fashion-MNIST, seed {args.seed}){partial}", "",
          f"{result['n']} candidates sampled at random (seed {args.seed}) from the default `{SPACE}` space, training recipe included, "
          f"under a compute cap (<= {args.max_mflops:g} MFLOPs and <= {args.max_params:,} parameters, so the CPU ground truth fits). "
          f"Ground truth: each trained as `train --config` trains it (its own recipe, {args.epochs} epochs, no early stop) on "
          f"{args.train:,} training images, accuracy on {args.test:,} official test images (range {result['truth_range'][0]:.3f}-"
          f"{result['truth_range'][1]:.3f}, median {result['truth_median']:.3f}); {result['truth_seconds']:.0f} s in all, one torch thread "
          f"per candidate, {args.jobs} in parallel on this 2-core machine. Cheap signals use other seeds than the ground truth. "
          f"Intervals: paired bootstrap over candidates, {args.boot} resamples, 95 % percentile.", "",
          "| signal | Kendall tau (95 % CI) | minus #params (95 % CI) | minus FLOPs (95 % CI) | cheaper by |",
          "|---|---|---|---|---:|"]
    for name, e in sorted(sig.items(), key=lambda kv: -kv[1]["kendall_tau"]):
        def ci(key: str, e: dict[str, Any] = e) -> str:
            if key not in e:
                return "-"
            lo, hi = e[key + "_ci95"]
            return f"{e[key]:+.3f} ({lo:+.3f} to {hi:+.3f})"

        cheaper = "free" if e["cheaper_by"] is None else f"{e['cheaper_by']:.0f}x"
        lo, hi = e["tau_ci95"]
        md.append(f"| {name} | {e['kendall_tau']:.3f} ({lo:.3f} to {hi:.3f}) | {ci('minus_params')} | {ci('minus_flops')} | {cheaper} |")
    md += ["", "Goal (issue 16): the fidelity the default search ranks with beats #params and FLOPs by the paired bootstrap "
               "(95 % interval of the tau difference above 0) at >= 10x cheaper than the ground truth.",
           f"Signals that meet it here: {', '.join(eligible) if eligible else 'none'}.", "",
           f"`A+B` is the mean rank of signal A and the free count B, no weights fitted. The {len(COMBINED) * len(FREE)} of them were "
           "added after the first report of this sample, all at once: with that many tries one clearing the bar here is "
           "weaker evidence than its interval says, and only an independent sample (`--seed 7`, a new ground truth) "
           "confirms it. The default search screens with `1-epoch+flops` (`nas_core/training/screening.py`, on unless "
           "`--fidelity-option screen=off`): each candidate's `1-epoch` is the screen's own run (`screen_candidate`, the "
           "same seed and calls as this benchmark's first report), and only the top third of the study's screened "
           "candidates by that mean rank train in full (on a CPU, the Fashion-MNIST hour is one training, which is "
           "not screened).", ""]
    if args.seed != 0:
        md[-1:-1] = ["This is an independent sample (other candidates, new ground truth). The test fixed before it ran "
                     "(`issue16_notes.md`): does `1-epoch+flops`, the one signal that met the goal on seed 0's sample, "
                     "meet it here too?", ""]
    (dest / f"ranking{sfx}.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        names = sorted(sig, key=lambda n: sig[n]["kendall_tau"])
        taus = [sig[n]["kendall_tau"] for n in names]
        lows = [sig[n]["kendall_tau"] - sig[n]["tau_ci95"][0] for n in names]
        highs = [sig[n]["tau_ci95"][1] - sig[n]["kendall_tau"] for n in names]
        colors = ["tab:gray" if n in FREE else ("tab:green" if n in eligible else "tab:blue") for n in names]
        ax.barh(names, taus, xerr=[lows, highs], color=colors)
        ax.set_xlabel(f"Kendall tau vs {args.epochs}-epoch test accuracy (95 % bootstrap CI)")
        ax.set_title(f"{result['n']} candidates of the default space; gray: free baselines, green: beats both")
        fig.tight_layout()
        fig.savefig(dest / f"ranking{sfx}.png", dpi=120)
    except ImportError:
        pass
    print("\n".join(md), flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=15, help="ground-truth epochs (fixed budget)")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--max-mflops", type=float, default=6.0)
    ap.add_argument("--max-params", type=int, default=400_000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspace", default=str(ROOT / "work" / "ranking"))
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--report-only", action="store_true", help="recompute the result files from the rows already written")
    args = ap.parse_args()
    ws = Path(args.workspace)
    ws.mkdir(parents=True, exist_ok=True)
    rows_path = ws / f"rows-seed{args.seed}.jsonl"
    committed = Path(args.out) / f"ranking_rows{_suffix(args)}.json"
    if not rows_path.exists() and committed.exists() and (args.train, args.epochs) == (10000, 15):
        # a fresh clone resumes from the rows committed by an earlier (partial) run of the same seed
        rows_path.write_text("".join(json.dumps(r) + "\n" for r in json.loads(committed.read_text())))
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()] if rows_path.exists() else []
    if not args.report_only:
        cands = sample_candidates(args)
        if len(cands) < args.archs:
            print(f"error: only {len(cands)} candidates fit the cap; raise --max-mflops/--max-params", file=sys.stderr)
            return 2
        done = {r["index"] for r in rows}
        todo = [c for c in cands if c["index"] not in done]
        print(f"{len(cands)} candidates, {len(done)} already done, {len(todo)} to run with {args.jobs} processes", flush=True)
        _data(args)  # build the split cache once, before the workers read it
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        start = time.perf_counter()
        with mp.get_context("spawn").Pool(args.jobs) as pool, rows_path.open("a") as fh:
            for k, row in enumerate(pool.imap_unordered(_worker, [(c, args) for c in todo]), 1):
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                rows.append(row)
                # the committed copy follows every row, so a run cut off (a session's end) resumes on a fresh clone
                tmp = committed.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(sorted(rows, key=lambda r: r["index"]), indent=1))
                os.replace(tmp, committed)
                print(f"[{k}/{len(todo)} {time.perf_counter() - start:.0f} s] #{row['index']} truth {row['truth']:.4f} "
                      f"({row['truth_s']:.0f} s) rung-1 {row['rung-1']:.3f} 1-epoch {row['1-epoch']:.3f} params {row['params']:,}",
                      flush=True)
    if len(rows) < 10:
        print(f"error: {len(rows)} rows in {rows_path}; run without --report-only first", file=sys.stderr)
        return 2
    report(rows, args, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
