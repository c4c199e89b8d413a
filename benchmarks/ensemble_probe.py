"""Does the hour buy more as one long training or as an ensemble of shorter ones? (results/fashion_ensemble_probe*.json)

``train`` mode trains one known-good design on Fashion-MNIST the way the one training does (its own recipe, optionally
changed with ``--set key=value``, ``--epochs`` on the training split of split seed ``--split``, the best validation
epoch kept, or on train + validation with ``--set train_split=train+val``, the last epoch kept; initial weights and
batches from ``--seed``) and saves its softmax on the validation and test splits, plain
and averaged over the image and its four 1-px shifts (``tta_probe``'s ``shift5``), in ``--out``/NAME.npz.

``report`` mode reads those files and compares, at equal training epochs, single models of E epochs with the average
of k models of E/k epochs trained on the same split (the ensemble an hour could hold instead), each with a 95 % paired
bootstrap interval over the 10,000 test images; and every two single models of different ``--variant`` on the same
split, and each model with the shifted views against itself without, paired the same way.

    python benchmarks/ensemble_probe.py train --epochs 40 --split 0 --seed 0 --device auto --out DIR
    python benchmarks/ensemble_probe.py train --epochs 20 --split 0 --seed 1000 --device auto --out DIR
    python benchmarks/ensemble_probe.py report DIR --out benchmarks/results/fashion_trainval_probe_cpu_split4.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from design_probe import paired_interval  # type: ignore[import-not-found]  # beside this script
from tta_probe import VIEWS, train_design, view_softmax  # type: ignore[import-not-found]

from nas_core.data import load_dataset
from nas_core.schema.config import TrainingRecipe


def train(args: argparse.Namespace) -> None:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = type(getattr(TrainingRecipe(), key))(value)
        except (AttributeError, ValueError) as exc:
            raise SystemExit(f"--set {item}: not a training recipe key=value ({exc})") from None
    data = load_dataset("fashion-mnist", seed=args.split, train_samples=args.train_samples, data_dir=args.data_dir)
    model, recipe, history, wall = train_design(
        data, args.design, epochs=args.epochs, seed=args.seed, device=device, recipe_overrides=overrides
    )
    model = model.to(device)
    name = args.name or f"{args.variant}_e{args.epochs}_split{args.split}_seed{args.seed}"
    model.eval()
    arrays = {f"{split}_{view}": view_softmax(model, x, VIEWS[view], device).numpy()
              for split, x in (("val", data.x_val), ("test", data.x_test)) for view in ("none", "shift5")}
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / f"{name}.npz", y_val=data.y_val.numpy(), y_test=data.y_test.numpy(), **arrays)
    meta = {"name": name, "variant": args.variant, "design": args.design, "epochs": args.epochs, "split": args.split,
            "seed": args.seed, "device": device, "recipe": recipe.__dict__, "train_s": round(wall, 1),
            "val_by_epoch": [round(float(r["val_accuracy"]), 4) for r in history],
            **{f"test_accuracy{'' if view == 'none' else '_' + view}": round(float((arrays[f"test_{view}"].argmax(1) == data.y_test.numpy()).mean()), 4)
               for view in ("none", "shift5")}}
    (args.out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("RESULT", json.dumps(meta), flush=True)


def report(args: argparse.Namespace) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(args.folder.glob("*.json"))]
    probs = {r["name"]: np.load(args.folder / f"{r['name']}.npz") for r in runs}
    y = next(iter(probs.values()))["y_test"]
    by_key: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_key[(r["variant"], r["epochs"], r["split"])].append(r)
    rows: list[dict[str, Any]] = []
    for (variant, epochs, split), members in sorted(by_key.items()):
        members.sort(key=lambda r: r["seed"])
        for view in ("none", "shift5"):
            for k in range(1, len(members) + 1):
                rows.append({"variant": variant, "member_epochs": epochs, "members": k, "epochs": epochs * k,
                             "split": split, "view": view, "seeds": [m["seed"] for m in members[:k]],
                             "test_accuracy": round(float(_hits(probs, members[:k], view, y).mean()), 4)})
    comparisons = []
    for r in rows:  # an ensemble against the single model of as many epochs, same variant and split
        single = by_key.get((r["variant"], r["epochs"], r["split"]))
        if r["members"] < 2 or r["view"] != "none" or not single:
            continue
        a = _hits(probs, by_key[(r["variant"], r["member_epochs"], r["split"])][: r["members"]], "none", y)
        b = _hits(probs, single[:1], "none", y)
        diff = a.astype(float) - b
        comparisons.append({"ensemble": f"{r['members']} x {r['member_epochs']} epochs", "single": f"1 x {r['epochs']} epochs",
                            "split": r["split"], "ensemble_test": r["test_accuracy"], "single_test": round(float(b.mean()), 4),
                            "diff": round(float(diff.mean()), 4), "diff_95ci": paired_interval(diff)})
    # every two single models of different variants on the same split (e.g. train + val against train), paired by image
    versus = []
    firsts = {key: sorted(ms, key=lambda r: r["seed"])[0] for key, ms in by_key.items()}
    for (va, _ea, sa), a_run in sorted(firsts.items()):
        for (vb, _eb, sb), b_run in sorted(firsts.items()):
            if sa != sb or va >= vb:
                continue
            a, b = _hits(probs, [a_run], "none", y), _hits(probs, [b_run], "none", y)
            diff = a.astype(float) - b
            versus.append({"split": sa, "a": a_run["name"], "b": b_run["name"], "a_test": round(float(a.mean()), 4),
                           "b_test": round(float(b.mean()), 4), "a_minus_b": round(float(diff.mean()), 4),
                           "a_minus_b_95ci": paired_interval(diff)})
    for r in runs:  # the five shifted views against the plain image, per model
        diff = _hits(probs, [r], "shift5", y).astype(float) - _hits(probs, [r], "none", y)
        versus.append({"split": r["split"], "a": f"{r['name']} (shift5 views)", "b": r["name"], "a_minus_b": round(float(diff.mean()), 4),
                       "a_minus_b_95ci": paired_interval(diff)})
    result = {"runs": runs, "rows": rows, "equal_epochs": comparisons, "versus": versus}
    for v in versus:
        print(v)
    for c in comparisons:
        print(c)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def _hits(probs: dict[str, Any], members: list[dict[str, Any]], view: str, y: np.ndarray) -> np.ndarray:
    p = sum(probs[m["name"]][f"test_{view}"] for m in sorted(members, key=lambda r: r["seed"]))
    return (p.argmax(1) == y).astype(np.int8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("--design", default="4-conv BN CNN")
    t.add_argument("--variant", default="base", help="a label for the recipe (runs of one label, epochs and split pool)")
    t.add_argument("--set", action="append", default=[], help="a recipe change, key=value (repeatable)")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--split", type=int, default=0, help="load_dataset's split seed (an hour's --seed)")
    t.add_argument("--seed", type=int, default=0, help="the training's seed (initial weights, batches, augmentation)")
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--train-samples", type=int, default=None, help="a stratified subsample (a smoke run)")
    t.add_argument("--data-dir", default=None, help="a folder with Fashion-MNIST's IDX files (default: the Debian package's)")
    t.add_argument("--name", default="")
    t.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("folder", type=Path)
    r.add_argument("--out", type=Path)
    args = ap.parse_args()
    train(args) if args.mode == "train" else report(args)


if __name__ == "__main__":
    main()
