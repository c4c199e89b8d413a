"""Would another known-good design serve the one training better? (results/fashion_design_probe_*.json)

Trains one design of ``search.seeds.known_good_designs`` on Fashion-MNIST the way the one training does (its own recipe,
``--epochs`` on the training split, the best validation epoch kept), then scores it on the test split against a model
an hour's run kept on the same split (``--against``: its ``best_config.json`` and ``best_weights.safetensors``), with a
95 % paired bootstrap interval of the difference over the 10,000 test images. The pairing removes the test images'
difficulty from the comparison, not the training's own seed-to-seed spread, which one pair cannot measure.

    python benchmarks/design_probe.py --design "small ResNet" --epochs 27 --seed 12 \
        --against WORKSPACE/fashion-mnist-seed-cnn --out benchmarks/results/fashion_design_probe_resnet.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tta_probe import VIEWS, correct, train_design  # type: ignore[import-not-found]  # beside this script (run as python benchmarks/...)

from nas_core.data import load_dataset
from nas_core.deploy.config import build_model


def hits(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """1 where ``model`` (put in eval mode) predicts the label, 0 where it does not, per image."""
    model.eval()
    return correct(model, x, y, VIEWS["none"])


def paired_interval(diff: np.ndarray, *, draws: int = 5000, seed: int = 0) -> list[float]:
    """95 % bootstrap interval of the mean of per-image differences (resampling images, both models together).

    Example:
        >>> paired_interval(np.zeros(100))
        [0.0, 0.0]
    """
    rng = np.random.default_rng(seed)
    boot = [float(diff[rng.integers(0, len(diff), len(diff))].mean()) for _ in range(draws)]
    return [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--design", default="small ResNet")
    ap.add_argument("--epochs", type=int, default=27)
    ap.add_argument("--seed", type=int, default=12, help="the data split and training seed (match the --against run's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--against", type=Path, required=True, help="a run's output folder with best_config.json and best_weights.safetensors")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", seed=args.seed)
    model, recipe, history, wall = train_design(data, args.design, epochs=args.epochs, seed=args.seed)
    mine = hits(model, data.x_test, data.y_test)
    reference = build_model(args.against / "best_config.json", weights=args.against / "best_weights.safetensors")
    theirs = hits(reference, data.x_test, data.y_test)
    diff = mine.astype(float) - theirs
    result: dict[str, Any] = {
        "design": args.design, "epochs": args.epochs, "seed": args.seed, "threads": args.threads, "recipe": recipe.__dict__,
        "params": sum(t.numel() for t in model.parameters()), "train_s": round(wall, 1),
        "val_by_epoch": [round(float(r["val_accuracy"]), 4) for r in history],
        "seconds_by_epoch": [round(float(r["seconds"]), 1) for r in history],
        "test_accuracy": round(float(mine.mean()), 4),
        "against": {"path": str(args.against), "params": sum(t.numel() for t in reference.parameters()),
                    "test_accuracy": round(float(theirs.mean()), 4)},
        "test_minus_against": round(float(diff.mean()), 4), "test_minus_against_95ci": paired_interval(diff),
    }
    print("RESULT", json.dumps(result), flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
