"""How accurate is a linear head fitted on a trained network's frozen body? (results/fashion_head_probe.json)

The one training's small companion (``training.frozen``) is the 4-conv net's body with a linear head fitted on its
features. This probe measures that on a finished run's weights, before (and beside) the search does it: it loads a
workspace's ``best_config.json`` + ``best_weights.safetensors``, computes the body's features for every split once (the
first ``--upto`` body layers, then ``--pool`` max-pooling, flattened), and fits a fresh linear head on the training split's
features with a few recipes; each row gives the head's parameters, the validation and test accuracy.

``--upto`` below the whole body probes a prefix of a larger body (the wide net's first three convolutions and a 2x2 pool
give a 3136-feature head and ~87K parameters in all), to see whether a wider one training could also yield a <= 100K point.

    python benchmarks/head_probe.py --run WORKSPACE/STUDY --seed 3 [--upto 4 --pool 2] [--threads 2] [--label NAME]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nas_core.data import load_dataset
from nas_core.deploy.config import build_model

RESULTS = Path(__file__).resolve().parent / "results"
# (lr, weight decay, epochs, dropout): the companion's recipe at 20 epochs (what the search runs), and two others
RECIPES = [(3e-3, 5e-2, 20, 0.3), (1e-3, 1e-2, 30, 0.0), (3e-3, 5e-4, 30, 0.3)]


def features(model: Any, x: torch.Tensor, upto: int | None, pool: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            f = model.features(x[i : i + 1000], upto=upto)
            if pool > 1:
                f = F.max_pool2d(f, pool, ceil_mode=True)
            out.append(f.flatten(1))
    return torch.cat(out)


def fit(ft: torch.Tensor, yt: torch.Tensor, lr: float, wd: float, epochs: int, drop: float, classes: int, seed: int) -> torch.nn.Module:
    """A linear head (dropout first) trained with AdamW, one-cycle, label smoothing 0.1, batch 256."""
    torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Dropout(drop), torch.nn.Linear(ft.shape[1], classes))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    steps = epochs * ((len(ft) + 255) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        head.train()
        perm = torch.randperm(len(ft), generator=gen)
        for i in range(0, len(ft), 256):
            idx = perm[i : i + 256]
            opt.zero_grad()
            loss_fn(head(ft[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    return head.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a study folder with best_config.json and best_weights.safetensors")
    ap.add_argument("--seed", type=int, required=True, help="the run's --seed (its data split)")
    ap.add_argument("--upto", type=int, default=None, help="body layers to keep (default: all)")
    ap.add_argument("--pool", type=int, default=1, help="max-pooling after them (1: none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default=str(RESULTS / "fashion_head_probe.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    config = json.loads((run / "best_config.json").read_text())
    model = build_model(run / "best_config.json", weights=run / "best_weights.safetensors").eval()
    data = load_dataset(config["provenance"].get("dataset_arg") or "fashion-mnist", seed=args.seed)
    kept = list(model.body)[: args.upto]
    body_params = sum(p.numel() for layer in kept for p in layer.parameters())
    t0 = time.perf_counter()
    ft, fv, fs = (features(model, x, args.upto, args.pool) for x in (data.x_train, data.x_val, data.x_test))
    feature_s = time.perf_counter() - t0
    with torch.no_grad():
        own = float((model(data.x_test).argmax(1) == data.y_test).float().mean()) if args.upto is None else None
    rows = []
    for lr, wd, epochs, drop in RECIPES:
        t1 = time.perf_counter()
        head = fit(ft, data.y_train, lr, wd, epochs, drop, data.num_classes, args.seed)
        with torch.no_grad():
            val = float((head(fv).argmax(1) == data.y_val).float().mean())
            test = float((head(fs).argmax(1) == data.y_test).float().mean())
        row = {"lr": lr, "weight_decay": wd, "epochs": epochs, "dropout": drop, "val_accuracy": round(val, 4),
               "test_accuracy": round(test, 4), "params": body_params + sum(p.numel() for p in head.parameters()),
               "head_seconds": round(time.perf_counter() - t1, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    entry = {"label": args.label or run.parent.name, "run": str(run), "seed": args.seed, "design": model.arch.summary(),
             "network_params": config["metrics"].get("params"), "network_test_accuracy": own,
             "network_epochs": config["metrics"].get("epochs_trained"), "upto": args.upto, "pool": args.pool,
             "features": int(ft.shape[1]), "feature_seconds": round(feature_s, 1), "threads": args.threads, "heads": rows}
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {"note": __doc__.splitlines()[0], "runs": []}
    old["runs"] = [r for r in old["runs"] if r.get("label") != entry["label"]] + [entry]
    out.write_text(json.dumps(old, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
