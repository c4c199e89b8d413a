"""MLflow tracking: one parent run per study, one nested run per trial. Failures warn and never stop a search.

The MLflow calls run in a writer process of their own (``_writer_main``), fed JSON lines through a pipe: a
trial's three MLflow transactions (~25 ms of SQLAlchemy in Python) then overlap the search's own work instead
of holding its interpreter lock, which halves the engine's cost per trial for cheap fidelities. A trial's run
is opened when the trial starts (:meth:`Tracker.open_trial`, so its start time is the trial's), and its
results, status and ``config.json`` go out as it ends; the run's id comes back by the time the trial is
recorded. :meth:`Tracker.finish` waits until the writer has written everything. The writer ignores the
terminal's Ctrl-C (its own session): the search decides when tracking ends, and a search killed outright
closes the pipe, whereupon the writer writes what it has, marks runs left open as KILLED, and exits.

Uses ``MlflowClient`` rather than the fluent API: the fluent API keeps an "active run" per thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["Tracker", "default_tracking_uri"]

log = logging.getLogger(__name__)

SECRET_KEYS = ("token", "password", "secret", "authtoken")


def default_tracking_uri(workspace: Path) -> str:
    return f"sqlite:///{Path(workspace).resolve() / 'mlflow.db'}"


def _clean(params: dict[str, Any]) -> dict[str, str]:
    """Parameters as MLflow strings, with anything secret-looking dropped (tokens never reach MLflow)."""
    return {str(k)[:250]: str(v)[:6000] for k, v in params.items() if not any(s in str(k).lower() for s in SECRET_KEYS)}


def template_dir() -> Path:
    """Where this user's empty MLflow store templates live: ``MOCA_CACHE_DIR``, else ``$XDG_CACHE_HOME/moca-nas``, else
    ``~/.cache/moca-nas``."""
    if os.environ.get("MOCA_CACHE_DIR"):
        return Path(os.environ["MOCA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moca-nas"


def _link_atomically(build: Callable[[Path], None], final: Path) -> None:
    """Make ``final`` whole or not at all: ``build`` writes a temporary file beside it, which is then hard-linked into
    place; if another process linked first, theirs is kept. Temporary files of dead processes are swept first."""
    from nas_core.workspace.owners import pid_alive

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    for stale in final.parent.glob(f".{final.name}.*.tmp*"):
        pid = stale.name[len(final.name) + 2 :].split(".")[0]
        if not pid.isdigit() or pid_alive(int(pid)) is False:
            stale.unlink(missing_ok=True)  # left by a process killed while building its file
    try:
        build(tmp)
        try:
            os.link(tmp, final)  # fails if another process linked its file first: then that one is used
        except FileExistsError:
            pass
    finally:
        for leftover in final.parent.glob(f"{tmp.name}*"):
            leftover.unlink(missing_ok=True)


def _build_store(path: Path, artifacts_uri: str) -> None:
    """MLflow's own creation of an SQLite store at ``path``: all its schema migrations (~2.5 s), one by one."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{path}", artifacts_uri)
    store.engine.dispose()  # the last connection closes: SQLite checkpoints its WAL into the file


def _store_template() -> Path | None:
    """An empty, fully migrated MLflow store for the installed MLflow, built once per user and copied for each new
    workspace (a copy takes milliseconds, the migrations ~2.5 s of a search's start). None when the cache cannot be
    written: the store is then built in place."""
    import mlflow

    template = template_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if not template.exists():
        try:
            _link_atomically(lambda tmp: _build_store(tmp, TEMPLATE_ARTIFACTS), template)
        except OSError as exc:
            log.debug("no MLflow store template in %s: %s", template.parent, exc)
            return None
    return template


TEMPLATE_ARTIFACTS = "file:///moca-template-artifacts"  # the template's default experiment points here until copied


def _copy_template(template: Path, path: Path, artifacts_uri: str) -> None:
    """``template`` copied to ``path``, its default experiment (MLflow's experiment 0) pointed at ``artifacts_uri`` and
    dated now, as MLflow's own creation would have left it."""
    import shutil
    import time

    shutil.copyfile(template, path)
    now = int(time.time() * 1000)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? || substr(artifact_location, ?), creation_time = ?, "
                   "last_update_time = ? WHERE experiment_id = 0",
                   (artifacts_uri, len(TEMPLATE_ARTIFACTS) + 1, now, now))


def _create_sqlite_store_atomically(uri: str, workspace: Path) -> None:
    """Create a new SQLite MLflow store whole or not at all.

    MLflow builds its schema in many migrations, not one transaction: a process killed in those seconds
    (a second Ctrl-C, kill -9) left ``table ... already exists`` for every later run. So a new store is
    built in a temporary file and linked into place only when complete; a concurrent creator's link wins.
    The migrations run once per user and MLflow version (:func:`_store_template`); a new store is a copy.
    """
    if not uri.startswith("sqlite:///"):
        return
    final = Path(uri[len("sqlite:///"):])
    if final.exists():
        return
    artifacts = (Path(workspace) / "mlartifacts").resolve().as_uri()
    template = _store_template()

    def build(tmp: Path) -> None:
        if template is not None:
            try:
                _copy_template(template, tmp, artifacts)
                return
            except (OSError, sqlite3.Error) as exc:  # a template damaged since: build this store in place
                log.debug("MLflow store template %s not usable: %s", template, exc)
                tmp.unlink(missing_ok=True)
                template.unlink(missing_ok=True)  # the next new store builds a sound one
        _build_store(tmp, artifacts)

    _link_atomically(build, final)


class Tracker:
    """Logs a study to MLflow through a writer process. Every method is a no-op after the first failure (with one
    warning, raised in the caller's thread by the next call)."""

    RUN_ID_WAIT_S = 60.0  # how long a trial's record waits for its run's id before it is recorded without one
    FINISH_WAIT_S = 120.0  # how long finish() waits for the writer to write what it was sent (it goes on alone after)
    STOP_WAIT_S = 10.0  # the same after a stop

    def __init__(self, *, tracking_uri: str, workspace: Path, study_name: str, enabled: bool = True) -> None:
        self.tracking_uri = tracking_uri
        self.workspace = Path(workspace)
        self.study_name = study_name
        self.enabled = enabled
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.warning: str | None = None
        self._warned = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._start_sent = False
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._started = not enabled  # the writer's answer to "start" has come (or there is nothing to start)
        self._runs: dict[int, str] = {}  # trial number -> MLflow run id, as the writer answers
        self._opened: set[int] = set()
        self._finished = False
        self._reader: threading.Thread | None = None

    # --- the writer process ---------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the writer process now; :meth:`start_async` gives it its work later. The writer imports MLflow (~3 s)
        as it starts, so a search that launches it first has those seconds overlap its own set-up (torch, the data, the
        study) instead of waiting for them before its first trial. Nothing is written until :meth:`start_async`; a
        search that ends before then calls :meth:`close`."""
        if not self.enabled or self._proc is not None:
            return
        # the writer imports this very copy of the package (a source checkout run without installing included)
        root = str(Path(__file__).resolve().parent.parent)
        code = f"import sys; r = {root!r}; r in sys.path or sys.path.insert(0, r); from nas_core.tracking import _writer_main; _writer_main()"
        env = {**os.environ, "MLFLOW_ENABLE_ASYNC_LOGGING": "false"}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                start_new_session=os.name == "posix",  # the terminal's Ctrl-C is the search's to answer, not the writer's
            )
        except OSError as exc:
            self._fail(f"MLflow tracking disabled (could not start its writer: {exc}); the search goes on.")
            self._started = True
            return
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True, name="moca-mlflow-reader")
        self._reader.start()

    def start_async(self, params: dict[str, Any]) -> None:
        """Start the writer (unless :meth:`launch` has) and ask it to open (or, on resume, reopen) the study's parent run;
        returns at once.

        A new MLflow store takes seconds to create (its schema migrations): the search answers a stop meanwhile."""
        if not self.enabled or self._start_sent:
            return
        self.launch()
        if not self.enabled:  # the writer could not start
            self._report()
            return
        self._start_sent = True
        self._send({"op": "start", "tracking_uri": self.tracking_uri, "workspace": str(self.workspace), "study_name": self.study_name,
                    "params": params})

    def _send(self, message: dict[str, Any]) -> bool:
        proc = self._proc
        if proc is None or proc.stdin is None or not self.enabled:
            return False
        line = (json.dumps(message, default=str) + "\n").encode()
        try:
            with self._send_lock:
                proc.stdin.write(line)
                proc.stdin.flush()
        except (OSError, ValueError) as exc:  # the writer has gone (its reader reports why)
            self._fail(f"MLflow tracking disabled (its writer stopped: {exc}); the search goes on.")
            return False
        return True

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._cond:
                op = msg.get("op")
                if op == "started":
                    self.experiment_id, self.parent_run_id, self._started = msg["experiment_id"], msg["parent_run_id"], True
                elif op == "opened":
                    self._runs[int(msg["number"])] = str(msg["run_id"])
                elif op == "failed":
                    self._fail(str(msg["warning"]))
                    self._started = True
                self._cond.notify_all()
        with self._cond:  # the writer has exited
            if not self._finished and self.enabled:
                code = self._proc.poll() if self._proc is not None else None
                self._fail(f"MLflow tracking disabled (its writer exited unexpectedly, code {code}); the search goes on.")
            self._started = True
            self._cond.notify_all()

    def _fail(self, warning: str) -> None:
        with self._cond:
            if self.warning is None:
                self.warning = warning
            self.enabled = False
            self._cond.notify_all()

    def _report(self) -> None:
        """The first failure, as one warning, in the calling thread (the writer's answers arrive on another)."""
        if self.warning is not None and not self._warned:
            self._warned = True
            warnings.warn(self.warning, RuntimeWarning, stacklevel=3)
            log.warning(self.warning)

    @property
    def ready(self) -> bool:
        """True once the parent run is open (or tracking is off or failed): calls will not wait on MLflow's set-up."""
        return self._started

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until MLflow's set-up has finished (at most ``timeout`` seconds); True once it has.

        Trials and latency measurements must not share the CPU with its schema migrations.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._started, timeout)
        self._report()
        return self.ready

    def start(self, params: dict[str, Any]) -> str | None:
        """Open (or, on resume, reopen) the study's parent run and wait for it; its id, or None."""
        self.start_async(params)
        self.wait_ready()
        return self.parent_run_id if self.enabled else None

    # --- trials -----------------------------------------------------------------------------------------

    def open_trial(self, number: int, *, tags: dict[str, str] | None = None) -> None:
        """Open trial ``number``'s nested run now (its start time is the trial's); :meth:`log_trial` completes it."""
        if number in self._opened or not self.enabled:
            return
        if self._send({"op": "open", "number": number, "tags": tags or {}}):
            self._opened.add(number)

    def log_trial(
        self,
        *,
        number: int,
        params: dict[str, Any],
        history: list[dict[str, float]],
        metrics: dict[str, float],
        state: str,
        config: dict[str, Any] | None,
        tags: dict[str, str] | None = None,
        wait: bool = True,
    ) -> str | None:
        """Complete a finished trial's nested run: params, per-epoch metrics, final metrics, tags, status, the config
        JSON; returns its run id (waiting for it if the writer has not answered yet), or None.

        ``wait=False`` (a trial cut short by a stop) skips the run if MLflow is still setting up, and does not wait
        for the id.
        """
        if not wait and not self.ready:
            return None
        self.wait_ready()
        if not self.enabled or self.parent_run_id is None:
            return None
        self.open_trial(number)
        self._send({"op": "log", "number": number, "params": params, "history": history,
                    "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "state": state,
                    "config": config, "tags": tags or {}})
        with self._cond:
            self._cond.wait_for(lambda: number in self._runs or not self.enabled, self.RUN_ID_WAIT_S if wait else 0)
        self._report()
        return self._runs.get(number)

    def finish(self, metrics: dict[str, float], *, status: str = "FINISHED", wait: bool = True) -> None:
        """Close the parent run and wait for the writer to write everything it was sent; with ``wait=False`` (a stop
        during set-up) skip it if MLflow is still starting."""
        if self._finished:
            return
        if not wait and not self.ready:
            self.close()  # the parent run stays RUNNING until the study's next run reopens it
            return
        self.wait_ready()
        if self.enabled and self.parent_run_id is not None:
            self._send({"op": "finish", "metrics": metrics, "status": status})
        self.close(wait=self.FINISH_WAIT_S if wait else self.STOP_WAIT_S)  # a stop is not kept waiting: the writer ends alone
        self._report()

    def close(self, *, wait: float = 0.0) -> None:
        """End the pipe: the writer writes what it has and exits. ``wait`` seconds for it to do so (0: do not wait)."""
        with self._cond:
            self._finished = True
        proc = self._proc
        if proc is None:
            return
        try:
            with self._send_lock:
                if proc.stdin is not None and not proc.stdin.closed:
                    proc.stdin.close()
        except OSError:
            pass
        if wait:
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                log.warning("MLflow's writer is still writing after %.0f s; it finishes on its own", wait)
                return
            if self._reader is not None:
                self._reader.join(5)
            if proc.returncode not in (0, None) and self.warning is None:
                self._fail(f"MLflow tracking: its writer exited with code {proc.returncode}; some runs may be incomplete.")


# --- the writer process --------------------------------------------------------------------------------


class _Writer:
    """The MLflow side of a :class:`Tracker`: one message at a time, in order. After a failure it answers every
    message with nothing (the tracker has been told once)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.runs: dict[int, Any] = {}  # trial number -> the opened run, until its log completes it
        self.failed = False

    def reply(self, **message: Any) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def handle(self, msg: dict[str, Any]) -> None:
        if self.failed:
            return
        try:
            getattr(self, "op_" + str(msg.get("op")))(msg)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop a search: one message, then quiet
            self.failed = True
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.reply(op="failed", warning=f"MLflow tracking disabled ({type(exc).__name__}: {first}); the search goes on.")

    def op_start(self, msg: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        from nas_core.workspace import tune_sqlite

        tune_sqlite()
        # MLflow configures its logger on import and logs its DB migrations at INFO on first use.
        for noisy in ("alembic", "mlflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger("mlflow.store").setLevel(logging.CRITICAL)  # a failing store raises, and is reported once
        workspace, study_name = Path(msg["workspace"]), str(msg["study_name"])
        _create_sqlite_store_atomically(msg["tracking_uri"], workspace)
        self.client = MlflowClient(tracking_uri=msg["tracking_uri"])
        name = f"moca-{study_name}"
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            artifacts = (workspace / "mlartifacts").resolve()
            artifacts.mkdir(parents=True, exist_ok=True)
            self.experiment_id = self.client.create_experiment(name, artifact_location=artifacts.as_uri())
        else:
            self.experiment_id = exp.experiment_id
        runs = self.client.search_runs([self.experiment_id], filter_string="tags.moca_role = 'study'", max_results=1)
        if runs:
            self.parent_run_id = runs[0].info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=study_name, tags={"moca_role": "study", "study": study_name})
            self.parent_run_id = run.info.run_id
            self._log_params(self.parent_run_id, msg.get("params") or {})
        self.reply(op="started", experiment_id=self.experiment_id, parent_run_id=self.parent_run_id)

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _clean(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def op_open(self, msg: dict[str, Any]) -> None:
        number = int(msg["number"])
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number}",
            tags={"mlflow.parentRunId": self.parent_run_id, "moca_role": "trial", "trial_number": str(number), "moca_trial": str(number),
                  **{str(k): str(v) for k, v in (msg.get("tags") or {}).items()}},
        )
        self.runs[number] = run
        self.reply(op="opened", number=number, run_id=run.info.run_id)

    def op_log(self, msg: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        number = int(msg["number"])
        if number not in self.runs:
            self.op_open({"number": number})
        run = self.runs.pop(number)
        rid = run.info.run_id
        state = str(msg["state"])
        ms = [Metric(f"epoch_{k}", float(v), 0, int(row.get("epoch", i + 1)))
              for i, row in enumerate(msg.get("history") or []) for k, v in row.items()
              if k not in ("epoch", "best_epoch") and isinstance(v, (int, float))]
        ms += [Metric(k, float(v), 0, 0) for k, v in (msg.get("metrics") or {}).items()]
        ps = [Param(k, v) for k, v in _clean(msg.get("params") or {}).items()]
        tags = [RunTag("state", state), *(RunTag(str(k), str(v)) for k, v in (msg.get("tags") or {}).items())]
        for i in range(0, max(len(ms), len(ps), 1), 500):
            self.client.log_batch(rid, metrics=ms[i : i + 500], params=ps[i : i + 100] if i == 0 else [], tags=tags if i == 0 else [])
        for i in range(100, len(ps), 100):
            self.client.log_batch(rid, params=ps[i : i + 100])
        if msg.get("config") is not None:
            self._write_config(run, json.dumps(msg["config"], indent=2))
        self.client.set_terminated(rid, status="FINISHED" if state == "COMPLETE" else "FAILED" if state == "FAIL" else "KILLED")

    def _write_config(self, run: Any, text: str) -> None:
        """``config.json`` in the run's artifacts: written in place for a local artifact folder (MLflow's ``log_text``
        reads the run back and goes through a temporary folder), else through MLflow."""
        uri = str(run.info.artifact_uri or "")
        if uri.startswith("file://"):
            from urllib.parse import unquote, urlparse

            folder = Path(unquote(urlparse(uri).path))
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".config.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, folder / "config.json")
        else:
            self.client.log_text(run.info.run_id, text, "config.json")

    def op_finish(self, msg: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), 0, 0) for k, v in (msg.get("metrics") or {}).items()]
        self.client.log_batch(self.parent_run_id, metrics=metrics)
        self.client.set_terminated(self.parent_run_id, status=str(msg.get("status") or "FINISHED"))

    def close(self) -> None:
        """The pipe has ended: runs opened but never completed (the search was killed mid-trial) end as KILLED."""
        if self.failed or self.client is None:
            return
        for run in self.runs.values():
            try:
                self.client.set_terminated(run.info.run_id, status="KILLED")
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass


def _writer_main() -> None:
    """The writer process: JSON lines in on stdin, answers out on stdout, until stdin ends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the search ends tracking by closing the pipe
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing MLflow prints may corrupt the answers
    writer = _Writer(out)
    try:  # while the search sets itself up (see Tracker.launch); a failure here is reported by the first message's handler
        import mlflow.tracking  # noqa: F401
    except Exception:  # noqa: BLE001, S110
        pass
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        writer.handle(msg)
    writer.close()
