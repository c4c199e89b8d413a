"""Command line: ``python -m nas_core search|worker|train|export|datasets|blocks|spaces|serve|library``.

Every problem a user can fix exits with code 2 and one ``error: ...`` line; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nas_core.cli.args import _fidelity_option, _positive_float, _positive_int, positive_number, workspace_arg  # noqa: F401 - old names
from nas_core.deploy.exporters import list_exporters
from nas_core.errors import NasCoreError
from nas_core.schema.record import val_mark

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class _Fail(Exception):
    """Exit with code 2 and this one-line message."""


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM in a command with nothing to stop cleanly; ``main`` exits with 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """One stop path for Ctrl-C (SIGINT) and SIGTERM (docker, Kubernetes, Colab send it first).

    The first signal sets :attr:`event`; a command that can stop cleanly (``graceful``) watches it and
    ends its running trial at the next batch, records it and writes its outputs; any other command gets
    :class:`_Interrupted`. A second signal exits at once: a trial left RUNNING records its owner
    process, so the next run on this machine reclaims it straight away.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self.graceful = False
        self.message = "stopping: the current trial ends at its next batch and is recorded (press Ctrl-C again to exit at once)"

    def install(self) -> dict[int, Any]:
        """Handle SIGINT and SIGTERM; returns the previous handlers for :meth:`restore`."""
        old: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue  # started with it ignored (nohup, a background job of a script): keep it that way
            old[sig] = previous
            signal.signal(sig, self._handle)
        return old

    @staticmethod
    def restore(old: dict[int, Any]) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            os.write(2, f"\n{signal.Signals(signum).name} again: exiting now; the next run reclaims the unfinished trial\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        self.event.set()
        if not self.graceful:
            raise _Interrupted(signum)
        os.write(2, f"\n{signal.Signals(signum).name}: {self.message}\n".encode())

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else 0


SIGNALS = _Signals()
START_UP_GRACE_S = 1.0  # after a stop signal, how long a search still setting up may take before the CLI leaves anyway


def _add_search_args(p: argparse.ArgumentParser, *, worker: bool = False) -> None:
    from nas_core.schema.objectives import OBJECTIVES
    from nas_core.search import SAMPLERS

    p.add_argument("--dataset", default="digits", help="digits (default), mnist, fashion-mnist, cifar10, or a path to a .zip/.csv/.npz/folder")
    p.add_argument("--trials", type=_positive_int, default=None if worker else 20, help="number of trials to run now (default 20)")
    p.add_argument("--timeout", type=_positive_float, default=None, help="wall-clock budget in seconds")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, sampler and training (default 0)")
    p.add_argument("--workspace", default=None, help="folder for all outputs (default $MOCA_HOME or ./moca_runs)")
    p.add_argument("--study", default=None, required=worker, help="study name; the same name resumes it (default <dataset>-<space>)")
    p.add_argument("--objectives", default="accuracy,latency_ms", help=f"comma-separated subset of {','.join(OBJECTIVES)}")
    p.add_argument("--space", default="seed-cnn", help="seed-cnn (default), modular, or a .json/.yaml space file")
    p.add_argument("--sampler", default="tpe", help=f"one of {', '.join(SAMPLERS.names())}")
    p.add_argument("--fidelity", default="train", help="train (default), cached, zero-cost")
    p.add_argument("--fidelity-option", action="append", default=[], metavar="KEY=VALUE", type=_fidelity_option,
                   help="a fidelity option, repeatable, e.g. cached_epochs=2, finetune_top_k=3, cached_train=adapters "
                        "(values are read as JSON, else kept as text)")
    p.add_argument("--pruner", default="none", help="none (default), median/hyperband/sh (single objective), asha (multi-objective)")
    p.add_argument("--epochs", type=_positive_int, default=20, help="max epochs per trial (default 20; early stopping on validation)")
    p.add_argument("--patience", type=_positive_int, default=5, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--storage", default=None, help="Optuna storage URL, recorded in <workspace>/moca.json (default: the one recorded "
                   "there, else sqlite:///<workspace>/optuna.db; PostgreSQL or grpc://HOST:PORT for many workers)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI, recorded in <workspace>/moca.json (default: the one "
                   "recorded there, else sqlite:///<workspace>/mlflow.db)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--data-dir", default=None, help="folder with IDX files (mnist, fashion-mnist) or downloads")
    p.add_argument("--train-samples", type=_positive_int, default=None, help="subsample the training split to N samples")
    p.add_argument("--val-samples", type=_positive_int, default=None, help="subsample the validation split to N samples")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    if not worker:
        p.add_argument("--workers", type=_positive_int, default=1,
                       help="run N local worker processes on one shared --storage (PostgreSQL; SQLite takes one writer), "
                            "one GPU each when several are visible (default 1)")
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-finalize", action="store_true",
                   help="leave the fidelity's final phase (fine-tune, refit) to the last worker or to `finalize --study`")
    p.add_argument("--events-jsonl", default=None, metavar="PATH",
                   help="append every progress event (trial started, epoch, trial finished, ...) to PATH as one JSON object a line")
    p.add_argument("--no-known-good", action="store_true",
                   help="do not start a new study with the known-good designs (4-conv BN CNN, small ResNet)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m nas_core", description="MoCA-NAS: find the best and fastest network for your dataset.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("search", help="run a multi-objective architecture search", description="Run a search; the last stdout line is the path of best_config.json.")
    _add_search_args(p)
    p = sub.add_parser("worker", help="join a shared study (same --study and --storage) from another process or machine")
    _add_search_args(p, worker=True)

    p = sub.add_parser("finalize", help="run a study's final phase (fine-tune finalists, refit) once after its workers, and write its outputs")
    p.add_argument("--study", required=True)
    p.add_argument("--workspace", default=None)
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: the workspace's moca.json, else its optuna.db)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the workspace's moca.json, else its mlflow.db)")
    p.add_argument("--force", action="store_true", help="run it again even if it already ran for the study's current trials")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("storage-proxy", help="serve a study database to workers as Optuna's gRPC storage proxy (--storage grpc://HOST:PORT)")
    p.add_argument("--storage", required=True, help="the database's SQLAlchemy URL, e.g. postgresql+psycopg2://USER@HOST/DB")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for other machines)")
    p.add_argument("--port", type=_positive_int, default=13000, help="port to listen on (default 13000)")

    p = sub.add_parser("train", help="rebuild a config and retrain it; last stdout line is a JSON object of metrics")
    p.add_argument("--config", required=True, help="a best_config.json")
    p.add_argument("--workspace", default=None)
    p.add_argument("--epochs", type=_positive_int, default=None, help="override the config's epochs")
    p.add_argument("--patience", type=_positive_int, default=None)
    p.add_argument("--dataset", default=None, help="override the dataset (default: the one recorded in the config)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--train-samples", type=_positive_int, default=None)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("export", help="export a config's network as TorchScript, ONNX or safetensors")
    p.add_argument("--config", required=True)
    p.add_argument("--format", required=True, choices=list_exporters())
    p.add_argument("--out", required=True)
    p.add_argument("--weights", default=None, help="safetensors weights to load first (e.g. best_weights.safetensors)")

    p = sub.add_parser("datasets", help="list built-in datasets, whether each is available here and why not")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true")

    sub.add_parser("blocks", help="list the registered blocks")
    p = sub.add_parser("spaces", help="list search-space presets or print one as JSON (a starting point for --space FILE)")
    p.add_argument("name", nargs="?")

    p = sub.add_parser("serve", help="start the dashboard (optionally through an authenticated ngrok tunnel)")
    p.add_argument("--port", type=_positive_int, default=8501)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workspace", default=None)
    p.add_argument("--tunnel", action="store_true", help="expose through ngrok, protected by basic auth")
    p.add_argument("--password", default=None, help="basic-auth password for the tunnel (default: generated and printed once)")
    p.add_argument("--user", default="moca", help="basic-auth user name (default moca)")
    p.add_argument("--ngrok-token", default=None, help="ngrok authtoken (default $NGROK_AUTHTOKEN)")

    from nas_core.cli.library import add_library_parser  # imports torch: only once main() has its signal handlers

    add_library_parser(sub)
    return parser


def _version() -> str:
    from nas_core import __version__

    return f"moca-nas {__version__}"


_workspace = workspace_arg


def _search_config(args: argparse.Namespace) -> Any:
    from nas_core.search import SearchConfig

    return SearchConfig(
        dataset=args.dataset,
        trials=args.trials,
        timeout=args.timeout,
        seed=args.seed,
        workspace=str(_workspace(args.workspace)),
        study=args.study,
        objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
        space=args.space,
        sampler=args.sampler,
        fidelity=args.fidelity,
        pruner=args.pruner,
        epochs=args.epochs,
        patience=args.patience,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        tracking=not args.no_tracking,
        device=args.device,
        data_dir=args.data_dir,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        fidelity_options=dict(args.fidelity_option),
        finalize=not args.no_finalize,
        worker_index=args.worker_index,
        known_good=not args.no_known_good,
    ).validate()


def _cmd_search(args: argparse.Namespace) -> int:
    SIGNALS.graceful = True
    config = _search_config(args)
    _remember_uris(args)
    if SIGNALS.event.is_set():
        print("stopped before the search started; nothing was recorded", file=sys.stderr)
        return SIGNALS.exit_code
    if getattr(args, "workers", 1) > 1:
        from dataclasses import replace

        from nas_core.search.workers import check_workers, run_workers

        check_workers(args.workers, config.storage_url())
        _open_study_run(config)
        failed, errors = run_workers(config, args.workers, args._argv, stop=SIGNALS.event, quiet=args.quiet)
        for line in errors:
            print(f"worker: {line}", file=sys.stderr)
        if SIGNALS.event.is_set():
            print(f"stopped by {signal.Signals(SIGNALS.signum or signal.SIGINT).name}: every worker recorded its trial", file=sys.stderr)
            return SIGNALS.exit_code
        if failed == args.workers:
            raise _Fail(f"all {failed} workers failed; the first said: {errors[0]}")
        config = replace(config, finalize_only=True, finalize=True)  # the final phase, once, and the outputs
    return _run_and_report(config, args)


def _remember_uris(args: argparse.Namespace) -> None:
    """``--storage``/``--tracking-uri`` become the workspace's (moca.json), so the dashboard and later commands follow them."""
    if args.storage or args.tracking_uri:
        from nas_core.workspace.config import save_config

        save_config(_workspace(args.workspace), storage=args.storage, tracking_uri=args.tracking_uri)


def _open_study_run(config: Any) -> None:
    from nas_core.search.workers import open_study_run

    open_study_run(config)


def _run_and_report(config: Any, args: argparse.Namespace) -> int:
    from nas_core import events as ev
    from nas_core.jobs import SearchRunner

    runner = SearchRunner(config)
    bar: Any = None
    plan: list[ev.PlanMade] = []  # the plan made at run time, shown as it is made rather than only at the end
    held: dict[int, float] = {}  # trial -> the test accuracy of the model it holds (a one training; a stop keeps it)

    def show(event: ev.Event) -> None:
        nonlocal bar
        if args.quiet:
            return
        if isinstance(event, ev.PlanMade):
            plan.append(event)
            if bar is None:
                print(f"plan: {event.note}", file=sys.stderr)
            else:
                bar.write(f"plan: {event.note}", file=sys.stderr)
                if event.trials:
                    bar.total = event.trials
                    bar.refresh()
            return
        if bar is None:
            if not isinstance(event, ev.TrialStarted):
                return  # the bar starts with the first trial, so an early error prints no empty bar
            from tqdm import tqdm

            total = plan[-1].trials if plan and plan[-1].trials else config.trials
            bar = tqdm(total=total, desc=f"study {config.study_name}", unit="trial", file=sys.stderr, dynamic_ncols=True)
        if isinstance(event, ev.EpochProgress):
            phase = event.metrics.get("phase")
            if event.metrics.get("held_test_accuracy") is not None:  # a one training's hold: what Ctrl-C now keeps
                held[event.number] = float(event.metrics["held_test_accuracy"])
            bar.set_postfix_str(f"trial {event.number}{f' ({phase})' if isinstance(phase, str) else ''} epoch {event.epoch}/{event.epochs} "
                                + (f"val {event.metrics['val_accuracy']:.3f}{val_mark(event.metrics)}" if "val_accuracy" in event.metrics
                                   else f"loss {event.metrics.get('train_loss', math.nan):.3f}")  # a refit does not validate
                                + (f" (held: test {held[event.number]:.3f})" if event.number in held else ""))
        elif isinstance(event, ev.TrialFinished):
            bar.update(1)
            if event.state == "COMPLETE":
                m = event.metrics
                bar.write(f"trial {event.number}: val {m.get('val_accuracy', 0):.4f}{val_mark(m)}  {m.get('latency_ms', 0):.3f} ms  {int(m.get('params', 0)):,} params"
                          + (f"  ({event.reason})" if event.reason else ""), file=sys.stderr)
            else:
                bar.write(f"trial {event.number}: {event.state} - {event.reason}", file=sys.stderr)

    runner.subscribe(show)
    if getattr(args, "events_jsonl", None):
        try:
            log_file = open(args.events_jsonl, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open for the search's life
        except OSError as exc:
            raise _Fail(f"cannot write --events-jsonl {args.events_jsonl} ({exc.strerror})") from None

        def log_event(event: ev.Event) -> None:
            log_file.write(json.dumps(ev.event_to_dict(event), default=str) + "\n")

        runner.subscribe(log_event)
    past_setup = threading.Event()  # the first event (a trial, or a final-phase epoch) means set-up is over
    runner.subscribe(lambda event: past_setup.set())
    runner.start()
    signalled_at: float | None = None
    while not runner.wait(0.05):
        if not SIGNALS.event.is_set():
            continue
        if signalled_at is None:
            signalled_at = time.monotonic()
            runner.stop()
        elif not past_setup.is_set() and not config.finalize_only and time.monotonic() - signalled_at > START_UP_GRACE_S:
            # Still setting up (a new workspace's MLflow and Optuna schemas take seconds): no trial of ours exists,
            # and an interrupted schema transaction is rolled back by SQLite, so leave now rather than wait.
            print(f"stopped by {signal.Signals(SIGNALS.signum or signal.SIGINT).name} during start-up; no trial was started",
                  file=sys.stderr)
            return SIGNALS.exit_code
    if SIGNALS.event.is_set():
        runner.stop()  # a signal in the runner's last moments: report it as stopped
    if bar is not None:
        bar.close()
    snap = runner.snapshot()
    if snap.error:
        raise _Fail(snap.error)
    result = runner.result
    if result is None:
        raise _Fail(f"the search of study {config.study_name!r} ended without a result; see the messages above")
    for w in result.warnings:
        if w not in {p.note for p in plan}:  # shown as the plan was made
            print(f"warning: {w}", file=sys.stderr)
    print(f"{result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed in {result.wall_s:.1f} s "
          f"(stopped: {result.reason}); study {result.study!r} in {result.storage.split('://')[0]} storage", file=sys.stderr)
    if result.best_config is None:
        if SIGNALS.signum:
            print(f"stopped by {signal.Signals(SIGNALS.signum).name} before any trial completed", file=sys.stderr)
            return SIGNALS.exit_code
        raise _Fail(f"no trial of study {result.study!r} completed, so there is no best config; "
                    "see the trial reasons above (try more --timeout, fewer --epochs or another --space)")
    print(result.best_config)
    return SIGNALS.exit_code


def _cmd_finalize(args: argparse.Namespace) -> int:
    SIGNALS.graceful = True
    import optuna

    from nas_core.search import SearchConfig
    from nas_core.workspace.config import workspace_storage
    from nas_core.workspace.storage import open_storage

    ws = _workspace(args.workspace)
    _remember_uris(args)
    storage = args.storage or workspace_storage(ws)
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        raise _Fail(f"no study storage at {storage}; pass --workspace or --storage where the workers recorded study {args.study!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        recorded = optuna.load_study(study_name=args.study, storage=open_storage(storage)).user_attrs.get("config")
    except KeyError:
        raise _Fail(f"study {args.study!r} does not exist in {storage.split('://')[0]} storage; check --study and --storage") from None
    if not isinstance(recorded, dict):
        raise _Fail(f"study {args.study!r} was not made by MoCA-NAS (it records no search config)")
    known = set(SearchConfig.__dataclass_fields__)
    fields = {k: v for k, v in recorded.items() if k in known}
    fields.update(study=args.study, workspace=str(ws), storage=args.storage, tracking_uri=args.tracking_uri, finalize=True,
                  finalize_only=True, finalize_force=args.force, worker_index=0, objectives=tuple(recorded.get("objectives", ())))
    config = SearchConfig(**fields).validate()
    return _run_and_report(config, args)


def _cmd_storage_proxy(args: argparse.Namespace) -> int:
    from nas_core.workspace.config import describe
    from nas_core.workspace.storage import run_proxy

    print(f"serving {describe(args.storage)} as grpc://{args.host}:{args.port} (Ctrl-C stops)", file=sys.stderr)
    run_proxy(args.storage, host=args.host, port=args.port)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    SIGNALS.graceful = True
    SIGNALS.message = "stopping: training ends at its next batch (press Ctrl-C again to exit at once)"
    from nas_core.deploy.config import load_config
    from nas_core.deploy.retraining import retrain
    from nas_core.training.stops import StopRequested

    cfg = load_config(args.config)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        from nas_core.deploy.retraining import body_epochs

        # a head fitted on another network's body: that network retrains first
        bar = tqdm(total=(args.epochs or cfg.training.epochs) + body_epochs(cfg), desc="retrain", unit="epoch", file=sys.stderr, dynamic_ncols=True)

    seen = " (trained on)" if cfg.training.trains_on_val else ""  # a refit's validation split is not held out

    def on_epoch(epoch: int, total: int, row: dict[str, float]) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"val {row['val_accuracy']:.4f}{seen}")

    try:
        out = retrain(cfg, workspace=_workspace(args.workspace), epochs=args.epochs, dataset=args.dataset, data_dir=args.data_dir,
                      device=args.device, seed=args.seed, train_samples=args.train_samples, patience=args.patience,
                      on_epoch=on_epoch, should_stop=SIGNALS.event.is_set)
    except StopRequested:
        print(f"stopped by {signal.Signals(SIGNALS.signum or signal.SIGINT).name}; nothing was written", file=sys.stderr)
        return SIGNALS.exit_code or 130
    finally:
        if bar is not None:
            bar.close()
    for note in out.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    summary = {k: v for k, v in out.items() if k not in ("history", "confusion")}
    summary["config_params"] = cfg.metrics.get("params")
    print(json.dumps(summary))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from nas_core.deploy.exporters import export_model

    path = export_model(args.config, fmt=args.format, out=args.out, weights=args.weights)
    print(path)
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from nas_core.data import list_datasets

    infos = list_datasets(data_dir=args.data_dir)
    if args.json:
        print(json.dumps([{"name": i.name, "available": i.available, "reason": i.reason, "description": i.description} for i in infos]))
        return 0
    for i in infos:
        status = "available" if i.available else f"not available: {i.reason}"
        print(f"{i.name:15s} {status}\n{'':15s} {i.description}")
    print("custom data: pass a path to a folder or .zip of class sub-folders of images, a .csv (label + pixel columns) or an .npz (x, y)")
    return 0


def _cmd_blocks(args: argparse.Namespace) -> int:
    from nas_core.blocks import BLOCKS

    for name in BLOCKS.names():
        cls = BLOCKS.get(name)
        params = ", ".join(f"{k}={v}" for k, v in cls.defaults.items())
        print(f"{name:10s} {cls.layout_in}->{cls.layout_out:7s} {cls.description}" + (f"  [{params}]" if params else ""))
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:
    from nas_core.space import PRESETS, load_space

    if args.name:
        print(json.dumps(load_space(args.name).to_dict(), indent=2))
    else:
        for name, space in PRESETS.items():
            print(f"{name:10s} {space.description}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from nas_core.serve import serve

    return serve(port=args.port, host=args.host, workspace=_workspace(args.workspace), tunnel=args.tunnel, password=args.password,
                 user=args.user, token=args.ngrok_token or os.environ.get("NGROK_AUTHTOKEN"))


COMMANDS = {
    "search": _cmd_search,
    "worker": _cmd_search,
    "finalize": _cmd_finalize,
    "storage-proxy": _cmd_storage_proxy,
    "train": _cmd_train,
    "export": _cmd_export,
    "datasets": _cmd_datasets,
    "blocks": _cmd_blocks,
    "spaces": _cmd_spaces,
    "serve": _cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "optuna", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    global SIGNALS
    SIGNALS = _Signals()  # one per call: main() may run many times in one process (tests, notebooks)
    old = SIGNALS.install() if threading.current_thread() is threading.main_thread() else {}
    try:
        return _main(argv)
    finally:
        _Signals.restore(old)


def _load_plugins() -> None:
    """Import the modules named in ``MOCA_PLUGINS`` (comma-separated): they register blocks, fidelities, datasets..."""
    import importlib

    for name in (n.strip() for n in os.environ.get("MOCA_PLUGINS", "").split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a plugin's own error, reported as one line
            raise _Fail(f"MOCA_PLUGINS: cannot import {name!r} ({type(exc).__name__}: {exc}); fix the module or unset MOCA_PLUGINS") from None


def _main(argv: list[str] | None) -> int:
    try:
        _load_plugins()
        parser = build_parser()
        args = parser.parse_args(argv)
        args._argv = list(argv) if argv is not None else sys.argv[1:]
        handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
        if handler is None:  # argparse requires a command; a plug-in subparser without a handler lands here
            raise _Fail(f"the command {args.command!r} has no handler; run `moca --help` for the commands")
        return int(handler(args) or 0)
    except (NasCoreError, _Fail) as exc:
        # one line, even when a message quotes a library's multi-line text (pandas' parser errors end in a newline)
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("error: interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
