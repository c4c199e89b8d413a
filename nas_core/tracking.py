"""MLflow tracking: one parent run per study, one nested run per trial. Failures warn and never stop a search.

Uses ``MlflowClient`` rather than the fluent API: the fluent API keeps an "active run" per thread,
and the search runs in a background thread beside a Streamlit server.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

__all__ = ["Tracker", "default_tracking_uri"]

log = logging.getLogger(__name__)

SECRET_KEYS = ("token", "password", "secret", "authtoken")


def default_tracking_uri(workspace: Path) -> str:
    return f"sqlite:///{Path(workspace).resolve() / 'mlflow.db'}"


def _clean(params: dict[str, Any]) -> dict[str, str]:
    """Parameters as MLflow strings, with anything secret-looking dropped (tokens never reach MLflow)."""
    return {str(k)[:250]: str(v)[:6000] for k, v in params.items() if not any(s in str(k).lower() for s in SECRET_KEYS)}


def _create_sqlite_store_atomically(uri: str, workspace: Path) -> None:
    """Create a new SQLite MLflow store whole or not at all.

    MLflow builds its schema in many migrations, not one transaction: a process killed in those seconds
    (a second Ctrl-C, kill -9) left ``table ... already exists`` for every later run. So a new store is
    built in a temporary file and linked into place only when complete; a concurrent creator's link wins.
    """
    if not uri.startswith("sqlite:///"):
        return
    final = Path(uri[len("sqlite:///"):])
    if final.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from nas_core.workspace.owners import pid_alive

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    for stale in final.parent.glob(f".{final.name}.*.tmp*"):
        pid = stale.name[len(final.name) + 2 :].split(".")[0]
        if not pid.isdigit() or pid_alive(int(pid)) is False:
            stale.unlink(missing_ok=True)  # left by a process killed while building its store
    artifacts = (Path(workspace) / "mlartifacts").resolve()
    store = SqlAlchemyStore(f"sqlite:///{tmp}", artifacts.as_uri())
    store.engine.dispose()  # the last connection closes: SQLite checkpoints its WAL into the file
    try:
        os.link(tmp, final)  # fails if another process linked its store first: then that one is used
    except FileExistsError:
        pass
    finally:
        for leftover in final.parent.glob(f"{tmp.name}*"):
            leftover.unlink(missing_ok=True)


class Tracker:
    """Logs a study to MLflow. Every method is a no-op after the first failure (with one warning)."""

    def __init__(self, *, tracking_uri: str, workspace: Path, study_name: str, enabled: bool = True) -> None:
        self.tracking_uri = tracking_uri
        self.workspace = Path(workspace)
        self.study_name = study_name
        self.enabled = enabled
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.warning: str | None = None
        self._starting: threading.Thread | None = None

    def start_async(self, params: dict[str, Any]) -> None:
        """:meth:`start` on a thread: a new MLflow store takes seconds to create (its schema migrations), and a
        search must answer a stop during its set-up. :meth:`log_trial` and :meth:`finish` wait for it."""
        self._starting = threading.Thread(target=self.start, args=(params,), daemon=True, name="moca-mlflow-start")
        self._starting.start()

    @property
    def ready(self) -> bool:
        """True once the parent run is open (or tracking is off): calls will not wait on MLflow's set-up."""
        return self._starting is None or not self._starting.is_alive()

    def _wait_started(self) -> None:
        if self._starting is not None:
            self._starting.join()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until MLflow's set-up has finished (at most ``timeout`` seconds); True once it has.

        Trials and latency measurements must not share the CPU with its schema migrations.
        """
        if self._starting is not None:
            self._starting.join(timeout)
        return self.ready

    def _fail(self, exc: BaseException) -> None:
        self.enabled = False
        self.warning = f"MLflow tracking disabled ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); the search goes on."
        warnings.warn(self.warning, RuntimeWarning, stacklevel=3)
        log.warning(self.warning)

    def start(self, params: dict[str, Any]) -> str | None:
        """Open (or, on resume, reopen) the study's parent run."""
        if not self.enabled:
            return None
        try:
            os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
            from mlflow.tracking import MlflowClient

            from nas_core.workspace import tune_sqlite

            tune_sqlite()

            # MLflow configures its logger on import and logs its DB migrations at INFO on first use.
            for noisy in ("alembic", "mlflow"):
                logging.getLogger(noisy).setLevel(logging.WARNING)
            # A failing store (disk full, deleted) raises, and _fail reports it as one warning; MLflow would also
            # log the same error with a traceback.
            logging.getLogger("mlflow.store").setLevel(logging.CRITICAL)

            _create_sqlite_store_atomically(self.tracking_uri, self.workspace)
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            name = f"moca-{self.study_name}"
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                artifacts = (self.workspace / "mlartifacts").resolve()
                artifacts.mkdir(parents=True, exist_ok=True)
                self.experiment_id = self.client.create_experiment(name, artifact_location=artifacts.as_uri())
            else:
                self.experiment_id = exp.experiment_id
            runs = self.client.search_runs(
                [self.experiment_id], filter_string="tags.moca_role = 'study'", max_results=1
            )
            if runs:
                self.parent_run_id = runs[0].info.run_id
                self.client.update_run(self.parent_run_id, status="RUNNING")
            else:
                run = self.client.create_run(
                    self.experiment_id, run_name=self.study_name, tags={"moca_role": "study", "study": self.study_name}
                )
                self.parent_run_id = run.info.run_id
                self._log_params(self.parent_run_id, params)
            return self.parent_run_id
        except Exception as exc:  # noqa: BLE001 - tracking must never stop a search
            self._fail(exc)
            return None

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _clean(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

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
        """One nested run for a finished trial: params, per-epoch metrics, final metrics, the config JSON.

        ``wait=False`` (a trial cut short by a stop) skips the run if MLflow is still setting up, rather than wait for it.
        """
        if not wait and not self.ready:
            return None
        self._wait_started()
        if not self.enabled or self.parent_run_id is None:
            return None
        try:
            from mlflow.entities import Metric, Param

            run = self.client.create_run(
                self.experiment_id,
                run_name=f"trial-{number}",
                tags={
                    "mlflow.parentRunId": self.parent_run_id,
                    "moca_role": "trial",
                    "trial_number": str(number),
                    "moca_trial": str(number),  # here, not in log_batch: a batch with tags costs a third transaction
                    "state": state,
                    **(tags or {}),
                },
            )
            rid = run.info.run_id
            ts = 0
            ms = [Metric(f"epoch_{k}", float(v), ts, int(row.get("epoch", i + 1)))
                  for i, row in enumerate(history) for k, v in row.items() if k not in ("epoch", "best_epoch")]
            ms += [Metric(k, float(v), ts, 0) for k, v in metrics.items() if isinstance(v, (int, float))]
            ps = [Param(k, v) for k, v in _clean(params).items()]
            for i in range(0, max(len(ms), len(ps)), 500):
                self.client.log_batch(rid, metrics=ms[i : i + 500], params=ps[i : i + 100] if i == 0 else [])
            if len(ps) > 100:
                for i in range(100, len(ps), 100):
                    self.client.log_batch(rid, params=ps[i : i + 100])
            if config is not None:
                self._write_config(run, json.dumps(config, indent=2))
            self.client.set_terminated(rid, status="FINISHED" if state == "COMPLETE" else "FAILED" if state == "FAIL" else "KILLED")
            return rid
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return None

    def _write_config(self, run: Any, text: str) -> None:
        """``config.json`` in the run's artifacts: written in place for a local artifact folder (MLflow's ``log_text``
        reads the run back and goes through a temporary folder: half of a trial's tracking time), else through MLflow."""
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

    def finish(self, metrics: dict[str, float], *, status: str = "FINISHED", wait: bool = True) -> None:
        """Close the parent run; with ``wait=False`` (a stop during set-up) skip it if MLflow is still starting."""
        if not wait and not self.ready:
            return  # the parent run stays RUNNING until the study's next run reopens it
        self._wait_started()
        if not self.enabled or self.parent_run_id is None:
            return
        try:
            from mlflow.entities import Metric

            self.client.log_batch(self.parent_run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
            self.client.set_terminated(self.parent_run_id, status=status)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
