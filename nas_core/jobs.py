"""Background jobs: one class for work in a daemon thread (start, stop, wait, status, result, error), and its two kinds.

:class:`SearchRunner` runs :func:`run_search` with a status snapshot and a stream of events;
:class:`RetrainJob` retrains a config. The :data:`REGISTRY` of searches and the retrain jobs are
process-wide, so every browser tab and every Streamlit rerun sees the same running work (the dashboard
wraps :func:`get_registry` in ``st.cache_resource``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas_core import events as ev
from nas_core.deploy import retraining
from nas_core.errors import ConfigError, NasCoreError, SearchBusyError
from nas_core.schema.config import ModelConfig
from nas_core.search import SearchConfig, SearchResult, run_search
from nas_core.search.workers import check_workers, run_fleet

__all__ = ["BackgroundJob", "RunnerSnapshot", "SearchRunner", "RetrainJob", "RunnerRegistry", "REGISTRY", "get_registry", "start_retrain",
           "get_retrain"]

log = logging.getLogger(__name__)
MAX_EVENTS = 5000


@dataclass(frozen=True)
class RunnerSnapshot:
    """What the UI shows: status, counts, the current trial and epoch, the points so far, recent events."""

    study: str
    status: str  # idle | running | stopping | finished | stopped | error
    trials_done: int
    trials_total: int | None
    n_complete: int
    n_pruned: int
    n_failed: int
    current_trial: int | None
    current_params: dict[str, Any]
    current_summary: str
    epoch: int
    epochs: int
    elapsed_s: float
    timeout_s: float | None
    error: str | None
    best_config: str | None
    points: list[dict[str, Any]] = field(default_factory=list)
    recent: list[ev.Event] = field(default_factory=list)
    plan_note: str = ""  # the plan decided at run time (the one training), once it is

    @property
    def active(self) -> bool:
        return self.status in ("running", "stopping")


class BackgroundJob:
    """Work in a daemon thread: ``start()``, ``stop()`` (sets the event the work watches), ``wait()``, status, result, error.

    Subclasses implement :meth:`_work` (return the result; watch ``self._stop``) and may react to a failure in
    :meth:`_failed`. Status: idle | running | stopping | finished | stopped | error.
    """

    kind = "job"

    def __init__(self, label: str) -> None:
        self.label = label
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._status = "idle"
        self._error: str | None = None
        self._result: Any = None
        self._started_at: float | None = None
        self._ended_at: float | None = None

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Any:
        with self._lock:
            if self._thread is not None:
                raise SearchBusyError(f"this {self.kind} job for {self.label!r} was already started; create a new one to resume.")
            self._status = "running"
            self._started_at = time.time()
            self._thread = threading.Thread(target=self._run, daemon=True, name=f"moca-{self.kind}-{self.label}")
        self._thread.start()
        return self

    def stop(self, *, wait: float | None = None) -> bool:
        """Ask the work to stop; with ``wait`` seconds, block until idle. Returns True once the thread ended."""
        with self._lock:
            if self._status == "running":
                self._status = "stopping"
        self._stop.set()
        return self.wait(wait) if wait is not None else not self.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.is_alive()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def status(self) -> str:
        return self._status

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def result(self) -> Any:
        return self._result

    @property
    def started_at(self) -> float:
        return self._started_at or 0.0

    def _work(self) -> Any:
        raise NotImplementedError

    def _failed(self, message: str) -> None:
        """Called in the job's thread when the work raised (``message`` is the one line shown to the user)."""

    def _run(self) -> None:
        try:
            self._result = self._work()
            final = "stopped" if self._stop.is_set() else "finished"
        except NasCoreError as exc:
            self._error = str(exc)
            self._failed(self._error)
            final = "error"
        except Exception as exc:  # noqa: BLE001 - the thread must report, not die silently
            log.exception("%s job %s crashed", self.kind, self.label)
            self._error = f"{type(exc).__name__}: {_first_line(exc)}"
            self._failed(self._error)
            final = "error"
        with self._lock:
            self._status = final
            self._ended_at = time.time()
            self._finished()

    def _finished(self) -> None:
        """Called under the job's lock once the work has ended."""


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


class SearchRunner(BackgroundJob):
    """Runs one search in a daemon thread. ``stop()`` ends the current trial at its next batch boundary."""

    kind = "search"

    def __init__(self, config: SearchConfig, *, workers: int = 1) -> None:
        super().__init__(config.study_name)
        self.config = config.validate()
        self.study = config.study_name
        self.workers = workers  # > 1: that many worker processes on the config's shared storage (nas_core.search.workers)
        if workers > 1:
            check_workers(workers, config.storage_url())  # refused here, before a thread starts, so the page says why
        self._events: list[ev.Event] = []
        self._listeners: list[Any] = []
        self._current: dict[str, Any] = {}
        self._counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self._points: list[dict[str, Any]] = []
        self._plan: ev.PlanMade | None = None

    @property
    def result(self) -> SearchResult | None:
        return self._result

    def subscribe(self, listener: Any) -> None:
        """Call ``listener(event)`` from the search thread for every new event (keep it fast)."""
        self._listeners.append(listener)

    def _work(self) -> SearchResult:
        if self.workers > 1:
            return run_fleet(self.config, self.workers, emit=self._on_event, stop_event=self._stop)
        return run_search(self.config, emit=self._on_event, stop_event=self._stop)

    def _failed(self, message: str) -> None:
        self._on_event(ev.SearchError(self.study, message=message))

    def _finished(self) -> None:
        self._current = {}

    def _on_event(self, event: ev.Event) -> None:
        with self._lock:
            self._events.append(event)
            if len(self._events) > MAX_EVENTS:
                del self._events[: len(self._events) - MAX_EVENTS]
            if isinstance(event, ev.TrialStarted):
                self._current = {"number": event.number, "params": event.params, "summary": event.summary, "epoch": 0, "epochs": self.config.epochs}
            elif isinstance(event, ev.EpochProgress):
                self._current.update(epoch=event.epoch, epochs=event.epochs, last=event.metrics)
            elif isinstance(event, ev.PlanMade):
                self._plan = event
            elif isinstance(event, ev.TrialFinished):
                self._counts[event.state] = self._counts.get(event.state, 0) + 1
                self._points.append({"number": event.number, "state": event.state, **event.metrics})
                self._current = {}
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001
                log.exception("runner listener failed")

    # views -------------------------------------------------------------------------------------
    def events(self, since: int = 0) -> list[ev.Event]:
        with self._lock:
            return list(self._events[since:])

    def snapshot(self, *, recent: int = 50) -> RunnerSnapshot:
        with self._lock:
            end = self._ended_at or time.time()
            done = sum(self._counts.values())
            return RunnerSnapshot(
                study=self.study,
                status=self._status,
                trials_done=done,
                trials_total=self._plan.trials if self._plan is not None and self._plan.trials else self.config.trials,
                n_complete=self._counts["COMPLETE"],
                n_pruned=self._counts["PRUNED"],
                n_failed=self._counts["FAIL"],
                current_trial=self._current.get("number"),
                current_params=dict(self._current.get("params", {})),
                current_summary=self._current.get("summary", ""),
                epoch=int(self._current.get("epoch", 0)),
                epochs=int(self._current.get("epochs", self.config.epochs)),
                elapsed_s=(end - self._started_at) if self._started_at else 0.0,
                timeout_s=self.config.timeout,
                error=self._error,
                best_config=self._result.best_config if self._result else None,
                points=list(self._points),
                recent=list(self._events[-recent:]),
                plan_note=self._plan.note if self._plan is not None else "",
            )


class RunnerRegistry:
    """Process-wide map (workspace, study) -> runner; refuses a second start of a running study."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runners: dict[tuple[str, str], SearchRunner] = {}

    @staticmethod
    def _key(workspace: str | Path, study: str) -> tuple[str, str]:
        return (str(Path(workspace).resolve()), study)

    def start(self, config: SearchConfig, *, workers: int = 1) -> SearchRunner:
        runner = SearchRunner(config, workers=workers)
        key = self._key(config.workspace, runner.study)
        with self._lock:
            old = self._runners.get(key)
            if old is not None and old.is_alive():
                raise SearchBusyError(
                    f"study {runner.study!r} is already running in this workspace; stop it first or choose another study name."
                )
            self._runners[key] = runner
        return runner.start()

    def get(self, workspace: str | Path, study: str) -> SearchRunner | None:
        with self._lock:
            return self._runners.get(self._key(workspace, study))

    def running(self, workspace: str | Path | None = None) -> list[SearchRunner]:
        ws = str(Path(workspace).resolve()) if workspace is not None else None
        with self._lock:
            return [r for (w, _), r in self._runners.items() if r.is_alive() and (ws is None or w == ws)]

    def latest(self, workspace: str | Path) -> SearchRunner | None:
        ws = str(Path(workspace).resolve())
        with self._lock:
            mine = [r for (w, _), r in self._runners.items() if w == ws]
        return max(mine, key=lambda r: r._started_at or 0) if mine else None


REGISTRY = RunnerRegistry()


def get_registry() -> RunnerRegistry:
    return REGISTRY


class RetrainJob(BackgroundJob):
    """Retrains one config in a daemon thread so a browser refresh or a page switch does not cut it short."""

    kind = "retrain"

    def __init__(self, config: ModelConfig, *, workspace: str | Path, epochs: int, device: str = "auto", label: str = "") -> None:
        super().__init__(label)
        self.config = config
        self.workspace = str(workspace)
        self.epochs = int(epochs)
        self.device = device
        self.epoch = 0
        self.done = 0  # epochs finished, the body's network's included
        self.body_epochs = retraining.body_epochs(config)  # a head on another network's body: that network retrains first
        self.last: dict[str, float] = {}

    def _on_epoch(self, epoch: int, total: int, row: dict[str, float]) -> None:
        with self._lock:
            self.epoch, self.last = epoch, dict(row)
            self.done += 1

    def _work(self) -> dict[str, Any]:
        return retraining.retrain(self.config, workspace=self.workspace, epochs=self.epochs, device=self.device,
                                  on_epoch=self._on_epoch, should_stop=self._stop.is_set)

    def progress(self) -> tuple[float, str]:
        with self._lock:
            epoch, last, done = self.epoch, dict(self.last), self.done
        if self.body_epochs and done <= self.body_epochs:
            text = f"the body's network: epoch {epoch} / {self.body_epochs}"
        else:
            text = f"{'the head: ' if self.body_epochs else ''}epoch {epoch} / {self.epochs}"
        if "val_accuracy" in last:
            seen = " (trained on)" if self.config.training.trains_on_val else ""
            text += f" — val acc {last['val_accuracy']:.4f}{seen}"
        return min(1.0, done / max(1, self.epochs + self.body_epochs)), text


_RETRAIN: dict[tuple[str, str, int], RetrainJob] = {}
_RETRAIN_LOCK = threading.Lock()


def start_retrain(config: ModelConfig, *, workspace: str | Path, study: str, trial: int, epochs: int, device: str = "auto") -> RetrainJob:
    """Start retraining a trial's config for ``epochs``; a second start while it runs is refused."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"retrain epochs must be a positive whole number, but got {epochs!r}.")
    key = (str(Path(workspace).resolve()), study, int(trial))
    with _RETRAIN_LOCK:
        old = _RETRAIN.get(key)
        if old is not None and old.is_alive():
            raise SearchBusyError(f"trial {trial} of {study!r} is already being retrained; wait for it or stop it first.")
        job = RetrainJob(config, workspace=workspace, epochs=epochs, device=device, label=f"{study}-{trial}")
        _RETRAIN[key] = job
    return job.start()


def get_retrain(workspace: str | Path, study: str, trial: int) -> RetrainJob | None:
    with _RETRAIN_LOCK:
        return _RETRAIN.get((str(Path(workspace).resolve()), study, int(trial)))
