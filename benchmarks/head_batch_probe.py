"""Does a larger batch make the head fitted on the one training's frozen body cheaper at the same accuracy?
(results/fashion_head_batch_probe.json)

The one training's small companion fits a linear head on the 4-conv net's frozen body (``training.frozen.fit_head``) with
its design's recipe, batch 64: ~77-91 s of the hour for 20 epochs. This fits the same head with the search's own code on
a finished hour's trained body (seed 8's run), batch 64 (what the search does), 256 and 512, two seeds each, and
reports the seconds and the validation and test accuracy. Seed 9 at batch 64 is the hour's own head (its trial seed).

    python benchmarks/head_batch_probe.py --run WORKSPACE/default --study fashion-mnist-seed-cnn --split-seed 8 \
        --small results/fashion_default_2threads_seed8_small_config.json 64 256 512
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from nas_core.data import load_dataset
from nas_core.model.assembly import assemble
from nas_core.schema.config import ModelConfig
from nas_core.training.frozen import body_state, fit_head
from nas_core.training.measure import measure_model

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="the default arm's workspace of a finished hour (cache/ and STUDY/weights/)")
    ap.add_argument("--study", default="fashion-mnist-seed-cnn")
    ap.add_argument("--split-seed", type=int, required=True, help="the hour's --seed (its data split)")
    ap.add_argument("--small", required=True, help="the hour's small design config (_small_config.json)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("batches", type=int, nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    small = ModelConfig.from_dict(json.loads(Path(args.small).read_text()))
    body = body_state(load_file(str(run / args.study / "weights" / f"trial_{small.provenance['body_from']['trial']}.safetensors")))
    data = load_dataset("fashion-mnist", seed=args.split_seed, cache_dir=run / "cache")
    cpu, rows = torch.device("cpu"), []
    for batch in args.batches:
        for seed in (int(small.provenance["seed"]), int(small.provenance["seed"]) + 1):
            torch.manual_seed(seed)
            model = assemble(small.architecture)
            start = time.perf_counter()
            _, feature_s = fit_head(model, data, replace(small.training, batch_size=batch), body, device=cpu, seed=seed)
            total = time.perf_counter() - start
            m = measure_model(model, data, cpu)["metrics"]
            rows.append({"batch": batch, "seed": seed, "features_s": round(feature_s, 1), "head_s": round(total - feature_s, 1),
                         "val": m["val_accuracy"], "test": m["test_accuracy"]})
            print(rows[-1], flush=True)
    out = RESULTS / "fashion_head_batch_probe.json"
    out.write_text(json.dumps({"run": str(run), "split_seed": args.split_seed, "threads": args.threads, "rows": rows}, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
