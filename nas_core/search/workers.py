"""``search --workers N``: N local ``worker`` processes on one shared storage, stopped together, finalized once.

Each child is ``python -m nas_core worker`` with the parent's flags, its share of ``--trials``, its own sampler
seed (the data split stays the parent's ``--seed``) and, with several GPUs visible, its own GPU. The parent
shows one progress bar over the study, forwards a stop signal to every child, and after they end runs the
fidelity's final phase once (through the claim every worker takes) and writes the study's outputs.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from typing import Any

from nas_core.errors import ConfigError

__all__ = ["check_workers", "child_argv", "run_workers"]


def check_workers(n: int, storage_url: str) -> None:
    """SQLite serialises writers: several processes on one file wait on each other's locks instead of running."""
    if n > 1 and storage_url.startswith("sqlite"):
        raise ConfigError(
            f"--workers {n} needs a storage many processes can write at once, but {storage_url.split('://')[0]} takes one writer "
            "at a time; pass --storage postgresql+psycopg2://USER@HOST/DB (see docs/scale-out.md) or use --workers 1."
        )


def _strip(argv: list[str], flag: str, takes_value: bool) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = takes_value
            continue
        if takes_value and a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def child_argv(argv: list[str], *, index: int, study: str, trials: int | None) -> list[str]:
    """The ``worker`` command line for child ``index`` from the parent's ``search`` arguments."""
    args = list(argv)
    args = args[args.index("search") + 1 :] if "search" in args else args
    for flag, value in (("--workers", True), ("--study", True), ("--trials", True), ("--events-jsonl", True), ("--quiet", False)):
        args = _strip(args, flag, value)
    out = [sys.executable, "-m", "nas_core", "worker", *args, "--study", study, "--worker-index", str(index), "--quiet",
           "--no-finalize"]
    if index > 0 and "--no-known-good" not in out:
        out.append("--no-known-good")  # worker 0 runs the known-good designs; the others would each queue the same ones
    if trials is not None:
        out += ["--trials", str(trials)]
    return out


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch CUDA: CPU workers
        return 0


def run_workers(config: Any, n: int, argv: list[str], *, stop: Any, quiet: bool = False) -> tuple[int, list[str]]:
    """Run ``n`` workers to the end (or until ``stop`` is set); returns (failed workers, their last error lines)."""
    import optuna

    from nas_core.workspace.storage import shared_storage

    shares = [None] * n if config.trials is None else [math.ceil(config.trials / n)] * n
    if config.trials is not None:
        shares[-1] = max(1, config.trials - sum(shares[:-1]))  # type: ignore[operator]
    gpus = _gpus()
    env_base = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), os.getcwd()) if p)}
    import tempfile

    procs, logs = [], []
    for i in range(n):
        log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty child never blocks on a full pipe
        logs.append(log)
        env = dict(env_base)
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(subprocess.Popen(child_argv(argv, index=i, study=config.study_name, trials=shares[i]), env=env,
                                      stdout=subprocess.DEVNULL, stderr=log, text=True))
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=config.trials, desc=f"study {config.study_name} ({n} workers)", unit="trial", file=sys.stderr,
                   dynamic_ncols=True)
    forwarded = False
    last_count = 0
    try:
        while any(p.poll() is None for p in procs):
            if stop.is_set() and not forwarded:
                forwarded = True
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)  # each child ends its trial at the next batch and records it
            if bar is not None:
                try:
                    study = optuna.load_study(study_name=config.study_name, storage=shared_storage(config.storage_url()))
                    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
                    bar.update(max(0, done - last_count))
                    last_count = max(last_count, done)
                except Exception:  # noqa: BLE001 - the study may not exist until the first worker made it
                    pass
            time.sleep(0.05 if stop.is_set() else 0.5)
    finally:
        if bar is not None:
            bar.close()
    errors = []
    for p, log in zip(procs, logs):
        log.seek(0)
        err = log.read()
        log.close()
        if p.returncode not in (0, 130, 143):
            lines = [line for line in err.splitlines() if line.strip()]
            errors.append(lines[-1] if lines else f"exit code {p.returncode}")
    return len(errors), errors
