"""SearchConfig -> an Optuna (multi-objective) study: sampling, evaluation, pruning, dedup, tracking, outputs.

The loop uses Optuna's ask/tell interface rather than ``study.optimize`` so that a trial can be
stopped at a batch boundary and still be recorded, identical candidates are answered from the
study instead of retrained, and every step emits a typed progress event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from nas_core import events as ev
from nas_core.errors import ConfigError, NasCoreError, WorkspaceError
from nas_core.registry import Registry
from nas_core.schema.budget import FINETUNE_SHARE, plan_budget
from nas_core.schema.objectives import OBJECTIVES, Objective  # noqa: F401 - re-exported (old path)
from nas_core.schema.record import HEAD_ON_BODY, RECORD_KEY, VAL_SEEN, record_attr, trial_record
from nas_core.search.mo_pruning import MOSuccessiveHalving
from nas_core.search.seeds import KnownGoodQueue
from nas_core.workspace import check_study_name, default_workspace, study_dir
from nas_core.workspace.config import workspace_storage, workspace_tracking_uri
from nas_core.workspace.faults import as_fatal
from nas_core.workspace.owners import OWNER_KEY, device_label, owner_record, reclaim_dead_trials, reclaim_note
from nas_core.workspace.storage import open_storage

__all__ = [
    "OBJECTIVES",
    "SAMPLERS",
    "PRUNERS",
    "SearchConfig",
    "SearchResult",
    "run_search",
    "open_study",
    "default_study_name",
]

log = logging.getLogger(__name__)


SamplerFactory = Callable[..., Any]
SAMPLERS: Registry[SamplerFactory] = Registry("sampler")
PRUNERS: Registry[Callable[..., Any]] = Registry("pruner")


def _population(trials: int | None) -> int:
    return max(4, min(20, (trials or 40) // 2))


@SAMPLERS.register("tpe")
def _tpe(*, seed: int, space: Any, trials: int | None, n_objectives: int) -> Any:
    from nas_core.search.tpe import CachedTPESampler, install

    install()  # one split of the study per trial, not per conditional parameter (same samples)
    # multivariate over the shared parameters; group=True would re-decompose every trial's space on each ask (quadratic).
    return CachedTPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, max(3, (trials or 30) // 3)))


@SAMPLERS.register("nsga2")
def _nsga2(*, seed: int, space: Any, trials: int | None, n_objectives: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=_population(trials))


@SAMPLERS.register("nsga3")
def _nsga3(*, seed: int, space: Any, trials: int | None, n_objectives: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIIISampler(seed=seed, population_size=_population(trials))


@SAMPLERS.register("random")
def _random(*, seed: int, space: Any, trials: int | None, n_objectives: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("gp")
def _gp(*, seed: int, space: Any, trials: int | None, n_objectives: int) -> Any:
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(3, (trials or 30) // 3)), warn_independent_sampling=False)


@SAMPLERS.register("grid")
def _grid(*, seed: int, space: Any, trials: int | None, n_objectives: int) -> Any:
    import optuna

    return optuna.samplers.GridSampler(space.grid(), seed=seed)


# A pruner factory gets the epochs and the number of objectives and returns an Optuna pruner (single-objective
# studies: the study reports validation accuracy per epoch), a MOSuccessiveHalving (multi-objective rungs, which
# Optuna's pruners do not support), or None.
@PRUNERS.register("none")
def _no_pruner(**_: Any) -> Any:
    return None


@PRUNERS.register("median")
def _median(*, epochs: int, **_: Any) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 4))


@PRUNERS.register("hyperband")
def _hyperband(*, epochs: int, **_: Any) -> Any:
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)


@PRUNERS.register("sh")
def _sh(*, epochs: int, n_objectives: int = 1, **_: Any) -> Any:
    import optuna

    if n_objectives > 1:
        return MOSuccessiveHalving(epochs=epochs, asynchronous=False)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


@PRUNERS.register("asha")
def _asha(*, epochs: int, **_: Any) -> Any:
    return MOSuccessiveHalving(epochs=epochs, asynchronous=True)


def make_pruners(name: str, *, epochs: int, n_objectives: int) -> tuple[Any, MOSuccessiveHalving | None]:
    """(the study's Optuna pruner or None, the multi-objective rung pruner or None) for pruner ``name``."""
    made = PRUNERS.get(name)(epochs=epochs, n_objectives=n_objectives)
    return (None, made) if isinstance(made, MOSuccessiveHalving) else (made, None)


def default_study_name(dataset: str, space: str) -> str:
    stem = Path(dataset).stem if ("/" in dataset or "." in dataset) else dataset
    clean = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in f"{stem}-{Path(space).stem}")
    return clean.strip("-.") or "study"


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs; ``validate()`` checks it all before any storage is touched."""

    dataset: str = "digits"
    trials: int | None = 20
    timeout: float | None = None
    seed: int = 0
    workspace: str = field(default_factory=lambda: str(default_workspace()))
    study: str | None = None
    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    space: str = "seed-cnn"
    space_data: dict[str, Any] | None = None  # an edited space (from the dashboard), overrides ``space``
    sampler: str = "tpe"
    fidelity: str = "train"
    pruner: str = "none"
    epochs: int = 20
    patience: int = 5
    storage: str | None = None
    tracking_uri: str | None = None
    tracking: bool = True
    device: str = "auto"
    data_dir: str | None = None
    train_samples: int | None = None
    val_samples: int | None = None
    save_weights: bool = True
    fidelity_options: dict[str, Any] = field(default_factory=dict)
    finalize: bool = True  # run the fidelity's final phase when the trials end (once per study state: see claims.py)
    finalize_only: bool = False  # no trials: only the final phase and the outputs (`finalize --study`)
    finalize_force: bool = False  # run the final phase again even if it was run for this study state
    worker_index: int = 0  # one of several workers: its sampler draws from its own seed, the data split stays `seed`'s
    known_good: bool = True  # a new study starts with the known-good designs of nas_core.seeds

    @property
    def study_name(self) -> str:
        return self.study or default_study_name(self.dataset, self.space)

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return [cast(Literal["minimize", "maximize"], OBJECTIVES[o].direction) for o in self.objectives]

    def storage_url(self) -> str:
        return self.storage or workspace_storage(self.workspace)  # the flag, else the workspace's moca.json, else its optuna.db

    def validate(self) -> SearchConfig:
        """Raise a :class:`ConfigError` naming the first bad value and its fix."""
        from nas_core.fidelities.base import FIDELITIES
        from nas_core.training.loop import resolve_device

        if self.trials is None and self.timeout is None and not self.finalize_only:
            raise ConfigError("a search needs a budget: give --trials N and/or --timeout SECONDS.")
        if self.trials is not None and (not isinstance(self.trials, int) or self.trials < 1):
            raise ConfigError(f"--trials must be a positive integer, but got {self.trials}; use e.g. --trials 20.")
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ConfigError(f"--timeout must be a positive number of seconds, but got {self.timeout}; use e.g. --timeout 600.")
        if self.epochs < 1 or self.patience < 1:
            raise ConfigError(f"--epochs and patience must be >= 1, but got epochs={self.epochs}, patience={self.patience}.")
        if not self.objectives:
            raise ConfigError(f"give at least one objective; choose from {', '.join(OBJECTIVES)}.")
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise ConfigError(f"unknown objective {o!r}; choose from {', '.join(OBJECTIVES)} (comma-separated).")
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"objective listed twice in {','.join(self.objectives)}; list each once.")
        SAMPLERS.get(self.sampler)
        fidelity = FIDELITIES.get(self.fidelity)
        known = tuple(fidelity.options)
        for key in self.fidelity_options:
            if key not in known:
                hint = f"it takes {', '.join(known)}" if known else "it takes none"
                raise ConfigError(f"unknown option {key!r} for the {self.fidelity} fidelity; {hint}.")
        fidelity.check(dict(self.fidelity_options))
        if self.pruner not in PRUNERS:
            raise ConfigError(f"unknown pruner {self.pruner!r}; use {', '.join(PRUNERS.names()[:-1])} or {PRUNERS.names()[-1]}.")
        if len(self.objectives) > 1 and self.pruner in ("median", "hyperband"):
            raise ConfigError(
                f"pruner {self.pruner!r} supports single-objective studies only; use --pruner asha (multi-objective) or one objective."
            )
        for name, value in (("train_samples", self.train_samples), ("val_samples", self.val_samples)):
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, but got {value}.")
        check_study_name(self.study_name)
        resolve_device(self.device)
        self.search_space()
        return self

    def search_space(self) -> Any:
        from nas_core.space import SearchSpace, load_space

        if self.space_data is not None:
            return SearchSpace.from_dict(self.space_data, source="edited search space")
        return load_space(self.space)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objectives"] = list(self.objectives)
        d["study"] = self.study_name
        d.pop("storage", None)  # a PostgreSQL URL may carry a password: never recorded
        return d


@dataclass(frozen=True)
class SearchResult:
    study: str
    workspace: str
    storage: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_config: str | None
    wall_s: float
    reason: str
    warnings: tuple[str, ...] = ()


def heartbeat_settings() -> tuple[float, float]:
    """(heartbeat interval, grace period) in seconds: 30 and 120, or ``MOCA_HEARTBEAT_S`` / ``MOCA_GRACE_S``.

    A trial whose process died (killed, out of memory, machine lost) stops beating; the next search or
    worker on the study marks it failed after the grace period and runs its parameters again once.
    """
    import os

    def read(name: str, default: float) -> float:
        try:
            value = float(os.environ.get(name, default))
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, but got {os.environ.get(name)!r}.") from None
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{name} must be a positive number of seconds, but got {value}.")
        return value

    interval = read("MOCA_HEARTBEAT_S", 30.0)
    return interval, max(read("MOCA_GRACE_S", 120.0), 2 * interval)


def open_study(config: SearchConfig, *, create: bool = True) -> Any:
    """Create or load the study with RDB storage (heartbeats mark crashed trials failed and retry them)."""
    import optuna

    from nas_core.workspace.batched import batched

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = config.storage_url()
    storage: Any = None
    for attempt in range(5):
        try:
            storage = batched(open_storage(url, heartbeat=heartbeat_settings()))  # a trial's writes: a few transactions, not ~30
            break
        except Exception as exc:  # noqa: BLE001 - a bad URL or unreachable DB is user input
            # Workers starting together race to create the tables; the loser retries and finds them made.
            if attempt < 4 and any(m in str(exc) for m in ("already exists", "duplicate key", "UniqueViolation", "UNIQUE constraint")):
                time.sleep(0.5 * (attempt + 1))
                continue
            if isinstance(exc, NasCoreError):
                raise
            fatal = as_fatal(exc, generic=False)
            if fatal is not None:
                raise fatal from None  # locked, corrupt, disk full: say so, with the fix
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"cannot open the study storage ({msg}); check --storage (any SQLAlchemy URL, e.g. sqlite:///optuna.db).") from None
    space = config.search_space()
    sampler = SAMPLERS.get(config.sampler)(seed=config.seed + 7919 * config.worker_index, space=space, trials=config.trials, n_objectives=len(config.objectives))
    pruner, _ = make_pruners(config.pruner, epochs=config.epochs, n_objectives=len(config.objectives))
    name = config.study_name
    existing = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        old = [d.name.lower() for d in study.directions]
        if old != config.directions or study.user_attrs.get("objectives", list(config.objectives)) != list(config.objectives):
            raise ConfigError(
                f"study {name!r} exists with objectives {study.user_attrs.get('objectives', old)}; "
                f"resume it with the same --objectives or pick a new --study name."
            )
        return study
    if not create:
        raise ConfigError(f"study {name!r} does not exist in {url}; run `search` first or check --study.")
    # load_if_exists: another worker may create the same study between our check and this call.
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, directions=config.directions,
                                load_if_exists=True)
    study.set_user_attr("objectives", list(config.objectives))
    study.set_user_attr("config", config.to_dict())
    study.set_user_attr("space", space.to_dict())
    return study


class _GridExhausted(Exception):
    """Every point of the grid has been tried (GridSampler asks for a stop Optuna only allows inside optimize)."""


def _tell(study: Any, trial: Any, values: Any = None, **kwargs: Any) -> None:
    try:
        study.tell(trial, values, **kwargs)
    except RuntimeError as exc:
        if "stop" not in str(exc).lower():
            raise
        raise _GridExhausted() from None  # the trial itself was recorded before the sampler's hook raised


class _Heartbeat:
    """Records Optuna heartbeats for the running trial (ask/tell has no heartbeat thread of its own).

    One thread per search: :meth:`track` points it at a new trial and has it beat at once, then every
    ``interval`` seconds; :meth:`track(None) <track>` pauses it between trials; :meth:`close` ends it.
    """

    def __init__(self, study: Any, interval: float = 30.0) -> None:
        from optuna.storages._heartbeat import is_heartbeat_enabled

        self._storage = study._storage  # Optuna wraps the RDB storage in a cache that beats through to it
        self._interval = interval
        self._trial_id: int | None = None
        self._wake = threading.Event()
        self._closed = False
        self._thread = None
        if is_heartbeat_enabled(self._storage):
            self._thread = threading.Thread(target=self._run, daemon=True, name="moca-heartbeat")
            self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            trial_id = self._trial_id
            if trial_id is not None:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - a missed beat only risks a retry
                    pass
            self._wake.wait(self._interval)
            self._wake.clear()

    def track(self, trial: Any) -> None:
        self._trial_id = None if trial is None else trial._trial_id
        if trial is not None:
            self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._trial_id = None
        self._wake.set()


class _TrialWrites:
    """The write-behind of :class:`~nas_core.workspace.batched.BatchedTrialStorage` where the study has it (RDB
    storage); with a gRPC proxy every call is a no-op and each write goes through as Optuna makes it."""

    def __init__(self, storage: Any) -> None:
        from nas_core.workspace.batched import BatchedTrialStorage

        self._storage = storage if isinstance(storage, BatchedTrialStorage) else None

    @classmethod
    def of(cls, study: Any) -> _TrialWrites:
        return cls(study._storage)

    def hold(self, trial_id: int) -> None:
        if self._storage is not None:
            self._storage.hold(trial_id)

    def asking(self) -> Any:
        return self._storage.asking() if self._storage is not None else contextlib.nullcontext()

    def sampling(self, trial_id: int) -> Any:
        return self._storage.sampling(trial_id) if self._storage is not None else contextlib.nullcontext()

    def flush(self, trial_id: int) -> None:
        """Write the held trial's pending attributes now (a value other trials read while it runs)."""
        if self._storage is not None:
            self._storage.flush(trial_id)


def _emit(emit: Callable[[ev.Event], None] | None, event: ev.Event) -> None:
    if emit is not None:
        try:
            emit(event)
        except Exception:  # noqa: BLE001 - a broken listener must not break the search
            log.exception("progress listener failed")


def run_search(
    config: SearchConfig,
    *,
    emit: Callable[[ev.Event], None] | None = None,
    stop_event: threading.Event | None = None,
) -> SearchResult:
    """Run a study to its budget (trials and/or timeout) or until ``stop_event`` is set.

    Everything is validated and the dataset loaded before the storage is opened, so bad input
    never touches recorded studies. Trials that raise or diverge are recorded as FAIL with their
    reason; a stop ends the running trial at the next batch boundary and records it as PRUNED.
    Torch's thread count follows ``evaluate.cpu_threads`` during the search and is restored after.
    """
    import torch

    before = torch.get_num_threads()
    try:
        return _run_search(config, emit=emit, stop_event=stop_event)
    finally:
        torch.set_num_threads(before)


@dataclass
class _Run:
    """One process's run of a study, set up by :func:`_open_run`: what its trials and final phases share."""

    config: SearchConfig
    emit: Callable[[ev.Event], None] | None
    stop_event: threading.Event
    workspace: Path
    out_dir: Path
    space: Any
    device: Any
    data: Any
    study: Any
    dataset_ref: Any
    tracker: Any
    fidelity: Any
    objectives: list[Objective]
    mo_pruner: Any
    designs: KnownGoodQueue
    notes: list[str]
    owner: dict[str, Any]
    seen: dict[str, tuple[int, list[float]]]  # candidate hash -> (first trial, its values): identical candidates are not retrained
    counts: dict[str, int] = field(default_factory=lambda: {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0})
    one_training: dict[str, Any] | None = None  # {"design", "epochs", "seconds_per_epoch"} when the budget fits one training
    # once the one training has completed: its body's tensors and its config, for a companion that shares its body
    one_training_body: dict[str, Any] | None = None
    one_training_config: dict[str, Any] | None = None
    # the usual plan's head companion (_plan_head_companion): {"design", "mode": "head", "body_of", "epochs"} while it waits
    # for its body's trial; "body_trial" once that trial completed here and the companion is next in the queue
    head_companion: dict[str, Any] | None = None
    screening: bool = False  # sampled candidates are screened before their full training (training.screening)
    quickest: float = math.inf  # seconds of this run's quickest complete trial: a new trial starts only if the time left fits it
    share_spent: bool = False  # a known-good design could not finish in the search's share (_known_good_late): no trial starts

    @property
    def name(self) -> str:
        return str(self.study.study_name)


def _run_search(config: SearchConfig, *, emit: Callable[[ev.Event], None] | None, stop_event: threading.Event | None) -> SearchResult:
    import optuna

    config.validate()
    # Heartbeats are recorded by _Heartbeat for ask/tell, which Optuna warns about; fail_stale_trials is "experimental".
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    run = _open_run(config, emit=emit, stop_event=stop_event or threading.Event())
    if isinstance(run, SearchResult):  # stopped during start-up: nothing to record yet
        return run
    try:
        return _plan_and_run(run)
    finally:
        run.tracker.close()  # after finish() a no-op; after an error, MLflow's writer writes what it has and exits


def _plan_and_run(run: _Run) -> SearchResult:
    """Plan the budget (one training included), run the trials, then the final phases and the outputs."""
    config = run.config
    start = time.perf_counter()
    finalizer = run.fidelity.finalize if run.fidelity.has_final_phase else None
    deadline, final_deadline = phase_deadlines(start, config.timeout, two_phase=finalizer is not None, options=config.fidelity_options)
    plan = plan_budget(timeout=config.timeout, two_phase=finalizer is not None, options=config.fidelity_options)
    if plan.final_s:
        plan = _plan_one_training(run, plan, deadline) or plan
    if run.one_training is None:
        _plan_head_companion(run)
    run.study.set_user_attr("budget_plan", plan.to_dict())
    hard_end = deadline
    if plan.final_s:  # the train fidelity keeps the end of --timeout for the final training of the best candidate
        deadline = start + float(plan.search_s or 0)
    elif run.one_training:  # once the one training (and its companion, if the time left fits it) ends, no other trial starts
        deadline = start

    def loop_end() -> float:  # until a trial completes there is nothing to refit: the trials may use the final share too
        if not run.counts["COMPLETE"] or _companion_due(run, hard_end):
            return hard_end
        return deadline

    reason = _run_trials(run, loop_end)
    return _finish_run(run, reason=reason, start=start, plan=plan, finalizer=finalizer, final_deadline=final_deadline)


def _is_one_training(run: _Run, trial: Any) -> bool:
    """Whether ``trial`` is the planned one training (the known-good design it trains, when the budget fits only it)."""
    return run.one_training is not None and trial.user_attrs.get("known_good") == run.one_training["design"]


def _companion(run: _Run) -> dict[str, Any] | None:
    """The run's small companion: the one training's, or the usual plan's head companion once its body's trial completed."""
    companion = (run.one_training or {}).get("companion")
    if companion is None and run.head_companion is not None and "body_trial" in run.head_companion:
        return run.head_companion
    return companion


def _is_companion(run: _Run, trial: Any) -> bool:
    """Whether ``trial`` is the run's companion (the small design trained in the time the one training left, or its head
    fitted on a body trained here: :func:`_companion`)."""
    companion = _companion(run)
    return companion is not None and trial.user_attrs.get("known_good") == companion["design"]


def _plan_head_companion(run: _Run) -> None:
    """In the usual plan, when the small companion (``seeds.COMPANION``) is queued and shares the body of a design queued
    before it, its head is fitted on that design's trained body, frozen, right after that trial completes here (as the one
    training's companion is): seconds instead of a training, and a <= 100K point on the front that the queue's order would
    otherwise leave for last (measured on Fashion-MNIST with the 4-conv net's 20-epoch trial: test 0.9375 with 96,554
    params, where seed 14's hour ran two trials and never reached the companion). Only a train-fidelity run that finalizes
    (not a worker)."""
    from nas_core.search.seeds import COMPANION
    from nas_core.training.frozen import HEAD_EPOCHS

    config = run.config
    if config.fidelity != "train" or not config.finalize or config.finalize_only:
        return
    small = run.designs.entry(COMPANION)
    if small is None:
        return
    for name, values in run.designs.pending[: run.designs.pending.index(small)]:
        if _companion_on_body(run, values) is not None:
            run.head_companion = {"design": COMPANION, "mode": "head", "body_of": name, "epochs": HEAD_EPOCHS}
            return


def _companion_due(run: _Run, end: float) -> bool:
    """Whether the loop should go on for the one training's companion: once the one training has completed, the first
    call fits the companion's epochs to the time left before ``end`` (``schema.budget.one_training_companion_epochs``)
    and says yes when they are enough; yes again while it trains; no once it has ended, or when nothing was planned."""
    from nas_core.schema.budget import ONE_TRAINING_COMPANION_EPOCHS, one_training_companion_epochs

    companion = (run.one_training or {}).get("companion")
    if companion is None or companion.get("ended"):
        return False
    if companion.get("mode") == "head" and not companion.get("due"):
        left = end - time.perf_counter()
        if run.one_training_body is None or left < float(companion["seconds"]):
            companion["ended"] = True
            why = ("the one training did not complete" if run.one_training_body is None
                   else f"~{float(companion['seconds']):,.0f} s were needed and {max(0.0, left):,.0f} s were left")
            run.notes.append(f"The small design ({companion['design']}) was not fitted on the one training's frozen body: {why}.")
            return False
        companion["due"] = True
        run.study.set_user_attr("one_training", run.one_training)
        return True
    if companion.get("epochs") is None:
        epochs = one_training_companion_epochs(left_s=end - time.perf_counter(), seconds_per_epoch=float(companion["seconds_per_epoch"]))
        if epochs is None:
            companion["ended"] = True
            run.notes.append(f"The one training left too little time for {ONE_TRAINING_COMPANION_EPOCHS} epochs of the small "
                             f"design ({companion['design']}, ~{companion['seconds_per_epoch']:,.0f} s an epoch): not trained.")
            return False
        companion["epochs"] = epochs
        run.study.set_user_attr("one_training", run.one_training)
        run.notes.append(f"The one training left time for {epochs} epochs of the small design ({companion['design']}), "
                         f"which trains next as a small point of the front.")
    return True


def _plan_one_training(run: _Run, plan: Any, end: float) -> Any:
    """The one-training plan (``schema.budget``) when the budget ending at ``end`` fits too few trials of the first
    known-good design, timed here on a slice of the data; ``None`` otherwise. Only a fresh study's own run decides it
    (not a worker, nor a study with complete trials to compare). When the budget fits ``ONE_TRAINING_WIDER_EPOCHS``
    epochs of the design's wider variant (``seeds.WIDER``, timed too), the wider one trains: it goes first in the queue."""
    from optuna.trial import TrialState

    from nas_core.schema.budget import (
        ONE_TRAINING_SPLIT,
        ONE_TRAINING_WIDER_RESERVE,
        epochs_that_fit,
        one_training_companion_epochs,
        one_training_epochs,
        one_training_plan,
        one_training_wider_epochs,
    )
    from nas_core.search.seeds import COMPANION, COMPANION_MIN_SHARE, WIDER
    from nas_core.training.frozen import HEAD_EPOCHS
    from nas_core.training.stops import StopRequested

    config = run.config
    if not run.designs.pending or not config.finalize or config.finalize_only or not config.timeout:
        return None
    if run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    design, values = run.designs.pending[0]
    data = run.data
    # The one training trains on the training and validation splits (ONE_TRAINING_SPLIT): its epochs are that much longer
    # than the training split's that the slice timing gives (the usual plan's trials train on the training split alone).
    grow = (len(data.y_train) + len(data.y_val)) / max(1, len(data.y_train)) if ONE_TRAINING_SPLIT == "train+val" else 1.0
    try:
        slice_epoch = _time_design(run, values)
        if one_training_epochs(left_s=end - time.perf_counter(), seconds_per_epoch=slice_epoch, epochs=config.epochs) is None:
            return None  # the usual plan fits
        per_epoch = slice_epoch * grow
        first = None
        # Each timing costs three slice epochs of its design, so a design is timed only when it could be chosen: the wider
        # variant costs at least the first design's epoch, and the companion at least COMPANION_MIN_SHARE of it. (Timing all
        # three took 240 s of a 150 s budget on 6,000 Fashion-MNIST images, and no trial started.)
        left = end - time.perf_counter()
        wider = (_time_queued(run, WIDER.get(design), otherwise=f"{design} trains")
                 if one_training_wider_epochs(left_s=left, seconds_per_epoch=per_epoch) else None)
        passed_over: tuple[str, float, int] | None = None
        # the wide net would cost the small point its head (ONE_TRAINING_WIDER_RESERVE): if its bar fits, the companion is
        # timed and that many epochs of it are kept after the wide net, whose own bar must fit in the time before them
        small: tuple[tuple[str, dict[str, Any]], float] | None = None
        reserve: tuple[str, float, int] | None = None
        # timings (first, passed_over, the plan's note) are the training split's, as timed; the decisions use the
        # epochs the one training would run (grow)
        if (wider is not None and one_training_wider_epochs(left_s=end - time.perf_counter(), seconds_per_epoch=wider[1] * grow)
                and ONE_TRAINING_WIDER_RESERVE > 0 and _companion_on_body(run, values) is not None):
            small = _time_queued(run, COMPANION, otherwise="the wide net is chosen on its own epochs")
            if small is not None:
                reserve = (COMPANION, ONE_TRAINING_WIDER_RESERVE * small[1], ONE_TRAINING_WIDER_RESERVE)
        reserve_s = reserve[1] if reserve else 0.0
        if wider is not None and one_training_wider_epochs(left_s=end - time.perf_counter(), seconds_per_epoch=wider[1] * grow,
                                                           reserve_s=reserve_s):
            first = (design, slice_epoch)
            (design, values), slice_epoch = wider
            per_epoch = slice_epoch * grow
            run.designs.move(wider[0], 0)
        elif wider is not None:  # timed and too slow: the plan says so, with its timing
            passed_over = (wider[0][0], wider[1], epochs_that_fit(end - time.perf_counter() - reserve_s, wider[1] * grow))
            reserve_s = 0.0  # the first design trains, and its head needs no reserve
        # the companion goes second in the queue: right after the one training, if the time left fits it. When it shares
        # the chosen design's body, only its head trains, on that body frozen (training.frozen): no timing needed.
        companion: dict[str, Any] | None = None
        head = _companion_on_body(run, values)
        if head is not None:
            run.designs.move(head, 1)
            images = len(data.y_train) + len(data.y_val) + len(data.y_test)
            companion = {"design": COMPANION, "mode": "head", "body_of": design, "epochs": HEAD_EPOCHS,
                         "seconds": round(HEAD_PLAN_EPOCHS * slice_epoch * images / max(1, len(data.y_train)), 3)}
        else:
            if small is None:  # not timed for the reserve: timed only if the time the one training would leave could fit it
                left = end - time.perf_counter()
                could_fit = one_training_companion_epochs(left_s=left - epochs_that_fit(left, per_epoch) * per_epoch,
                                                          seconds_per_epoch=COMPANION_MIN_SHARE * (first or (design, slice_epoch))[1])
                small = _time_queued(run, COMPANION, otherwise="it is not trained after the one training") if could_fit else None
            if small is not None:
                run.designs.move(small[0], 1)
                companion = {"design": COMPANION, "seconds_per_epoch": round(small[1], 3), "epochs": None}
                if reserve_s:
                    companion["reserved_s"] = round(reserve_s, 1)
        # the timings above took time too: the chosen design's epochs are fitted to what is left now (less the reserve)
        epochs = max(1, epochs_that_fit(end - time.perf_counter() - reserve_s, per_epoch))
    except StopRequested:  # the loop hears the stop next
        return None
    except (NasCoreError, RuntimeError, ValueError, FloatingPointError, MemoryError) as exc:  # what would fail the trial itself
        log.warning("could not time the first known-good design (%s); planning as usual", _failure_reason(exc))
        return None
    run.one_training = {"design": design, "epochs": epochs, "seconds_per_epoch": round(per_epoch, 3), "train_split": ONE_TRAINING_SPLIT}
    if first is not None:
        run.one_training["instead_of"] = {"design": first[0], "seconds_per_epoch": round(first[1], 3)}
    if passed_over is not None:
        run.one_training["passed_over"] = {"design": passed_over[0], "seconds_per_epoch": round(passed_over[1], 3),
                                           "epochs_that_fit": passed_over[2]}
        if reserve is not None:
            run.one_training["passed_over"]["companion_reserve_s"] = round(reserve[1], 1)
    if companion is not None:
        run.one_training["companion"] = companion
    run.study.set_user_attr("one_training", run.one_training)
    one = one_training_plan(float(config.timeout), design=design, epochs=epochs, seconds_per_epoch=slice_epoch, search_epochs=config.epochs,
                            first=first, companion=(companion["design"], companion["seconds_per_epoch"]) if companion and "mode" not in companion else None,
                            companion_head=(companion["design"], companion["seconds"]) if companion and "mode" in companion else None,
                            passed_over=passed_over, reserve=reserve, train_images=(len(data.y_train) + len(data.y_val)) if grow != 1.0 else None, grow=grow)
    run.notes.append(one.note)
    # the CLI's bar and the Search page count the trials this plan runs (the companion's only if it fits later), not --trials
    _emit(run.emit, ev.PlanMade(run.name, note=one.note, trials=2 if companion is not None else 1))
    return one


# The time a head fitted on the one training's frozen body is planned to take, in epochs of the one training per image of
# every split (a forward pass over each split, then the head's epochs on the features, then the measurements). Fashion-
# MNIST, 4-conv net, 2 threads, seed 4: an epoch of 51,000 images ~77 s; the features of the 60,000 training and validation
# images 33 s, 20 head epochs 91 s, the measurements ~10 s: ~134 s, 1.3 epochs per 70,000/51,000 images; planned at 1.5.
HEAD_PLAN_EPOCHS = 1.5


def _companion_on_body(run: _Run, values: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The queued companion (its queue entry) when its body is that of the design ``values`` build, so its head can be
    fitted on that design's trained body; ``None`` otherwise (it trains from scratch, if at all)."""
    from nas_core.search.seeds import COMPANION, replay
    from nas_core.training.frozen import same_body

    found = run.designs.entry(COMPANION)
    if found is None:
        return None
    shape, classes, epochs = run.dataset_ref.input_shape, run.data.num_classes, run.config.epochs
    try:
        mine = run.space.build(replay(run.space, found[1]), input_shape=shape, num_classes=classes, epochs=epochs)[0]
        theirs = run.space.build(replay(run.space, values), input_shape=shape, num_classes=classes, epochs=epochs)[0]
    except (LookupError, NasCoreError):
        return None
    return found if same_body(mine, theirs) else None


def _time_queued(run: _Run, name: str | None, *, otherwise: str) -> tuple[tuple[str, dict[str, Any]], float] | None:
    """The study's queued known-good design ``name`` (its queue entry) and the seconds an epoch of it takes here; ``None``
    when it is not queued, or when it cannot be timed (logged, with ``otherwise``: what happens instead)."""
    found = run.designs.entry(name)
    if found is None:
        return None
    try:
        return found, _time_design(run, found[1])
    except (NasCoreError, RuntimeError, ValueError, FloatingPointError, MemoryError) as exc:
        log.warning("could not time %s (%s); %s", name, _failure_reason(exc), otherwise)
        return None


def _time_design(run: _Run, values: dict[str, Any]) -> float:
    """Seconds an epoch of a known-good design takes here (``training.loop.time_epoch`` on a slice of the data)."""
    from nas_core.model.assembly import assemble
    from nas_core.search.seeds import replay
    from nas_core.training.loop import set_seed, time_epoch

    arch, recipe = run.space.build(replay(run.space, values), input_shape=run.dataset_ref.input_shape, num_classes=run.data.num_classes,
                                   epochs=run.config.epochs)
    while not run.tracker.wait_ready(0.05) and not run.stop_event.is_set():
        pass  # MLflow's set-up (its writer's imports and store migrations) would share the CPU with the timed epochs: timed
        # beside it on Fashion-MNIST, one thread, an epoch looked 168 s where the full ones then took 116-125 s
    set_seed(run.config.seed)
    return float(time_epoch(assemble(arch), run.data, recipe, device=run.device, seed=run.config.seed, should_stop=run.stop_event.is_set))


def _open_run(config: SearchConfig, *, emit: Callable[[ev.Event], None] | None, stop_event: threading.Event) -> _Run | SearchResult:
    """Load the data, set torch up, open (or create) the study and start MLflow; a stop heard meanwhile ends it here.

    Everything a user can get wrong is checked before the storage is opened, so bad input never touches recorded studies.
    """
    from nas_core.tracking import Tracker

    workspace = Path(config.workspace)
    space = config.search_space()
    tracker = Tracker(
        tracking_uri=config.tracking_uri or workspace_tracking_uri(workspace), workspace=workspace, study_name=config.study_name,
        enabled=config.tracking,
    )
    tracker.launch()  # MLflow's imports in its writer overlap torch's and the set-up below; it writes nothing until start_async
    try:
        from nas_core.training.loop import resolve_device  # imports torch

        run = _set_up(config, emit=emit, stop_event=stop_event, workspace=workspace, space=space,
                      device=resolve_device(config.device), tracker=tracker)
    except BaseException:
        tracker.close()
        raise
    if not isinstance(run, _Run):  # stopped during set-up: the writer was never started for the study
        tracker.close()
    return run


def _set_up(config: SearchConfig, *, emit: Callable[[ev.Event], None] | None, stop_event: threading.Event, workspace: Path,
            space: Any, device: Any, tracker: Any) -> _Run | SearchResult:
    """The rest of :func:`_open_run`, with MLflow's writer launched; it starts the writer for the study once that is open."""
    import optuna
    from optuna.trial import TrialState

    from nas_core.data import load_dataset
    from nas_core.fidelities.base import FIDELITIES
    from nas_core.schema.config import DatasetRef
    from nas_core.training.loop import cpu_threads, warm_up_training
    from nas_core.training.screening import screening_enabled

    data = load_dataset(
        config.dataset,
        seed=config.seed,
        data_dir=config.data_dir,
        train_samples=config.train_samples,
        val_samples=config.val_samples,
        cache_dir=workspace / "cache" / "data",
    )
    n_threads = cpu_threads(tuple(data.input_shape), device)
    if n_threads:
        import torch

        torch.set_num_threads(n_threads)
    if not config.finalize_only:
        warm_up_training()  # a worker's first trial would otherwise spend seconds in torch's imports, deaf to a stop
    if stop_event.is_set():
        return _stopped_early(config, workspace)
    out_dir = study_dir(workspace, config.study_name)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file, but study {config.study_name!r} keeps its outputs in a folder of that name; "
                          "choose another --study name or move the file.")
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise as_fatal(exc, where=str(workspace)) or WorkspaceError(f"cannot create {exc.filename} ({exc.strerror}); check --workspace.") from None
    study = open_study(config)
    if stop_event.is_set():
        return _stopped_early(config, workspace)
    try:
        reclaimed = reclaim_dead_trials(study)
        optuna.storages.fail_stale_trials(study)
    except Exception as exc:  # noqa: BLE001 - only storage faults are expected here
        raise as_fatal(exc) or exc  # noqa: B904 - the fault stays the implicit __context__
    shape = cast(tuple[int, int, int], tuple(int(v) for v in data.input_shape))
    designs = KnownGoodQueue.start(study, space, shape, enabled=config.known_good and not config.finalize_only)
    dataset_ref = DatasetRef(
        name=data.name, input_shape=shape, num_classes=data.num_classes, classes=tuple(data.classes),
        fingerprint=data.fingerprint, mean=tuple(getattr(data, "mean", ())), std=tuple(getattr(data, "std", ())),
    )
    study.set_user_attr("dataset", dataset_ref.to_dict())
    tracker.start_async({**config.to_dict(), "space": space.name, "device": str(device)})
    _, mo_pruner = make_pruners(config.pruner, epochs=config.epochs, n_objectives=len(config.objectives))
    fidelity = FIDELITIES.get(config.fidelity)
    seen: dict[str, tuple[int, list[float]]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        h = trial_record(t).get("candidate_hash")
        if h and t.values is not None:
            seen.setdefault(h, (t.number, list(t.values)))
    return _Run(config=config, emit=emit, stop_event=stop_event, workspace=workspace, out_dir=out_dir, space=space, device=device,
                data=data, study=study, dataset_ref=dataset_ref, tracker=tracker, fidelity=fidelity,
                objectives=[OBJECTIVES[o] for o in config.objectives], mo_pruner=mo_pruner, designs=designs,
                notes=reclaim_note(reclaimed), owner={**owner_record(), "device": device_label(device)},  # the workers view shows it
                seen=seen, screening=fidelity.screens and screening_enabled(config.fidelity_options) and not config.finalize_only)


def _run_trials(run: _Run, loop_end: Callable[[], float]) -> str:
    """Ask, evaluate and tell trials until the budget, a stop, the grid's end or ``loop_end()``; returns why it ended.

    A fault of the machine (disk full, database locked or corrupt) ends the run with one message, after recording the
    trial it hit and closing the MLflow run as FAILED.
    """
    from optuna.trial import TrialState

    config, study, counts = run.config, run.study, run.counts
    n_run = 0
    beat = _Heartbeat(study, interval=heartbeat_settings()[0])
    writes = _TrialWrites.of(study)
    last_reclaim = time.monotonic()
    try:
        while True:
            if config.finalize_only:  # report the study's trials: the workers ran them
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
                    counts[t.state.name] += 1
                return "finalize"
            if run.stop_event.is_set():
                return "stopped"
            if config.trials is not None and n_run >= config.trials:
                return "budget"
            if time.perf_counter() >= loop_end():
                return "timeout"
            if run.share_spent:  # a known-good design no longer fits: a sampled one would take the final training's time
                return "timeout"
            if run.one_training is None and math.isfinite(run.quickest) and time.perf_counter() + run.quickest > loop_end():
                # Not even the quickest trial of this run fits the time left: what a trial would start here is cut or
                # pruned (digits, the README command: 12 trials screened and pruned in its last 3 s), and the final training
                # uses the time better. (The one training's companion is planned on its own timing.)
                return "timeout"
            if time.monotonic() - last_reclaim > RECLAIM_EVERY_S:  # a fellow worker on this machine may have died mid-trial
                last_reclaim = time.monotonic()
                run.notes.extend(reclaim_note(reclaim_dead_trials(study)))
            run.designs.before_ask(study)
            while not run.tracker.wait_ready(0.05) and not run.stop_event.is_set():
                pass  # MLflow's set-up runs on a thread so a stop is heard; trials start once it is done (same CPU)
            if run.stop_event.is_set():
                return "stopped"
            with writes.asking():
                trial = study.ask()
            n_run += 1
            if _run_trial(run, trial, writes=writes, beat=beat, loop_end=loop_end):
                return "grid exhausted"
    except Exception as exc:
        fatal = as_fatal(exc, where=str(run.workspace))
        if fatal is not None:
            run.tracker.finish({"n_complete": counts["COMPLETE"], "n_pruned": counts["PRUNED"], "n_failed": counts["FAIL"] + 1},
                               status="FAILED")
        if fatal is None or fatal is exc:
            raise
        raise fatal from None
    finally:
        beat.close()


def _run_trial(run: _Run, trial: Any, *, writes: _TrialWrites, beat: _Heartbeat, loop_end: Callable[[], float]) -> bool:
    """Sample, build, evaluate and record one asked trial; returns whether the grid sampler has run out of points.

    The trial's parameters and attributes go to storage in one transaction after sampling and one at the end
    (``writes``), its record (``schema.record``) once, as it ends. A candidate identical to an earlier trial reuses that
    trial's result (:func:`_reuse_result`). A trial that raises is recorded as FAIL with its reason, a stop or the time budget as PRUNED; a fault
    of the machine is re-raised after the trial is recorded.
    """
    import optuna
    from optuna.trial import TrialState

    from nas_core.schema.config import ModelConfig
    from nas_core.training.stops import StopRequested

    config, study, data, name, emit = run.config, run.study, run.data, run.name, run.emit
    t0 = time.perf_counter()
    state, why = "FAIL", ""
    values: list[float] | None = None
    metrics: dict[str, Any] = {}
    grid_done = False
    abort: NasCoreError | None = None
    record: dict[str, Any] = {}  # the trial's one record attribute, written once as it ends (schema.record)
    writes.hold(trial._trial_id)  # parameters and attributes below: one transaction after sampling, one at the end
    trial.set_user_attr(OWNER_KEY, run.owner)  # lets the next run on this machine reclaim it at once if we die
    beat.track(trial)
    run.tracker.open_trial(trial.number)  # MLflow's writer opens the trial's run meanwhile
    try:
        with writes.sampling(trial._trial_id):
            sampled = run.space.sample(trial)
            arch, recipe = run.space.build(sampled, input_shape=tuple(data.input_shape), num_classes=data.num_classes, epochs=config.epochs)
            # e.g. cached binds blocks to the module library: the trial records the bound network
            arch = run.fidelity.prepare(arch, workspace=run.workspace, data=data, options=dict(config.fidelity_options), seed=config.seed)
            recipe = replace(recipe, patience=config.patience)
            if _is_one_training(run, trial):
                # the budget fits this one training; as the final training, it runs its schedule to the end (annealed),
                # with no early stop: an early stop mid-schedule keeps weights from a high learning rate (measured on
                # Fashion-MNIST: stopped at epoch 30 of 40 by patience 5, test 0.9381 where 31 full epochs gave 0.9437)
                # It trains on the training and validation splits: no other design is compared, so the validation split
                # has no choice to make, and 18 % more images are worth more than a held-out score (measured on Fashion-
                # MNIST: +0.16 pt test over five splits at the same compute). Its validation figure is then not held out
                # (metrics "val_trained_on"); test stays unseen. A study from before this keeps its recorded split.
                assert run.one_training is not None  # _is_one_training checked it
                epochs = int(run.one_training["epochs"])
                recipe = replace(recipe, epochs=epochs, patience=epochs, train_split=str(run.one_training.get("train_split", "train")))
            elif _is_companion(run, trial):
                # its epochs fitted to the time the one training left (_companion_due); its schedule runs to the end too.
                # A head on the frozen body trains on fixed features: no augmentation, and the config says so.
                small = _companion(run) or {}
                epochs = int(small.get("epochs") or recipe.epochs)
                recipe = replace(recipe, epochs=epochs, patience=epochs)
                if small.get("mode") == "head":
                    recipe = replace(recipe, augmentation="none")
            candidate = ModelConfig(dataset=run.dataset_ref, architecture=arch, training=recipe)
            chash = candidate.candidate_hash()
            record["candidate_hash"] = chash
            trial.set_user_attr("summary", arch.summary())  # live: the dashboard shows what is running
        _emit(emit, ev.TrialStarted(name, number=trial.number, params=dict(sampled), summary=arch.summary()))
        if chash in run.seen:
            values, metrics, why = _reuse_result(run, trial, chash, record)
        else:
            values, metrics = _evaluate(run, trial, sampled, candidate, record, loop_end, writes=writes)
        trial.set_user_attr(RECORD_KEY, record_attr(record))
        _tell(study, trial, values)
        state = "COMPLETE"
        run.seen.setdefault(chash, (trial.number, values))
    except _GridExhausted:
        state, grid_done = "COMPLETE", True
    except optuna.TrialPruned as exc:
        state, why = "PRUNED", str(exc) or "pruned"
    except StopRequested as exc:
        state = "PRUNED"
        why = str(exc) if run.stop_event.is_set() else "time budget (--timeout) reached during training"
    except (NasCoreError, RuntimeError, ValueError, FloatingPointError, MemoryError) as exc:
        state, why = "FAIL", _failure_reason(exc)
        abort = as_fatal(exc, where=str(run.workspace))
    except Exception as exc:  # noqa: BLE001 - any candidate may break in its own way; the search goes on
        state, why = "FAIL", _failure_reason(exc)
        abort = as_fatal(exc, where=str(run.workspace))
        if abort is None:
            log.exception("trial %s failed", trial.number)
    finally:
        beat.track(None)
        companion = (run.one_training or {}).get("companion")  # the one training's (_companion_due reads "ended")
        if companion is not None and (_is_companion(run, trial) or (companion.get("epochs") and not _is_one_training(run, trial))):
            companion["ended"] = True  # it has run (or whatever ran after the one training took its turn)
    if abort is not None:  # the machine, not the candidate: record what we can and stop with one message
        try:
            trial.set_user_attr(RECORD_KEY, record_attr({**record, "reason": str(abort)}))
            _tell(study, trial, state=TrialState.FAIL)
        except Exception:  # noqa: BLE001 - the storage may be the fault; the next run reclaims the trial
            pass
        raise abort
    if state != "COMPLETE":
        record["reason"] = why
        run_id = run.tracker.log_trial(number=trial.number, params=dict(trial.params), history=[], metrics=screen_metrics(record), state=state, config=None,
                                       tags={"reason": why[:500]}, wait=not run.stop_event.is_set())
        if run_id:
            record["mlflow_run_id"] = run_id
        trial.set_user_attr(RECORD_KEY, record_attr(record))
        try:
            _tell(study, trial, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)
        except _GridExhausted:
            grid_done = True
    run.counts[state] += 1
    # a head fitted on a frozen body takes seconds: no measure of what a trial that trains takes
    if state == "COMPLETE" and not grid_done and "duplicate_of" not in record and not metrics.get(HEAD_ON_BODY):
        run.quickest = min(run.quickest, time.perf_counter() - t0)
    _emit(emit, ev.TrialFinished(name, number=trial.number, state=state, values=tuple(values) if values else None, reason=why,
                                 metrics=metrics, duration_s=time.perf_counter() - t0))
    return grid_done


def _reuse_result(run: _Run, trial: Any, chash: str, record: dict[str, Any]) -> tuple[list[float], dict[str, Any], str]:
    """The result of the earlier trial an identical candidate repeats (not retrained): its values, metrics and the
    reason the trial shows; ``record`` gets the earlier trial's record and ``duplicate_of``."""
    first, old_values = run.seen[chash]
    src = trial_record(next(t for t in run.study.get_trials(deepcopy=False) if t.number == first))
    record.update({key: src[key] for key in ("metrics", "config", "history", "latency", "confusion", "per_class_accuracy",
                                            "mlflow_run_id") if key in src}, duplicate_of=first)
    return list(old_values), dict(src.get("metrics", {})), f"identical to trial {first}; reused its result, not retrained"


def _evaluate(run: _Run, trial: Any, sampled: dict[str, Any], candidate: Any, record: dict[str, Any],
              loop_end: Callable[[], float], *, writes: _TrialWrites | None = None) -> tuple[list[float], dict[str, Any]]:
    """Evaluate a sampled candidate with the run's fidelity and log it to MLflow; returns its objective values and metrics
    (``record`` gets the rest of what the trial records). With screening, the candidate is screened first
    (:func:`_screen`) and a candidate screened out ends here, pruned.

    Pruning (Optuna's for one accuracy objective, multi-objective successive halving otherwise) is checked at each epoch.
    """
    import optuna

    from nas_core.deploy.config import trial_config
    from nas_core.fidelities.base import EvalContext
    from nas_core.training.recipes import resolve_precision
    from nas_core.training.stops import Diverged

    config, study, name, emit, arch = run.config, run.study, run.name, run.emit, candidate.architecture
    data, recipe = run.data, candidate.training

    from nas_core.schema.budget import ONE_TRAINING_GRACE

    planned = _is_one_training(run, trial)  # its epochs are fitted to the budget
    if run.screening and not planned and not _is_companion(run, trial):  # the one training and its companion are not compared
        _screen(run, trial, candidate, record, loop_end, writes=writes)
    started = time.perf_counter()  # after the screen: the fit guard's pace is the full training's
    grace = ONE_TRAINING_GRACE * float(config.timeout or 0) if planned else 0.0  # the search's only result: it may overrun a little
    # The one training and its companion are time-boxed, not stopped: their epochs were fitted to the time left from a
    # timing, and when the machine turns slower than timed (other work on the cores) the deadline ends them with the model
    # of their last whole epoch, instead of an hour's training yielding nothing.
    boxed = (planned or _is_companion(run, trial)) and run.fidelity.time_boxed

    def time_left() -> float:
        return loop_end() + grace - time.perf_counter()

    def time_up() -> bool:
        return time_left() <= 0

    companion = _companion(run) if _is_companion(run, trial) else None
    # the one training on train + validation, and a head on its body: their validation score is not a held-out one
    seen = recipe.trains_on_val or (companion is not None and companion.get("mode") == "head"
                                    and (run.one_training or {}).get("train_split") == "train+val")

    def on_epoch(epoch: int, total: int, row: dict[str, float]) -> None:
        _emit(emit, ev.EpochProgress(name, number=trial.number, epoch=epoch, epochs=total, metrics={**row, **({VAL_SEEN: 1.0} if seen else {})}))
        now = time.perf_counter()
        per_epoch, left = (now - started) / epoch, loop_end() - now
        if not boxed and epoch < total and per_epoch * (total - epoch) > FIT_MARGIN * left:
            # it would be cut at the deadline anyway: the time goes to candidates that can finish
            raise optuna.TrialPruned(f"would not finish within --timeout ({per_epoch:.1f} s an epoch, {total - epoch} epochs to go, "
                                     f"{max(0.0, left):.0f} s left)")
        if len(run.objectives) == 1 and run.objectives[0].name == "accuracy":
            trial.report(row["val_accuracy"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned by {config.pruner} at epoch {epoch} (val accuracy {row['val_accuracy']:.4f})")
        elif run.mo_pruner is not None:
            run.mo_pruner.check(study, trial, epoch, row, objectives=config.objectives, arch=arch)

    body_from = None
    if companion is not None and companion.get("mode") == "head":
        if run.one_training_body is None or run.one_training_config is None:
            raise NasCoreError("the one training did not complete, so there is no trained body to fit the small design's head on.")
        # the body's trial: the one training's, or the usual plan's first design's (_plan_head_companion)
        body_trial = (run.one_training or companion)["body_trial"]
        body_from = {"trial": body_trial, "design": companion["body_of"], "frozen": True,
                     "how": "the body of that trial's network, frozen; only the head trained, on its features computed once",
                     "config": run.one_training_config}
    ctx = EvalContext(
        frozen_body=run.one_training_body if body_from else None,
        arch=arch, recipe=recipe, data=data, device=run.device, seed=config.seed + trial.number,
        on_epoch=on_epoch, should_stop=run.stop_event.is_set if boxed else lambda: run.stop_event.is_set() or time_up(),
        time_up=time_up if boxed else None, time_left=time_left if boxed else None, workspace=run.workspace,
        options=dict(config.fidelity_options),
    )
    result = run.fidelity.evaluate(ctx)
    metrics = dict(result.metrics)
    if seen:
        metrics[VAL_SEEN] = 1.0
    if body_from:
        metrics[HEAD_ON_BODY] = 1.0
    cut: dict[str, Any] | None = None
    stopped_early: dict[str, Any] | None = None
    stopped = (result.extra or {}).get("stopped")
    if stopped:  # a Stop or a signal ended it: the model it held (measured then) is its result (fidelities.train.Holder)
        held_epoch = int(stopped["kept_epoch"])
        stopped_early = {"after_epoch": held_epoch, "of": recipe.epochs, "why": stopped.get("why", "stopped by the user"),
                         "retrain": "train --config runs the whole schedule"}
        run.notes.append(f"{'The one training' if planned else 'The small companion'} ({trial.user_attrs.get('known_good')}) was stopped "
                         f"({stopped_early['why']}); it keeps the model it held at epoch {held_epoch} of {recipe.epochs}, measured then: test "
                         f"{float(metrics.get('test_accuracy', 0)):.4f}. `train --config` on its config runs the whole schedule.")
    elif boxed and 0 < int(metrics.get("epochs_trained", recipe.epochs)) < recipe.epochs:  # no early stop: patience is its epochs
        from nas_core.training.loop import budget_cut

        done = int(metrics["epochs_trained"])
        cut = budget_cut(result.history, done=done, planned=recipe.epochs,
                         why="the time budget (--timeout) ended before the schedule did: this machine trained slower than it was timed")
        kept = (f"its schedule was compressed to end annealed at epoch {done}" if cut["annealed"]
                else f"it keeps the model of epoch {done}")
        run.notes.append(f"{'The one training' if planned else 'The small companion'} ({trial.user_attrs.get('known_good')}) was cut by the "
                         f"time budget after {done} of its {recipe.epochs} epochs (the machine ran slower than timed, e.g. other work on "
                         f"its cores); {kept}. `train --config` on its config runs the whole schedule.")
    # A proxy fidelity ranks by its own score in an objective's place (zero-cost: proxy_score for accuracy);
    # the metrics keep their true names, so a score is never recorded as an accuracy.
    ranked_by = dict((result.extra or {}).get("ranked_by") or {})
    values = [float(metrics[ranked_by.get(o.metric, o.metric)]) for o in run.objectives]
    if not all(math.isfinite(v) for v in values):
        raise Diverged(f"objective values are not finite: {values}")
    cfg = trial_config(candidate, metrics=metrics, latency=result.latency, study=name, trial=trial.number, seed=config.seed + trial.number,
                       fidelity=config.fidelity, extra=result.extra,
                       provenance={"dataset_arg": config.dataset, "data_dir": config.data_dir, "split_seed": config.seed,
                                   "train_samples": config.train_samples, "val_samples": config.val_samples,
                                   "space": run.space.name, "device": str(run.device), **({"cut_by_budget": cut} if cut else {}),
                                   **({"stopped_early": stopped_early} if stopped_early else {}),
                                   **({"body_from": body_from} if body_from else {}),
                                   "precision": resolve_precision(candidate.training.precision, run.device, tuple(candidate.dataset.input_shape))})
    record.update(metrics=metrics, history=result.history, latency=result.latency, confusion=result.confusion,
                  per_class_accuracy=result.per_class_accuracy, config=cfg.to_dict())
    if result.extra:
        record["fidelity_extra"] = json.loads(json.dumps(result.extra, default=str))
    if config.save_weights and result.state_dict is not None:
        _save_weights(run.out_dir / "weights" / f"trial_{trial.number}.safetensors", result.state_dict)
    if planned and ((run.one_training or {}).get("companion") or {}).get("mode") == "head" and result.state_dict is not None:
        from nas_core.training.frozen import body_state

        # the companion's head is fitted on this body next (_companion_due, then its trial)
        run.one_training_body, run.one_training_config = body_state(result.state_dict), cfg.to_dict()
        run.one_training["body_trial"] = trial.number  # type: ignore[index]  # planned: the one training is set
    head = run.head_companion
    if (head is not None and "body_trial" not in head and run.one_training is None and result.state_dict is not None
            and trial.user_attrs.get("known_good") == head["body_of"]):
        from nas_core.training.frozen import body_state

        # the usual plan's head companion (_plan_head_companion): fitted on this body next, first in the queue
        run.one_training_body, run.one_training_config = body_state(result.state_dict), cfg.to_dict()
        head["body_trial"] = trial.number
        entry = run.designs.entry(head["design"])
        if entry is not None:
            run.designs.move(entry, 0)
            run.notes.append(f"The small design ({head['design']}) has the body of trial {trial.number} ({head['body_of']}): its head is "
                             "fitted on that body, frozen, next (its features computed once), a <= 100K point of the front.")
    run_id = run.tracker.log_trial(number=trial.number, params=sampled, history=result.history, metrics={**metrics, **screen_metrics(record)},
                                   state="COMPLETE", config=cfg.to_dict(), tags={"arch": arch.summary()[:500]})
    if run_id:
        record["mlflow_run_id"] = run_id
    return values, metrics


def _screen(run: _Run, trial: Any, candidate: Any, record: dict[str, Any], loop_end: Callable[[], float], *,
            writes: _TrialWrites | None) -> None:
    """Screen the trial's candidate (``training.screening``): record its screen row where other trials and workers rank
    against it, and raise ``optuna.TrialPruned`` when it is not promoted to its full training. A known-good design is
    screened (the pool's references) and always promoted; a candidate identical to one screened out is not screened again."""
    import optuna

    from nas_core.training.screening import SCREEN_ATTR, SCREEN_SEED_OFFSET, decide, screen_candidate, screen_pool
    from nas_core.training.stops import StopRequested

    config, chash = run.config, record.get("candidate_hash")
    others = [r for r in screen_pool(run.study.get_trials(deepcopy=False)) if r["number"] != trial.number]
    known_good = trial.user_attrs.get("known_good")
    twin = next((r for r in others if chash and r.get("candidate_hash") == chash and not r.get("promoted", True)), None)
    if twin is not None and not known_good:
        record["screen"] = {**{k: v for k, v in twin.items() if k != "number"}, "duplicate_of": twin["number"]}
        raise optuna.TrialPruned(f"identical to trial {twin['number']}, which was screened out")
    # The fit guard of a full training, applied to the screen: a candidate whose one screen epoch already takes more than
    # its share of the time left (its full training is ~epochs more of them) could not finish once promoted, so the
    # screen ends there. (Digits, the README command: a sampled 1-epoch screen ran 45 s of a 54 s search share.)
    start, left = time.perf_counter(), loop_end() - time.perf_counter()
    limit = math.inf if known_good or not math.isfinite(left) else FIT_MARGIN * left / (1 + int(candidate.training.epochs))

    def too_slow() -> bool:
        return time.perf_counter() - start > limit

    try:
        row = screen_candidate(candidate.architecture, candidate.training, run.data, device=run.device,
                               seed=config.seed + trial.number + SCREEN_SEED_OFFSET,
                               should_stop=lambda: run.stop_event.is_set() or time.perf_counter() >= loop_end() or too_slow())
    except StopRequested:
        if run.stop_event.is_set() or time.perf_counter() >= loop_end() or not too_slow():
            raise
        raise optuna.TrialPruned(f"would not finish within --timeout: its screen epoch passed {limit:.1f} s, and its full training "
                                 f"is {candidate.training.epochs} epochs more ({max(0.0, left):.0f} s were left)") from None
    row["candidate_hash"] = chash
    cost = any(o.metric != "val_accuracy" for o in run.objectives)
    decision = decide([*others, {**row, "number": trial.number}], me=trial.number, cost_objective=cost)
    promoted = decision.promoted or bool(known_good)
    reason = f"known-good design ({known_good}): trains in full" if known_good else decision.reason
    late = _known_good_late(row, candidate, known_good, loop_end) if known_good and math.isfinite(run.quickest) else None
    if late is not None:  # recorded as not promoted, so the screen's counts (summary.md) and its reason tell what happened
        promoted, reason, run.share_spent = False, late, True
    row.update(promoted=promoted, position=decision.position, pool=decision.pool, keep=decision.keep, reason=reason)
    trial.set_user_attr(SCREEN_ATTR, row)
    if writes is not None:
        writes.flush(trial._trial_id)  # other workers rank against it from now, not only once this trial ends
    record["screen"] = dict(row)
    _emit(run.emit, ev.EpochProgress(run.name, number=trial.number, epoch=1, epochs=1,
                                     metrics={"val_accuracy": row["val_accuracy"], "phase": "screen"}))
    if not promoted:
        raise optuna.TrialPruned(reason)


def _known_good_late(row: dict[str, Any], candidate: Any, design: str, loop_end: Callable[[], float]) -> str | None:
    """Why a known-good design's full training cannot end before the search's share does, at its screen epoch's pace;
    None when it can. ``_screen`` then prunes it with this reason and ends the trials there (``run.share_spent``). Only
    asked once a trial has completed: the study then holds a result, and a training cut at the share's end gives
    nothing, while the final training would have used its time.

    The trials end with it: what a sampled candidate could do with the rest of the share is worth less than the final
    training's epochs. Fashion-MNIST seed 21, float32 on 2 cores: with the ResNet and the wide net pruned here at 972 and
    1,044 s, sampled candidates took the ~1,100 s of the share left (the first completed at val 0.7649, the next two were
    stopped in their screens, the fourth trained 20 epochs to val 0.8666), and the refit kept its 40 %: 28 epochs. The
    4-conv net refit on train + validation gave 0.9438 and 0.9449 at 34 epochs (seeds 15, 20) and 0.9467-0.9468 at 53-57
    (seeds 16, 17).

    The screen epoch runs the whole training split, as a full epoch does (Fashion-MNIST, bf16, the 4-conv net: 25.3 s
    against 26.2 s an epoch in full), so it is the pace, with no margin. Without this check such a design trained until
    the in-training fit guard (which allows ``FIT_MARGIN``) or the share's end stopped it: Fashion-MNIST seed 20, float32
    on 2 cores (~39 s a 4-conv epoch), the small ResNet (screen epoch 62.8 s, 20 epochs) started with 1,242 s of the
    share left and ran 14 epochs, ~880 s, before the guard cut it. Candidates that are not known-good designs meet the
    screen's own fit guard (``_screen``).
    """
    epochs, pace = int(candidate.training.epochs), float(row.get("seconds") or 0.0)
    need, left = pace * epochs, loop_end() - time.perf_counter()
    if need <= left:
        return None
    return (f"would not finish within the search's share of --timeout: {design}'s screen epoch took {pace:.1f} s, so its "
            f"{epochs} epochs need ~{need:.0f} s, and {max(0.0, left):.0f} s were left (the final training gets the time)")


def screen_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The screen's numbers as MLflow metrics (none for a trial that was not screened)."""
    row = record.get("screen") or {}
    return {f"screen_{k}": float(row[k]) for k in ("val_accuracy", "flops", "seconds", "position") if isinstance(row.get(k), (int, float))}


def _finish_run(run: _Run, *, reason: str, start: float, plan: Any, finalizer: Any, final_deadline: float) -> SearchResult:
    """The final phases (the finalists' fine-tune, the latency re-measurement, the final training), then the outputs."""
    from nas_core.results.tables import write_study_outputs

    config, study, counts, stop_event = run.config, run.study, run.counts, run.stop_event
    skipped = None
    has_final_phase = finalizer is not None or bool(plan.final_s)
    final_turn, turn_note = (False, None) if stop_event.is_set() or not has_final_phase else _final_turn(study, config, run.owner)
    if turn_note:
        run.notes.append(turn_note)
    if finalizer is not None and final_turn:
        finalizer(study=study, config=config, data=run.data, device=run.device, workspace=run.workspace, emit=run.emit, stop_event=stop_event,
                  deadline=final_deadline)
        skipped = study.user_attrs.get("finetune_skipped")
    # a Stop is not kept waiting for it; of several workers, the one taking the final turn re-measures for all
    if counts["COMPLETE"] and not stop_event.is_set() and (final_turn or not has_final_phase):
        from nas_core.results.tables import remeasure_latencies

        run.tracker.wait_ready()  # a new MLflow store's set-up runs on a thread; the batch below must have the CPU to itself
        remeasure_latencies(study, should_stop=stop_event.is_set)  # the picks below use quiet figures, not ones taken between trainings
    if plan.final_s and final_turn and not stop_event.is_set():
        from nas_core.search.final_training import train_final

        refit = train_final(study=study, config=config, data=run.data, device=run.device, workspace=run.workspace, emit=run.emit,
                            stop_event=stop_event, deadline=start + float(config.timeout or 0))
        if refit and refit.get("kept") and refit.get("cut_by_budget"):
            cut = refit["cut_by_budget"]
            run.notes.append(f"The final training (trial {refit['trial']} refit on train + validation) was cut by the time budget after "
                             f"{cut['after_epoch']} of its {cut['of']} epochs (the machine ran slower than the trial measured); "
                             f"{'its schedule was compressed to end annealed' if cut.get('annealed') else 'it keeps its last whole epoch'}. "
                             "`train --config` on best_config.json runs the whole schedule.")
    wall = time.perf_counter() - start
    best = write_study_outputs(study, workspace=run.workspace)
    run.tracker.finish({"n_complete": counts["COMPLETE"], "n_pruned": counts["PRUNED"], "n_failed": counts["FAIL"], "wall_s": wall},
                       status="KILLED" if reason == "stopped" else "FINISHED", wait=reason != "stopped")
    if best is None:
        reason = reason if counts["COMPLETE"] else "no trials completed"
    _emit(run.emit, ev.StudyFinished(run.name, n_complete=counts["COMPLETE"], n_pruned=counts["PRUNED"], n_failed=counts["FAIL"],
                                     best_config=str(best) if best else None, reason=reason, wall_s=wall))
    return SearchResult(
        study=run.name, workspace=str(run.workspace), storage=config.storage_url(), n_complete=counts["COMPLETE"],
        n_pruned=counts["PRUNED"], n_failed=counts["FAIL"], best_config=str(best) if best else None, wall_s=wall, reason=reason,
        warnings=tuple(w for w in (*run.notes, run.tracker.warning, skipped) if w),
    )


# A timed trial is pruned after an epoch once its remaining epochs at its pace would take this many times the time left.
FIT_MARGIN = 1.2
RECLAIM_EVERY_S = 10.0  # how often a running search looks for trials of dead processes on its machine


def _final_turn(study: Any, config: SearchConfig, owner: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether this process runs the final phase now: once per study state, by the last worker to finish.

    The claim (``claims.claim``) makes "finalize at n complete trials" happen once however many workers end
    together; a worker that sees trials still RUNNING elsewhere leaves the phase to the last one.
    """
    from optuna.trial import TrialState

    from nas_core.search.claims import claim

    if not config.finalize:
        return False, None
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    if not n_complete:
        return False, None
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        return False, (f"other workers are still running trial {', '.join(map(str, running[:5]))}; the last worker to finish "
                       f"runs the final phase (or run `python -m nas_core finalize --study {study.study_name}` after them)")
    what = f"finalize@{n_complete}" + (f"@forced@{time.time()}" if config.finalize_force else "")
    if not claim(config.storage_url(), study.study_name, what, owner=owner):
        return False, f"the final phase for these {n_complete} complete trials was run by another worker"
    return True, None


def _stopped_early(config: SearchConfig, workspace: Path) -> SearchResult:
    return SearchResult(study=config.study_name, workspace=str(workspace), storage=config.storage_url(), n_complete=0, n_pruned=0,
                        n_failed=0, best_config=None, wall_s=0.0, reason="stopped")


def _failure_reason(exc: BaseException) -> str:
    """One line for a failed trial's reason; out of memory says what it means for the search."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - freeing memory is best effort
            pass
        return f"out of memory on this candidate ({type(exc).__name__}{': ' + text if text else ''}); the search goes on with others"
    return f"{type(exc).__name__}: {text}"


def phase_deadlines(start: float, timeout: float | None, *, two_phase: bool, options: dict[str, Any]) -> tuple[float, float]:
    """(end of the trial loop, end of the fine-tune phase) as ``time.perf_counter()`` values; ``math.inf`` when unbounded.

    ``--timeout`` is the wall budget of the whole search. With a fidelity that fine-tunes finalists after
    its trials, the trials get ``1 - finetune_share`` of it (option, default 0.2) and the fine-tune phase
    the rest, so a timed search ends on time with trained finalists. An explicit ``finetune_seconds``
    keeps the old split: the trials get all of ``--timeout`` and the fine-tune phase its own seconds after.
    """
    if not timeout:
        return math.inf, math.inf
    end = start + float(timeout)
    if not two_phase or "finetune_seconds" in options:
        return end, math.inf
    share = float(options.get("finetune_share", FINETUNE_SHARE))
    return start + float(timeout) * (1 - share), end


def _save_weights(path: Path, state_dict: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp))
    tmp.replace(path)
