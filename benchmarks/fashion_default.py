"""The default path on Fashion-MNIST against the baselines a user would pick instead, at equal budget, in one run.

Arms, each a real subprocess on its own wall clock and its own torch thread(s) (``MOCA_THREADS``):

- ``default``: exactly what a user runs, ``python -m nas_core search --dataset fashion-mnist --timeout B``
  (the default space with its recipe, known-good designs first, the budget planner's final refit);
- ``reference``: the textbook net a user would write instead, the 4-conv BN CNN (32-32-pool-64-64-pool,
  FC 128, dropout) trained with a one-cycle schedule (Adam, peak lr 1e-3, batch 128, random +-2 px shifts)
  for ``--reference-epochs`` (12) epochs, its test accuracy recorded after every epoch;
- ``plain``: the same CLI search without the known-good designs (``--no-known-good``), i.e. the seed-cnn space
  searched plainly and its best refit, for the same budget.

Two lanes run in parallel on the 2 cores: ``default`` alone, and ``reference`` then ``plain``. The anytime table
holds, for each arm, the test accuracy of the model it would hand over at 900, 1800 and 3600 s: for a search, the
complete trial with the best validation accuracy so far (its own test accuracy), or the model a running one training
holds (measured as it goes, what a Stop hands over: ``fidelities.train.Holder``), then the final refit once it exists; for the reference, its latest finished epoch. Writes results/fashion_default.{json,md,png} and copies the
default arm's ``best_config.json`` to results/fashion_default_best_config.json (``train --config`` retrains it).

    python benchmarks/fashion_default.py [--budget-s 3600] [--seed 0] [--threads 1]

To measure a change of the default path against baselines it does not affect, ``--reuse-baselines OLD.json`` runs only the
``default`` arm and takes ``reference`` and ``plain`` from an earlier run's JSON (same budget and seed; the table says so).
Its files are written with ``--tag`` in their names (fashion_default_TAG.*), beside the one-run results. ``--stem`` changes
the ``fashion_default`` part: ``benchmarks/fashion_mnist.py`` (issue 16's name for this comparison) runs this driver with
``--stem fashion_mnist_default``. ``--default-result LOG`` takes that arm from the output of an ``--arm default`` run
started earlier (beside a one run still going), rather than running it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
MARKS = (900, 1800, 3600)
STUDY = "fashion-mnist-seed-cnn"  # the CLI's default study name for this dataset and space


def _log(arm: str, msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {arm}: {msg}", flush=True)


def _env(args: argparse.Namespace) -> dict[str, str]:
    return {**os.environ, "MOCA_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT.parent)}


def run_search_arm(arm: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """One CLI search as a user runs it; its anytime curve is read back from the study's trial times."""
    import optuna

    from nas_core.results.tables import pareto_rows
    from nas_core.schema.record import trial_record
    from nas_core.workspace import default_storage

    ws = Path(args.workspace) / arm
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    cmd = [sys.executable, "-m", "nas_core", "search", "--dataset", "fashion-mnist", "--timeout", str(args.budget_s),
           "--seed", str(args.seed), "--workspace", str(ws), *extra]
    _log(arm, " ".join(cmd[1:]))
    start = time.time()
    with (ws / "cli.log").open("w") as log:
        code = subprocess.run(cmd, env=_env(args), stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.time() - start
    _log(arm, f"exit {code} after {wall:.0f} s")
    study = optuna.load_study(study_name=STUDY, storage=default_storage(ws))
    done = sorted((t for t in study.trials if t.state.name == "COMPLETE" and t.datetime_complete), key=lambda t: t.datetime_complete)
    trials, moments = [], []  # moments: (seconds since start, trial, val, test) of each model a trial holds from then on
    for t in done:
        record = trial_record(t)
        m = record.get("metrics") or {}
        at = t.datetime_complete.timestamp() - start
        trials.append({"number": t.number, "at_s": at, "val_accuracy": m.get("val_accuracy"), "test_accuracy": m.get("test_accuracy"),
                       "params": m.get("params"), "summary": t.user_attrs.get("summary", "")})
        # a time-boxed training (the one training) holds a measured model as it goes, which a Stop would hand over
        for hold in (record.get("fidelity_extra") or {}).get("holds") or []:
            moments.append((float(hold["at"]) - start, t.number, float(hold["val_accuracy"]), float(hold["test_accuracy"])))
        moments.append((at, t.number, float(m.get("val_accuracy") or 0.0), float(m.get("test_accuracy") or 0.0)))
    points = anytime_points(moments)
    best = next(ws.glob("*/best_config.json"), None)
    final = None
    if best is not None:
        cfg = json.loads(best.read_text())
        m = cfg.get("metrics", {})
        final = {"test_accuracy": m.get("test_accuracy"), "params": m.get("params"), "latency_ms": m.get("latency_ms"),
                 "at_s": best.stat().st_mtime - start, "refit": (cfg.get("provenance") or {}).get("final_training"),
                 "summary": _summary(cfg)}
        points.append((final["at_s"], float(m.get("test_accuracy") or 0.0)))
    # a Pareto point: on the front the study writes (pareto.csv, Best Model), not merely a complete trial
    front = {t.number for t in pareto_rows(study)[0]}
    for row in trials:
        row["on_front"] = row["number"] in front
    small = [t for t in trials if (t["params"] or 1e12) <= 100_000 and t["on_front"]]
    return {"arm": arm, "exit_code": code, "wall_s": wall, "n_complete": len(trials), "trials": trials, "anytime": points,
            "final": final, "best_config": str(best) if best else None,
            "pareto_le_100k": max(small, key=lambda t: t["test_accuracy"] or 0) if small else None}


def anytime_points(moments: list[tuple[float, int, float, float]]) -> list[tuple[float, float]]:
    """(seconds, test accuracy) each time the model a search would hand over changes: from (seconds, trial, val, test)
    moments, each trial's latest model (a hold, then its completion), and of those the best by validation accuracy.

        >>> anytime_points([(10, 0, 0.80, 0.79), (20, 1, 0.85, 0.84), (30, 0, 0.90, 0.88), (40, 1, 0.86, 0.86)])
        [(10, 0.79), (20, 0.84), (30, 0.88)]
    """
    latest: dict[int, tuple[float, float]] = {}
    points: list[tuple[float, float]] = []
    for at, trial, val, test in sorted(moments):
        latest[trial] = (val, test)
        held = max(latest.values())[1]
        if not points or points[-1][1] != held:
            points.append((at, held))
    return points


def _summary(cfg: dict[str, Any]) -> str:
    """The one-line architecture of a config (best_config.json stores the architecture, not its summary)."""
    from nas_core.schema.config import ModelConfig

    try:
        return ModelConfig.from_dict(cfg).architecture.summary()
    except Exception:  # noqa: BLE001 - a report line, not worth failing the benchmark over
        return ""


def run_reference(args: argparse.Namespace) -> dict[str, Any]:
    """The 4-conv BN CNN with the one-cycle recipe, in this process (run as a subprocess by the driver)."""
    import torch

    torch.set_num_threads(args.threads)
    from nas_core.assemble import assemble
    from nas_core.data import load_dataset
    from nas_core.evaluate import predict, set_seed, train_model
    from nas_core.genotype import Architecture, BlockSpec, HeadSpec, TrainingRecipe

    start = time.time()
    data = load_dataset("fashion-mnist", seed=args.seed, cache_dir=Path(args.workspace) / "reference" / "cache")
    conv = lambda c: BlockSpec("conv", {"out_channels": c, "kernel": 3})  # noqa: E731
    pool = BlockSpec("pool", {"mode": "max"})
    arch = Architecture(tuple(data.input_shape), data.num_classes, ((conv(32), conv(32), pool), (conv(64), conv(64), pool)),
                        HeadSpec(pool="flatten", hidden=(128,), dropout=0.3)).validate()
    recipe = TrainingRecipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=args.reference_epochs, patience=args.reference_epochs + 1,
                            schedule="onecycle", warmup=0.3, augmentation="crop")
    set_seed(args.seed)
    model = assemble(arch)
    points = []
    cpu = torch.device("cpu")

    def on_epoch(epoch: int, total: int, row: dict[str, Any]) -> None:
        acc = float((predict(model, data.x_test, cpu) == data.y_test.numpy()).mean())
        model.train()
        points.append((time.time() - start, acc))
        _log("reference", f"epoch {epoch}/{total} val {row['val_accuracy']:.4f} test {acc:.4f}")

    train_model(model, data, recipe, device=cpu, seed=args.seed, on_epoch=on_epoch)
    params = sum(p.numel() for p in model.parameters())
    return {"arm": "reference", "wall_s": time.time() - start, "anytime": points, "recipe": recipe.to_dict(), "summary": arch.summary(),
            "final": {"test_accuracy": points[-1][1] if points else None, "params": params, "at_s": points[-1][0] if points else None}}


def last_result(text: str) -> dict[str, Any] | None:
    """The last ``RESULT {json}`` line an ``--arm`` run printed (its arm's result), or None when it printed none."""
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    return dict(json.loads(lines[-1][len("RESULT "):])) if lines else None


def held_at(points: list[list[float]], t: float) -> float | None:
    held = [acc for at, acc in points if at <= t]
    return held[-1] if held else None


def write_results(arms: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    marks = [m for m in MARKS if m <= args.budget_s] or [args.budget_s]
    table = {name: {str(m): held_at(arm["anytime"], m) for m in marks} for name, arm in arms.items()}
    d = arms["default"]
    final_default = (d.get("final") or {}).get("test_accuracy")
    baselines = {n: (a.get("final") or {}).get("test_accuracy") for n, a in arms.items() if n != "default"}
    best_base = max((v for v in baselines.values() if v is not None), default=None)
    small = d.get("pareto_le_100k")
    goals = {
        "default_ge_0.945_within_budget": bool(final_default is not None and final_default >= 0.945 and d["wall_s"] <= args.budget_s * 1.05),
        "default_ge_1pt_above_best_baseline": bool(final_default is not None and best_base is not None and final_default - best_base >= 0.01),
        "pareto_le_100k_ge_0.935": bool(small and (small["test_accuracy"] or 0) >= 0.935),
    }
    stem = args.stem + (f"_{args.tag}" if args.tag else "")
    out = {"budget_s": args.budget_s, "seed": args.seed, "threads_per_arm": args.threads, "anytime": table, "goals": goals,
           "final": {n: a.get("final") for n, a in arms.items()}, "arms": arms, "baselines_from": args.reuse_baselines}
    (dest / f"{stem}.json").write_text(json.dumps(out, indent=2, default=str))
    if d.get("best_config"):
        shutil.copy(d["best_config"], dest / f"{stem}_best_config.json")
    how, lanes = "one run", "two lanes in parallel on 2 cores (default | reference then plain)"
    if args.reuse_baselines:
        how = (f"the default arm of this run against `reference` and `plain` from `{Path(args.reuse_baselines).name}` (same budget and "
               "seed; the change measured does not touch them)")
        lanes = ("the default arm from an earlier --arm default run (see its log for what ran beside it)" if args.default_result else
                 f"the default arm run here with no other arm beside it ({args.threads} thread(s) on the {os.cpu_count()}-core machine), "
                 "the baselines as they ran in the earlier run")
    md = [f"# Fashion-MNIST: the default path vs the baselines a user would pick, equal budget, {how}", "",
          f"Budget {args.budget_s:.0f} s per search arm, {args.threads} torch thread(s) per arm, {lanes}, seed {args.seed}. "
          "Official 10k test set. `benchmarks/fashion_default.py`.", "",
          "| arm | " + " | ".join(f"held at {m} s" for m in marks) + " | final | params | wall |", "|---|" + "---:|" * (len(marks) + 3)]
    for name, arm in arms.items():
        f = arm.get("final") or {}
        cells = [("-" if table[name][str(m)] is None else f"{table[name][str(m)]:.4f}") for m in marks]
        final = "none (no trial completed)" if f.get("test_accuracy") is None else f"{f['test_accuracy']:.4f}"
        params = "-" if f.get("params") is None else f"{int(f['params']):,}"
        md.append(f"| {name} | " + " | ".join(cells) + f" | {final} | {params} | {arm['wall_s']:.0f} s |")
    md += ["", f"- Default arm: {d['n_complete']} complete trials; final `{(d.get('final') or {}).get('summary', '')}`; "
               f"refit {json.dumps((d.get('final') or {}).get('refit'))}.",
           "- Best <= 100K-parameter trial of the default arm: "
           + (f"trial {small['number']} test {small['test_accuracy']:.4f} ({int(small['params']):,} params)." if small else "none."),
           f"- Goals: {json.dumps(goals)}", ""]
    (dest / f"{stem}.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name, arm in arms.items():
            pts = arm["anytime"]
            if pts:
                xs, ys = zip(*pts)
                ax.step(list(xs) + [args.budget_s], list(ys) + [ys[-1]], where="post", label=name)
        ax.set_xlabel("seconds since the arm started")
        ax.set_ylabel("test accuracy of the model held")
        ax.set_ylim(0.85, 0.96)
        ax.legend()
        fig.tight_layout()
        fig.savefig(dest / f"{stem}.png", dpi=120)
    except ImportError:
        pass
    print("\n".join(md), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference-epochs", type=int, default=12)
    ap.add_argument("--arm", choices=["default", "reference", "plain"], default=None, help="run one arm and print its JSON (the driver uses this)")
    ap.add_argument("--workspace", default=str(ROOT / "work" / "fashion_default"))
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--reuse-baselines", default=None, metavar="OLD.json",
                    help="run only the default arm; take reference and plain from this earlier fashion_default JSON")
    ap.add_argument("--default-result", default=None, metavar="LOG",
                    help="with --reuse-baselines: take the default arm from the output of an earlier --arm default run instead of running it")
    ap.add_argument("--tag", default=None, help="suffix of the result files (fashion_default_TAG.*); default: none, or 'rerun' with --reuse-baselines")
    ap.add_argument("--stem", default="fashion_default", help="first part of the result files' names (STEM[_TAG].*); "
                    "benchmarks/fashion_mnist.py passes fashion_mnist_default")
    args = ap.parse_args()
    if args.reuse_baselines and args.tag is None:
        args.tag = "rerun"
    if args.arm == "reference":
        print("RESULT " + json.dumps(run_reference(args)), flush=True)
        return 0
    if args.arm == "default":
        print("RESULT " + json.dumps(run_search_arm("default", args, []), default=str), flush=True)
        return 0
    if args.arm == "plain":
        print("RESULT " + json.dumps(run_search_arm("plain", args, ["--no-known-good"]), default=str), flush=True)
        return 0
    Path(args.workspace).mkdir(parents=True, exist_ok=True)
    if args.reuse_baselines:
        old = json.loads(Path(args.reuse_baselines).read_text())
        if old.get("budget_s") != args.budget_s or old.get("seed") != args.seed:
            print(f"error: {args.reuse_baselines} was run with budget {old.get('budget_s')} s and seed {old.get('seed')}, not "
                  f"{args.budget_s} s and {args.seed}; rerun the baselines or match --budget-s and --seed", file=sys.stderr)
            return 2
        if args.default_result:  # the default arm was run earlier with --arm default (its output has the RESULT line)
            found = last_result(Path(args.default_result).read_text())
            if found is None:
                print(f"error: {args.default_result} has no RESULT line; pass the output of a finished --arm default run", file=sys.stderr)
                return 2
            default = found
        else:
            default = run_search_arm("default", args, [])
        arms = {"default": default, "reference": old["arms"]["reference"], "plain": old["arms"]["plain"]}
        write_results(arms, args)
        return 0
    base = [sys.executable, __file__, "--budget-s", str(args.budget_s), "--seed", str(args.seed), "--threads", str(args.threads),
            "--reference-epochs", str(args.reference_epochs), "--workspace", args.workspace, "--out", args.out]

    def lane(names: list[str]) -> subprocess.Popen[str]:
        script = " && ".join(" ".join([*map(_quote, base), "--arm", n]) for n in names)
        return subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True, env=_env(args))

    import threading

    arms: dict[str, dict[str, Any]] = {}

    def pump(proc: subprocess.Popen[str]) -> None:  # one reader per lane, so neither blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                arm = json.loads(line[len("RESULT "):])
                arms[arm["arm"]] = arm
            else:
                print(line, end="", flush=True)
        proc.wait()

    readers = [threading.Thread(target=pump, args=(lane(names),)) for names in (["default"], ["reference", "plain"])]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    missing = {"default", "reference", "plain"} - set(arms)
    if missing:
        print(f"error: the arm(s) {', '.join(sorted(missing))} produced no result; see the log above", file=sys.stderr)
        return 1
    write_results({n: arms[n] for n in ("default", "reference", "plain")}, args)
    return 0


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


if __name__ == "__main__":
    raise SystemExit(main())
