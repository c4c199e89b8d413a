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

__all__ = ["check_workers", "child_argv", "config_argv", "open_study_run", "run_workers", "run_fleet", "worker_gpu"]


def check_workers(n: int, storage_url: str) -> None:
    """SQLite serialises writers: several processes on one file wait on each other's locks instead of running."""
    if n > 1 and storage_url.startswith("sqlite"):
        raise ConfigError(
            f"{n} workers need a storage many processes can write at once, but {storage_url.split('://')[0]} takes one writer "
            "at a time; pass --storage postgresql+psycopg2://USER@HOST/DB (in the dashboard: the sidebar's Storage settings; "
            "see docs/scale-out.md) or use 1 worker."
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


def worker_gpu(index: int, gpus: int, visible: str | None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` of worker ``index``: one of the GPUs this process sees, round robin.

    ``torch.cuda.device_count()`` counts only the GPUs in the parent's own ``CUDA_VISIBLE_DEVICES`` (ids, UUIDs or MIG
    names), while a child reads its value against the machine's list: a parent limited to "4,5" hands its workers "4" and
    "5", not the physical GPUs 0 and 1.
    """
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    ids = ids[:gpus] if len(ids) >= gpus else [str(k) for k in range(gpus)]
    return ids[index % len(ids)]


def run_workers(config: Any, n: int, argv: list[str], *, stop: Any, quiet: bool = False) -> tuple[int, list[str]]:
    """Run ``n`` workers to the end (or until ``stop`` is set); returns (failed workers, their last error lines)."""
    import optuna

    from nas_core.workspace.storage import open_storage

    shares: list[int | None] = [None] * n
    if config.trials is not None:
        each = [math.ceil(config.trials / n)] * n
        each[-1] = max(1, config.trials - sum(each[:-1]))
        shares = list(each)
    gpus = _gpus()
    env_base = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), os.getcwd()) if p)}
    import tempfile

    procs, logs = [], []
    for i in range(n):
        log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty child never blocks on a full pipe
        logs.append(log)
        env = dict(env_base)
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = worker_gpu(i, gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
        procs.append(subprocess.Popen(child_argv(argv, index=i, study=config.study_name, trials=shares[i]), env=env,
                                      stdout=subprocess.DEVNULL, stderr=log, text=True))
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=config.trials, desc=f"study {config.study_name} ({n} workers)", unit="trial", file=sys.stderr,
                   dynamic_ncols=True)
    forwarded = False
    last_count = 0
    bar_storage = None
    try:
        while any(p.poll() is None for p in procs):
            if stop.is_set() and not forwarded:
                forwarded = True
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)  # each child ends its trial at the next batch and records it
            if bar is not None:
                try:
                    if bar_storage is None:
                        bar_storage = open_storage(config.storage_url())  # one connection for the bar, grpc:// included
                    study = optuna.load_study(study_name=config.study_name, storage=bar_storage)
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


def open_study_run(config: Any) -> None:
    """Create the study and its MLflow parent run before the workers start, so all of them nest under one parent."""
    from pathlib import Path

    from nas_core.search import open_study
    from nas_core.tracking import Tracker
    from nas_core.workspace.config import workspace_tracking_uri

    open_study(config)
    if config.tracking:
        ws = Path(config.workspace)
        tracker = Tracker(tracking_uri=config.tracking_uri or workspace_tracking_uri(ws), workspace=ws, study_name=config.study_name)
        tracker.start(config.to_dict())
        tracker.close(wait=Tracker.FINISH_WAIT_S)  # the parent run stays open for the workers, which reopen it


def config_argv(config: Any) -> list[str]:
    """``search`` arguments that make a worker run ``config`` (an edited space is written to the study's folder)."""
    import json
    from pathlib import Path

    from nas_core.workspace import study_dir

    space = config.space
    if config.space_data is not None:
        path = study_dir(config.workspace, config.study_name) / "space.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config.space_data), encoding="utf-8")
        space = str(path)
    argv = ["search", "--dataset", config.dataset, "--seed", str(config.seed), "--workspace", str(Path(config.workspace)),
            "--objectives", ",".join(config.objectives), "--space", space, "--sampler", config.sampler,
            "--fidelity", config.fidelity, "--pruner", config.pruner, "--epochs", str(config.epochs),
            "--patience", str(config.patience), "--storage", config.storage_url(), "--device", config.device]
    if not config.tracking:
        argv.append("--no-tracking")
    elif config.tracking_uri:  # else the workers follow the workspace's (moca.json, or its mlflow.db), as the parent does
        argv += ["--tracking-uri", config.tracking_uri]
    for flag, value in (("--timeout", config.timeout), ("--data-dir", config.data_dir), ("--train-samples", config.train_samples),
                        ("--val-samples", config.val_samples)):
        if value is not None:
            argv += [flag, str(value)]
    for key, value in config.fidelity_options.items():
        argv += ["--fidelity-option", f"{key}={json.dumps(value)}"]
    if not config.known_good:
        argv.append("--no-known-good")
    return argv


def _finished_events(study_name: str, storage: Any, seen: set[int]) -> list[Any]:
    """TrialFinished events for the study's trials that finished since the last call (the workers' own events stay in
    their processes; the dashboard's runner counts from these)."""
    import optuna

    from nas_core import events as ev

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return []
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished() and t.number not in seen:
            seen.add(t.number)
            out.append(ev.TrialFinished(study_name, number=t.number, state=t.state.name, values=tuple(t.values) if t.values else None,
                                        metrics=dict(t.user_attrs.get("metrics") or {}), reason=str(t.user_attrs.get("reason", ""))))
    return out


def run_fleet(config: Any, n: int, *, emit: Any, stop_event: Any) -> Any:
    """``search --workers n`` inside a process (the dashboard): n worker processes, then the final phase once.

    Events: one ``TrialFinished`` per trial any worker finishes (read from storage every 0.5 s), then the final phase's
    own. A stop is forwarded to every worker (each records its running trial) and skips the final phase.
    """
    import threading
    from dataclasses import replace

    from nas_core.errors import NasCoreError
    from nas_core.search import SearchResult, run_search
    from nas_core.workspace.storage import open_storage

    check_workers(n, config.storage_url())
    start = time.time()
    open_study_run(config)
    storage = open_storage(config.storage_url())
    seen: set[int] = {t.number for t in _study_trials(config.study_name, storage) if t.state.is_finished()}
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.5):
            for event in _finished_events(config.study_name, storage, seen):
                emit(event)

    poller = threading.Thread(target=poll, daemon=True, name=f"moca-fleet-{config.study_name}")
    poller.start()
    try:
        failed, errors = run_workers(config, n, config_argv(config), stop=stop_event, quiet=True)
    finally:
        done.set()
        poller.join()
    for event in _finished_events(config.study_name, storage, seen):
        emit(event)
    if failed == n:
        raise NasCoreError(f"all {n} workers failed; the first said: {errors[0]}")
    notes = tuple(f"a worker failed: {line}" for line in errors)
    if stop_event.is_set():
        counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        for t in _study_trials(config.study_name, storage):
            if t.state.name in counts:
                counts[t.state.name] += 1
        return SearchResult(study=config.study_name, workspace=str(config.workspace), storage=config.storage_url(),
                            n_complete=counts["COMPLETE"], n_pruned=counts["PRUNED"], n_failed=counts["FAIL"], best_config=None,
                            wall_s=time.time() - start, reason="stopped", warnings=notes)
    result = run_search(replace(config, finalize_only=True, finalize=True), emit=emit, stop_event=stop_event)
    return replace(result, warnings=tuple(result.warnings) + notes, wall_s=time.time() - start)


def _study_trials(study_name: str, storage: Any) -> list[Any]:
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []
