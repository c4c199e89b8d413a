"""``python -m nas_core library build|list|inspect``: the module library from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nas_core.cli.args import positive_number, workspace_arg


def _workspace(arg: str | None) -> Path:
    return workspace_arg(arg)


def _cmd_build(args: Any) -> int:
    import sys

    import torch as _torch

    if args.threads:
        _torch.set_num_threads(args.threads)
    start = time.perf_counter()
    from nas_core.library import build_library  # torch: imported when the command runs, not for --help

    lib = build_library(dataset=args.dataset, workspace=_workspace(args.workspace), minutes=args.minutes, seed=args.seed,
                        data_dir=args.data_dir, train_samples=args.train_samples, emit=lambda m: print(m, file=sys.stderr),
                        device=args.device)
    print(f"{len(lib)} blocks in {lib.root} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    print(lib.root)
    return 0


def _cmd_list(args: Any) -> int:
    import sys

    from nas_core.library import open_library

    lib = open_library(_workspace(args.workspace))
    rows = sorted(lib.blocks(), key=lambda m: (m.kind, m.in_channels, m.out_channels, m.id))
    if args.json:
        print(json.dumps([m.to_dict() for m in rows]))
    else:
        if not rows:
            print(f"no blocks in {lib.root}; build some with `python -m nas_core library build --dataset digits`", file=sys.stderr)
        for m in rows:
            print(f"{m.id:44s} {m.kind:9s} {str(m.input_shape):>10s} -> {str(m.output_shape):10s} {m.params:>8,d} params "
                  f"{m.flops / 1e6:8.2f} MFLOPs {m.latency_ms:7.3f} ms  {m.source_dataset} (donor acc {m.donor_accuracy:.3f})")
    for name, why in sorted(lib.problems.items()):
        print(f"warning: refused {name}: {why}", file=sys.stderr)
    return 0


def _cmd_inspect(args: Any) -> int:
    from nas_core.library import open_library

    lib = open_library(_workspace(args.workspace))
    meta = lib.get(args.id)
    lib.load_state(meta.id)  # verifies the checksum: inspect says whether the block is usable
    print(json.dumps({**meta.to_dict(), "verified": True}, indent=2))
    return 0


def add_library_parser(subparsers: Any) -> None:
    """Add ``library build|list|inspect`` to the CLI (called by :mod:`nas_core.cli`)."""
    p = subparsers.add_parser("library", help="build, list and inspect the module library of pretrained blocks")
    sub = p.add_subparsers(dest="library_command", metavar="ACTION", parser_class=type(p))
    sub.required = True
    b = sub.add_parser("build", help="train donor networks and store their blocks (safetensors + JSON)")
    b.add_argument("--dataset", required=True, help="digits, mnist, fashion-mnist, cifar10, or a path")
    b.add_argument("--workspace", default=None, help="folder holding library/ (default $MOCA_HOME or ./moca_runs)")
    b.add_argument("--minutes", type=positive_number("minutes"), default=5.0, help="training budget for all donors (default 5)")
    b.add_argument("--seed", type=int, default=0, help="split and training seed (default 0; use the search's seed)")
    b.add_argument("--data-dir", default=None)
    b.add_argument("--train-samples", type=int, default=None, help="train the donors on N samples of the training split")
    b.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the donors train (auto picks CUDA when present)")
    b.set_defaults(handler=_cmd_build)
    ls = sub.add_parser("list", help="list the blocks of the library")
    ls.add_argument("--workspace", default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_cmd_list)
    i = sub.add_parser("inspect", help="print one block's metadata and verify its checksum")
    i.add_argument("id")
    i.add_argument("--workspace", default=None)
    i.set_defaults(handler=_cmd_inspect)
