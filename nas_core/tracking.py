"""MLflow tracking: one parent run per study, one nested run per trial. Failures warn and never stop a search.

Uses ``MlflowClient`` rather than the fluent API: the fluent API keeps an "active run" per thread,
and the search runs in a background thread beside a Streamlit server.
"""

from __future__ import annotations

import json
import logging
import os
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
    ) -> str | None:
        """One nested run for a finished trial: params, per-epoch metrics, final metrics, the config JSON."""
        if not self.enabled or self.parent_run_id is None:
            return None
        try:
            from mlflow.entities import Metric, Param, RunTag

            run = self.client.create_run(
                self.experiment_id,
                run_name=f"trial-{number}",
                tags={
                    "mlflow.parentRunId": self.parent_run_id,
                    "moca_role": "trial",
                    "trial_number": str(number),
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
                self.client.log_batch(rid, metrics=ms[i : i + 500], params=ps[i : i + 100] if i == 0 else [],
                                      tags=[RunTag("moca_trial", str(number))] if i == 0 else [])
            if len(ps) > 100:
                for i in range(100, len(ps), 100):
                    self.client.log_batch(rid, params=ps[i : i + 100])
            if config is not None:
                self.client.log_text(rid, json.dumps(config, indent=2), "config.json")
            self.client.set_terminated(rid, status="FINISHED" if state == "COMPLETE" else "FAILED" if state == "FAIL" else "KILLED")
            return rid
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return None

    def finish(self, metrics: dict[str, float], *, status: str = "FINISHED") -> None:
        if not self.enabled or self.parent_run_id is None:
            return
        try:
            from mlflow.entities import Metric

            self.client.log_batch(self.parent_run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
            self.client.set_terminated(self.parent_run_id, status=status)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
