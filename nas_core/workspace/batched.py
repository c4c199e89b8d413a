"""Fewer storage round trips for the trial a search process is running (issue 12's overhead budget).

Optuna writes every ``suggest`` and every ``set_user_attr`` as its own database transaction, and its TPE sampler
re-reads the study for each parameter it samples. The default space has about 21 parameters, so a trial cost
some 30 writes and 20 reads before it trained at all: most of the engine's 150 ms per trial on SQLite.

:class:`BatchedTrialStorage` is Optuna's own trial cache (``_CachedStorage``) with a write-behind for the trials
this process :meth:`holds <BatchedTrialStorage.hold>`:

- ``set_trial_param`` and ``set_trial_user_attr`` of a held trial are kept in memory (the parameter's
  distribution is checked against the study's at once, as Optuna does) and written in **one** transaction:
  when :meth:`~BatchedTrialStorage.sampling` ends, or together with the trial's final state in ``tell``.
  So are the system attributes a sampler sets while it samples (TPE's constant liar shares its relative
  parameters that way), and each kind of attribute is one upsert statement, not a read and a write per key.
- Any other write to the trial (an intermediate value, another system attribute, a non-final state) and any read
  that can return it (``get_trial``, or ``get_all_trials`` with RUNNING among the states) writes the
  pending values first, so nothing reads a trial without its parameters.
- Inside :meth:`~BatchedTrialStorage.sampling`, the sampling thread's reads of the study (a sampler reads it
  once per parameter) are answered from the window's first read, with the held trial as it was at ``ask``
  (the ``Trial`` object keeps its own parameters): a trial another worker finishes during those
  milliseconds is seen from the next trial on.

What other processes see is unchanged in kind: the trial exists (RUNNING, with its heartbeat) from ``ask``,
its parameters and owner record appear a few milliseconds later, after sampling, and its record and final
state appear together. A process that dies holding a trial leaves it RUNNING without parameters, which
heartbeats and the owner record reclaim as before. gRPC proxy storage is used as it is (no batching).

The trial's creation, its final state and the cache's check for new trials are Core statements on Optuna's tables,
compiled once (the ORM's objects, flushes and reads were ~5 ms of a trial's ~19 ms outside TPE, py-spy); each does what Optuna's
method does, and falls back to it where this one cannot (another database, a template trial, a deadlock's retry).

It relies on Optuna's RDB internals (the session helper, the ORM models and ``*_without_commit`` methods);
the ``optuna`` pin in requirements.txt is narrow for this reason, and tests/test_batched_storage.py checks the
stored trials against plain Optuna's on every run.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import sqlite3
import threading
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
from optuna import distributions
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BatchedTrialStorage", "batched"]


@dataclass
class _Pending:
    params: dict[str, tuple[float, distributions.BaseDistribution]] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)  # only those a sampler sets while sampling

    def __bool__(self) -> bool:
        return bool(self.params or self.user_attrs or self.system_attrs)

    def applied_to(self, trial: FrozenTrial) -> FrozenTrial:
        """A copy of ``trial`` with these values set, sharing no mutable dict with it (``Trial`` changes its copy in place)."""
        out = copy.copy(trial)
        out.params = {**trial.params, **{n: d.to_external_repr(v) for n, (v, d) in self.params.items()}}
        out.distributions = {**trial.distributions, **{n: d for n, (_, d) in self.params.items()}}
        out.user_attrs = {**copy.deepcopy(trial.user_attrs), **copy.deepcopy(self.user_attrs)}
        out.system_attrs = {**copy.deepcopy(trial.system_attrs), **copy.deepcopy(self.system_attrs)}
        out.intermediate_values = dict(trial.intermediate_values)
        return out


class BatchedTrialStorage(_CachedStorage):
    """Optuna's cached RDB storage, writing a held trial's parameters and user attributes in one transaction."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._held: dict[int, _Pending] = {}
        self._held_lock = threading.RLock()
        self._reads: dict[int, list[FrozenTrial]] | None = None  # the window's one read of each study
        self._window_thread: int | None = None  # the thread whose reads the window answers, while it is open

    # -- the engine's side --------------------------------------------------------------------------------

    def hold(self, trial_id: int) -> None:
        """Keep this trial's parameter and user-attribute writes until :meth:`flush` or its final state."""
        with self._held_lock:
            if trial_id in self._held:
                return
            fresh = self._backend.get_trial(trial_id)  # e.g. an enqueued trial this process has just set RUNNING
            with self._lock:
                study_id, number = self._trial_id_to_study_id_and_number[trial_id]
                self._studies[study_id].trials[number] = fresh
            self._held[trial_id] = _Pending()

    @contextlib.contextmanager
    def asking(self) -> Iterator[None]:
        """Around ``study.ask()``: its read of the study is the one the next :meth:`sampling` uses, and the trial it
        creates is held from the start (so ``Trial`` reads it from this process's cache, not the database)."""
        self._reads, self._window_thread = {}, threading.get_ident()
        try:
            yield
        finally:
            self._window_thread = None

    @contextlib.contextmanager
    def sampling(self, trial_id: int) -> Iterator[None]:
        """While the body samples the held trial's parameters: the study is read once (or not at all after
        :meth:`asking`); at the end, one write."""
        self._reads = {} if self._reads is None else self._reads
        self._window_thread = threading.get_ident()
        try:
            yield
        finally:
            self._reads, self._window_thread = None, None
            self.flush(trial_id)

    def _in_window(self) -> bool:
        return self._window_thread is not None and self._window_thread == threading.get_ident()

    def flush(self, trial_id: int) -> None:
        """Write what is pending for the trial now (one transaction); it stays held."""
        with self._held_lock:
            pending = self._held.get(trial_id)
            if not pending:
                return
            self._write(trial_id, pending)
            self._held[trial_id] = _Pending()

    # -- writes ------------------------------------------------------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None or self._backend.engine.name not in ("sqlite", "postgresql"):
            trial_id = super().create_new_trial(study_id, template_trial)
        else:  # Optuna's cache step, with the backend's ORM steps as Core statements
            frozen = self._create_running_trial(study_id)
            trial_id = frozen._trial_id
            with self._lock:
                self._studies.setdefault(study_id, _StudyInfo())
                self._add_trials_to_cache(study_id, [frozen])
        if self._in_window():
            with self._held_lock:  # the cached copy is the trial as just created
                self._held.setdefault(trial_id, _Pending())
        return trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: distributions.BaseDistribution) -> None:
        with self._held_lock:
            pending = self._held.get(trial_id)
            if pending is None:
                super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
                return
            with self._lock:
                study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
                known = self._studies[study_id].param_distribution.get(param_name)
            if known is not None:  # what Optuna checks at each write, checked now rather than at the flush
                distributions.check_distribution_compatibility(known, distribution)
            if param_name in pending.params:  # Optuna's unique (trial, name) constraint, raised where it is broken
                raise ValueError(f"parameter {param_name!r} of trial {trial_id} is already set")
            pending.params[param_name] = (param_value_internal, distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._held_lock:
            pending = self._held.get(trial_id)
            if pending is None:
                super().set_trial_user_attr(trial_id, key, value)
            else:
                pending.user_attrs[key] = copy.deepcopy(value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if self._in_window():  # a sampler's note while it samples (TPE's constant liar): it goes with the parameters
            with self._held_lock:
                pending = self._held.get(trial_id)
                if pending is not None:
                    pending.system_attrs[key] = copy.deepcopy(value)
                    return
        self.flush(trial_id)
        super().set_trial_system_attr(trial_id, key, value)
        self._update_own(trial_id, lambda t: t.system_attrs.update({key: value}))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self.flush(trial_id)
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._update_own(trial_id, lambda t: t.intermediate_values.update({step: intermediate_value}))

    def _update_own(self, trial_id: int, change: Any) -> None:
        """Keep the cached copy of a held trial what the database holds (it answers :meth:`get_trial`)."""
        with self._held_lock:
            if trial_id in self._held:
                with self._lock:
                    study_id, number = self._trial_id_to_study_id_and_number[trial_id]
                    change(self._studies[study_id].trials[number])

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        with self._held_lock:
            pending = self._held.get(trial_id)
            if pending is None or not state.is_finished():
                self.flush(trial_id)
                return super().set_trial_state_values(trial_id, state, values)
            self._write(trial_id, pending, state=state, values=values)  # the record and the final state: one transaction
            self._held.pop(trial_id, None)
            return True

    def _create_running_trial(self, study_id: int) -> FrozenTrial:
        """What ``RDBStorage._create_new_trial`` does for a trial without a template, in Core statements compiled once
        (the ORM's object, flush and read-back were a tenth of the engine's time per trial): lock the study's row (so
        that numbers are given one at a time), insert the trial, number it by the study's trials before it. A database
        error (a deadlock between workers) falls back to Optuna's method, which retries."""
        trials = models.TrialModel.__table__
        now = datetime.now()
        try:
            with _create_scoped_session(self._backend.scoped_session) as session:
                if session.execute(_study_lock_statement(), {"id": study_id}).one_or_none() is None:
                    raise KeyError(models.NOT_FOUND_MSG)
                inserted: Any = session.execute(trials.insert().values(study_id=study_id, number=None,
                                                                       state=TrialState.RUNNING, datetime_start=now))
                trial_id = inserted.inserted_primary_key[0]
                number = session.execute(_count_before_statement(), {"study": study_id, "id": trial_id}).scalar_one()
                session.execute(trials.update().where(trials.c.trial_id == trial_id).values(number=number))
        except StorageInternalError:
            return self._backend._create_new_trial(study_id)
        return FrozenTrial(number=number, state=TrialState.RUNNING, value=None, values=None, datetime_start=now,
                           datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                           intermediate_values={}, trial_id=trial_id)

    # -- reads ---------------------------------------------------------------------------------------------

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._held_lock:
            if trial_id not in self._held:
                return super().get_trial(trial_id)
            pending = self._held[trial_id]
            with self._lock:  # a held trial is written only through this storage: its cached copy is current
                study_id, number = self._trial_id_to_study_id_and_number[trial_id]
                own = self._studies[study_id].trials[number]
            return pending.applied_to(own)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        reads = self._reads
        if reads is not None and self._in_window():  # asking and sampling read the study once
            if study_id not in reads:
                reads[study_id] = super().get_all_trials(study_id, deepcopy=False)
            trials = [t for t in reads[study_id] if states is None or t.state in states]
            return copy.deepcopy(trials) if deepcopy else trials
        if states is None or TrialState.RUNNING in states or TrialState.WAITING in states:
            with self._held_lock:  # a held trial may be among them: write what it has pending first
                for trial_id in [t for t, p in self._held.items() if p]:
                    self.flush(trial_id)
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        """Optuna's sync of the cache (every trial above ``last_finished_trial_id`` or unfinished, with five queries),
        after one cheap query says whether there is anything to sync: when the cache holds no unfinished trial, only
        trials above ``last_finished_trial_id`` can be new, and in a search alone on its study there are none at each ask
        (its own finished trials are settled by :meth:`_settle`)."""
        with self._lock:  # (a plain lock: released before Optuna's method takes it)
            info = self._studies.get(study_id)
            last = info.last_finished_trial_id if info is not None and not info.unfinished_trial_ids else -1
        if last > -1:
            with _create_scoped_session(self._backend.scoped_session) as session:
                found = session.execute(_newer_trial_statement(), {"study": study_id, "last": last}).one_or_none()
            if found is None:
                raise KeyError(models.NOT_FOUND_MSG)  # the study is gone: what Optuna's read raises
            if not found[1]:
                return
        super()._read_trials_from_remote_storage(study_id)

    # -- the one transaction ---------------------------------------------------------------------------------

    def _write(self, trial_id: int, pending: _Pending, *, state: TrialState | None = None,
               values: Sequence[float] | None = None) -> None:
        rdb = self._backend
        finished_at: datetime | None = None
        with self._lock:
            study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
            known = dict(self._studies[study_id].param_distribution)
        with _create_scoped_session(rdb.scoped_session) as session:
            # Core statements, no ORM object: the final state is one conditional UPDATE (atomic on any database, as the
            # ORM's SELECT ... FOR UPDATE then UPDATE is), and the check before a flush one SELECT of the state.
            if state is not None:
                finished_at = datetime.now()
                updated: Any = session.execute(_finish_statement(), {"id": trial_id, "state": state, "complete": finished_at})
                if updated.rowcount != 1:  # not RUNNING any more (or gone): Optuna's own error for it
                    _check_updatable(rdb, session, trial_id)
                    raise RuntimeError(f"trial {trial_id} is not running")  # e.g. WAITING, which Optuna's check lets through
            else:
                _check_updatable(rdb, session, trial_id)
            unknown = [n for n in pending.params if n not in known]
            if unknown:  # the study's first use of a name in this process: compare with what is stored, as Optuna does
                rows = (session.query(models.TrialParamModel.param_name, models.TrialParamModel.distribution_json)
                        .join(models.TrialModel).filter(models.TrialModel.study_id == study_id)
                        .filter(models.TrialParamModel.param_name.in_(unknown)).all())
                for name, dist_json in rows:
                    known.setdefault(name, distributions.json_to_distribution(dist_json))
                for name in unknown:
                    if name in known:
                        distributions.check_distribution_compatibility(known[name], pending.params[name][1])
            if pending.params:  # one executemany of a statement compiled once, not an ORM object per parameter
                session.execute(_insert_statement(models.TrialParamModel), [
                    {"trial_id": trial_id, "param_name": name, "param_value": value,
                     "distribution_json": distributions.distribution_to_json(dist)}
                    for name, (value, dist) in pending.params.items()
                ])
            _upsert_attrs(rdb, session, models.TrialUserAttributeModel, trial_id, pending.user_attrs)
            _upsert_attrs(rdb, session, models.TrialSystemAttributeModel, trial_id, pending.system_attrs)
            if state is not None:  # values are written once, with the finished state (the trial is RUNNING, checked above)
                if values:
                    session.execute(_insert_statement(models.TrialValueModel), [
                        {"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind}
                        for objective, v in enumerate(values)
                        for stored, kind in [models.TrialValueModel.value_to_stored_repr(float(v))]
                    ])
        with self._lock:
            dists = self._studies[study_id].param_distribution
            for name, (_, dist) in pending.params.items():
                dists.setdefault(name, dist)
            number = self._trial_id_to_study_id_and_number[trial_id][1]
            own = self._studies[study_id].trials.get(number)
            if own is not None:  # the cached copy now has what was written
                own = pending.applied_to(own)
                if state is not None:  # finished: tell's read-back is answered from the cache
                    own.state, own.datetime_complete = state, finished_at
                    own.values = None if values is None else [float(v) for v in values]
                self._studies[study_id].trials[number] = own
                if state is not None:
                    self._settle(study_id, trial_id, number)

    def _settle(self, study_id: int, trial_id: int, number: int) -> None:
        """The trial this process has just finished need not be fetched by the next read of the study (a query per
        relationship, ~4 ms): its cached copy is what was written, and a finished trial never changes. Optuna's cache
        re-reads every trial whose id is above ``last_finished_trial_id`` or in ``unfinished_trial_ids``; moving the former
        to this trial is safe when every earlier trial of the study (numbers 0 to ``number - 1``, given in creation order)
        is in the cache and, unless finished, among the ids it re-reads. Otherwise it stays as it is. Called with the lock."""
        info = self._studies[study_id]
        if trial_id <= info.last_finished_trial_id:
            return
        # Trials up to last_finished_trial_id are covered already (the cache has read everything up to it): look back
        # from this one to there. Numbers and ids grow together, so that is a few trials, not the study.
        for n in range(number - 1, -1, -1):
            t = info.trials.get(n)
            if t is None or (not t.state.is_finished() and t._trial_id not in info.unfinished_trial_ids):
                return
            if t._trial_id <= info.last_finished_trial_id:
                break
        info.unfinished_trial_ids.discard(trial_id)
        info.last_finished_trial_id = trial_id


def _upsert_attrs(rdb: RDBStorage, session: Any, model_cls: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Set a trial's attributes in one statement where the database has an upsert (SQLite >= 3.24, PostgreSQL), as
    Optuna's per-key ``_set_trial_attr_without_commit`` does one key at a time (with a read of the trial before each);
    on other databases, through that method. The caller has checked that the trial is updatable."""
    if not attrs:
        return
    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    name = rdb.engine.name
    if name == "postgresql" or (name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0)):
        session.execute(_upsert_statement(name, model_cls), rows)  # one statement, compiled once, many rows
        return
    for key, value in attrs.items():
        rdb._set_trial_attr_without_commit(session, model_cls, trial_id, key, value)


def _check_updatable(rdb: RDBStorage, session: Any, trial_id: int) -> None:
    """Raise what Optuna raises for a write to a trial that is missing (``KeyError``) or finished."""
    table = models.TrialModel.__table__
    found = session.execute(sqlalchemy.select(table.c.state).where(table.c.trial_id == trial_id)).one_or_none()
    if found is None:
        raise KeyError(models.NOT_FOUND_MSG)
    rdb.check_trial_is_updatable(trial_id, found[0])  # the column's Enum type gives a TrialState


@functools.cache
def _study_lock_statement() -> Any:
    """``SELECT study_id FROM studies WHERE study_id = :id FOR UPDATE`` (the lock is PostgreSQL's; SQLite has one writer)."""
    table = models.StudyModel.__table__
    return sqlalchemy.select(table.c.study_id).where(table.c.study_id == sqlalchemy.bindparam("id")).with_for_update()


@functools.cache
def _count_before_statement() -> Any:
    """The number of a new trial: how many of the study's trials have a smaller id (Optuna's ``count_past_trials``)."""
    table = models.TrialModel.__table__
    return (sqlalchemy.select(sqlalchemy.func.count(table.c.trial_id))
            .where(table.c.study_id == sqlalchemy.bindparam("study"), table.c.trial_id < sqlalchemy.bindparam("id")))


@functools.cache
def _newer_trial_statement() -> Any:
    """The study's row (none if it is gone) with whether it has a trial above ``:last``."""
    studies, trials = models.StudyModel.__table__, models.TrialModel.__table__
    newer = (sqlalchemy.exists().where(trials.c.study_id == sqlalchemy.bindparam("study"), trials.c.trial_id > sqlalchemy.bindparam("last")))
    return sqlalchemy.select(studies.c.study_id, newer).where(studies.c.study_id == sqlalchemy.bindparam("study"))


@functools.cache
def _finish_statement() -> Any:
    """``UPDATE trials SET state, datetime_complete WHERE trial_id AND state = RUNNING``, built once."""
    table = models.TrialModel.__table__
    return (table.update()
            .where(table.c.trial_id == sqlalchemy.bindparam("id"), table.c.state == TrialState.RUNNING)
            .values(state=sqlalchemy.bindparam("state"), datetime_complete=sqlalchemy.bindparam("complete")))


@functools.cache
def _insert_statement(model_cls: Any) -> Any:
    """A plain ``INSERT`` into a model's table, built once (SQLAlchemy reuses its compiled form for each list of rows)."""
    return model_cls.__table__.insert()


@functools.cache
def _upsert_statement(dialect_name: str, model_cls: Any) -> Any:
    """``INSERT ... ON CONFLICT (trial_id, key) DO UPDATE SET value_json`` for an attribute table, built once: executed with
    a list of rows, SQLAlchemy reuses its compiled form (a statement with the rows inlined is compiled anew every time)."""
    dialect = sqlalchemy.dialects.postgresql if dialect_name == "postgresql" else sqlalchemy.dialects.sqlite
    stmt = dialect.insert(model_cls)
    return stmt.on_conflict_do_update(index_elements=[model_cls.trial_id, model_cls.key], set_={"value_json": stmt.excluded.value_json})


def batched(storage: Any) -> Any:
    """The storage a search process runs trials on: RDB storage gets the write-behind; anything else is returned as it is."""
    return BatchedTrialStorage(storage) if isinstance(storage, RDBStorage) else storage
