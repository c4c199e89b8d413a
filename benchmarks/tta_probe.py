"""Does test-time augmentation raise a known-good design's accuracy on Fashion-MNIST? (results/fashion_tta_probe.json)

Trains one design of ``search.seeds.known_good_designs`` with its own recipe for ``--epochs`` on the training split, then
scores it on validation and test with its softmax averaged over views of each image: ``none``; ``shift5`` (the image
and its four 1-px shifts, padded with the background value); ``shift9`` (the 3x3 grid of 1-px shifts); ``flip2`` (the
image and its mirror). Each view's gain over ``none`` on test gets a 95 % paired bootstrap interval.

    python benchmarks/tta_probe.py --design "small CNN (<= 100K)" --epochs 12 --seed 0 [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas_core.data import load_dataset
from nas_core.model.assembly import assemble
from nas_core.search.seeds import known_good_designs, replay
from nas_core.space import load_space
from nas_core.training.loop import set_seed, train_model

# (dx, dy) shifts of each view; "flip2" is the image and its mirror
VIEWS: dict[str, list[tuple[int, int]]] = {
    "none": [(0, 0)],
    "shift5": [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)],
    "shift9": [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)],
    "flip2": [],
}


def shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``x`` moved by (dx, dy) pixels, the edge filled with the background (the smallest normalised value)."""
    if dx == 0 and dy == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), value=float(x.min()))
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def view_softmax(model: torch.nn.Module, x: torch.Tensor, views: list[tuple[int, int]], device: str = "cpu") -> torch.Tensor:
    """The model's softmax on ``x`` averaged over the shifted ``views`` (no views: the image and its mirror), computed on
    ``device`` in batches of 1,000, returned on the CPU in float32."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            xb = x[i : i + 1000].to(device)
            if not views:  # the mirror
                p = (model(xb).softmax(1) + model(xb.flip(-1)).softmax(1)) / 2
            else:
                p = sum(model(shifted(xb, dx, dy)).softmax(1) for dx, dy in views) / len(views)
            out.append(p.float().cpu())
    return torch.cat(out)


def correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, views: list[tuple[int, int]]) -> np.ndarray:
    """1 where the view-averaged prediction is right, 0 where it is wrong, per image."""
    return (view_softmax(model, x, views).argmax(1) == y).numpy().astype(np.int8)


def train_design(
    data: Any, design: str, *, epochs: int, seed: int, device: str = "cpu", recipe_overrides: dict[str, Any] | None = None
) -> tuple[torch.nn.Module, Any, list[dict[str, float]], float]:
    """(model, recipe, history, seconds) of the known-good ``design`` (a seed-cnn design) trained on ``data`` with its own
    recipe (with ``recipe_overrides``) for ``epochs`` on ``device``: on the training split, keeping its best validation
    epoch, unless the overrides say ``train_split="train+val"`` (then the last epoch, as a refit); each epoch is printed."""
    space = load_space("seed-cnn")
    shape = (int(data.input_shape[0]), int(data.input_shape[1]), int(data.input_shape[2]))
    designs = dict(known_good_designs("seed-cnn", shape))
    arch, recipe = space.build(replay(space, designs[design]), input_shape=shape, num_classes=data.num_classes, epochs=epochs)
    recipe = replace(recipe, **{"epochs": epochs, "patience": epochs + 1, "train_split": "train", **(recipe_overrides or {})}).validate()
    set_seed(seed)
    model = assemble(arch)
    t0 = time.perf_counter()
    history = train_model(model, data, recipe, device=torch.device(device), seed=seed,
                          on_epoch=lambda e, end, row: print(e, end, {k: round(v, 4) for k, v in row.items()}, flush=True))
    return model, recipe, history, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--design", default="small CNN (<= 100K)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", seed=args.seed)
    model, _, _, wall = train_design(data, args.design, epochs=args.epochs, seed=args.seed)
    model.eval()
    hits = {(split, v): correct(model, x, y, views) for split, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test))
            for v, views in VIEWS.items()}
    rng = np.random.default_rng(0)
    n = len(data.y_test)
    gains: dict[str, list[float]] = {}
    for v in VIEWS:
        if v != "none":
            diff = hits["test", v].astype(float) - hits["test", "none"]
            boot = [diff[rng.integers(0, n, n)].mean() for _ in range(2000)]
            gains[v] = [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)]
    result: dict[str, Any] = {
        "design": args.design, "epochs": args.epochs, "seed": args.seed, "train_seconds": round(wall, 1),
        "val_accuracy": {v: round(float(hits["val", v].mean()), 4) for v in VIEWS},
        "test_accuracy": {v: round(float(hits["test", v].mean()), 4) for v in VIEWS},
        "test_minus_none_95ci": gains,
    }
    print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
