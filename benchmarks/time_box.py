"""A time-boxed training the machine turns too slow for: cut mid-schedule (before) vs its schedule compressed to end annealed.

The one training of a timed search, its companion and the final refit have their epochs fitted to a timing. When the
machine then runs slower (other work on its cores), the time box ends them early. Before, the training was cut where
the deadline fell, mid-schedule, at a high learning rate, and kept the model of its last whole epoch (the final refit
threw its model away). ``train_model(time_left=)`` can instead compress the rest of the schedule into the epochs that still
fit, so the training ends annealed inside the box. This measures whether that is better, and so decides when it is done
(``training.loop.ANNEAL_SPARE``'s note): the arm ``annealed`` compresses whatever the recipe (``--ema`` sets its weight
averaging; the known-good designs' EMA is kept by default).

Simulated on a clock that advances one unit per epoch, so both arms see exactly the same slow-down: a schedule planned
for ``--planned`` epochs, of which ``--fits`` fit. Arm ``cut``: ``time_up`` after that many epochs (the model of the best
validation epoch, as the one training keeps it; the last for a refit). Arm ``annealed``: ``time_left`` from the same clock.
The known-good 4-conv design with its recipe, one seed per row (data split and training), test accuracy. Paired
bootstrap over seeds of annealed minus cut.

    python benchmarks/time_box.py [--dataset digits] [--planned 40] [--fits 16] [--seeds 0-9] [--refit]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent


def run(dataset: str, seed: int, args: argparse.Namespace, arm: str) -> dict[str, Any]:
    import torch

    from nas_core.data import load_dataset
    from nas_core.model.assembly import assemble
    from nas_core.search import SearchConfig
    from nas_core.search.seeds import known_good_designs, replay
    from nas_core.training import loop
    from nas_core.training.measure import predict

    torch.set_num_threads(1)
    data = load_dataset(dataset, seed=seed, train_samples=args.train_samples)
    shape = tuple(int(v) for v in data.x_train.shape[1:])
    space = SearchConfig(dataset=dataset).search_space()
    name, values = known_good_designs("seed-cnn", shape)[0]
    arch, recipe = space.build(replay(space, values), input_shape=shape, num_classes=int(data.num_classes), epochs=args.planned)
    recipe = type(recipe)(**{**recipe.to_dict(), "patience": args.planned,
                             "train_split": "train+val" if args.refit else "train",
                             **({} if args.ema is None else {"ema_decay": args.ema})})
    clock = [0.0]  # whole epochs done: the fake machine's time, one unit an epoch
    saved = loop.time, loop.ANNEAL_SPARE, loop.COMPRESS_WITH_EMA
    loop.ANNEAL_SPARE, loop.COMPRESS_WITH_EMA = 0.0, True  # the annealed arm compresses whatever the recipe
    loop.time = SimpleNamespace(perf_counter=lambda: clock[0])  # type: ignore[assignment]  # the loop's laps read the fake clock
    box: dict[str, Any] = {"time_up": lambda: clock[0] >= args.fits}
    if arm == "annealed":
        box["time_left"] = lambda: args.fits - clock[0]
    t = time.perf_counter()
    try:
        loop.set_seed(seed)
        model = assemble(arch)
        hist = loop.train_model(model, data, recipe, device=torch.device("cpu"), seed=seed,
                                on_epoch=lambda *_: clock.__setitem__(0, clock[0] + 1), **box)
    finally:
        loop.time, loop.ANNEAL_SPARE, loop.COMPRESS_WITH_EMA = saved  # type: ignore[assignment]
    pred = predict(model, data.x_test, torch.device("cpu"))
    acc = float((pred == data.y_test.numpy()).mean())
    return {"seed": seed, "arm": arm, "design": name, "epochs_trained": len(hist), "test_accuracy": acc,
            "test_errors": int((pred != data.y_test.numpy()).sum()), "n_test": len(data.y_test), "seconds": time.perf_counter() - t,
            "schedule_epochs": hist[-1].get("schedule_epochs") if hist else None}


def main() -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--planned", type=int, default=40)
    ap.add_argument("--fits", type=int, default=16)
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--refit", action="store_true", help="train on train + validation and keep the last epoch (the final refit)")
    ap.add_argument("--ema", type=float, default=None, help="override the design's ema_decay (0: no weight averaging)")
    ap.add_argument("--boot", type=int, default=5000)
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    rows = []
    for seed in seeds:
        for arm in ("cut", "annealed"):
            row = run(args.dataset, seed, args, arm)
            rows.append(row)
            print(json.dumps(row), flush=True)
    cut = np.array([r["test_accuracy"] for r in rows if r["arm"] == "cut"])
    ann = np.array([r["test_accuracy"] for r in rows if r["arm"] == "annealed"])
    diff = ann - cut
    rng = np.random.default_rng(0)
    boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(args.boot)]
    ci = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    name = args.name or f"time_box_{args.dataset}{'_refit' if args.refit else ''}{'' if args.ema is None else f'_ema{args.ema:g}'}"
    result = {"setup": {k: v for k, v in vars(args).items() if k not in ("out", "name")}, "rows": rows,
              "mean_cut": float(cut.mean()), "mean_annealed": float(ann.mean()), "mean_diff": float(diff.mean()), "diff_ci95": ci,
              "annealed_better": int((diff > 0).sum()), "cut_better": int((diff < 0).sum()), "ties": int((diff == 0).sum())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    md = [f"# Time box: cut mid-schedule vs compressed to end annealed ({args.dataset}{', refit on train + validation' if args.refit else ''})", "",
          f"The known-good 4-conv design and recipe, planned for {args.planned} epochs of which {args.fits} fit (a simulated "
          f"slow-down, the same for both arms), {args.train_samples or 'all'} training images, "
          f"{'the design' + chr(39) + 's weight averaging' if args.ema is None else f'ema_decay {args.ema:g}'}, one seed per row. "
          f"`python benchmarks/time_box.py --dataset {args.dataset} --planned {args.planned} --fits {args.fits} --seeds {args.seeds}"
          f"{' --refit' if args.refit else ''}{f' --train-samples {args.train_samples}' if args.train_samples else ''}"
          f"{'' if args.ema is None else f' --ema {args.ema:g}'}`.", "",
          "| seed | cut: test acc | annealed: test acc | difference |", "|---:|---:|---:|---:|"]
    for s, a, b in zip(seeds, cut, ann):
        md.append(f"| {s} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    md += ["", f"Mean: cut {cut.mean():.4f}, annealed {ann.mean():.4f}; annealed minus cut {diff.mean():+.4f} "
               f"(95 % paired bootstrap over seeds {ci[0]:+.4f} to {ci[1]:+.4f}); annealed better on {result['annealed_better']} seeds, "
               f"cut better on {result['cut_better']}, {result['ties']} ties.", ""]
    (out / f"{name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
