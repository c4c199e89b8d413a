"""One-time claims recorded in the study's own database: "finalize study S at n complete trials" happens once.

Optuna's study attributes have no compare-and-swap, so two workers ending together could both fine-tune the
same finalists and overwrite each other's results. A row in a small table beside Optuna's (primary key:
study + what) is inserted by exactly one of them, on SQLite and PostgreSQL alike; the others see the
conflict and leave the work to the winner.
"""

from __future__ import annotations

import json
import time
from typing import Any

from nas_core.workspace.storage import is_grpc, open_storage

__all__ = ["claim", "claims", "CLAIM_PREFIX"]

_TABLE = "moca_claims"
CLAIM_PREFIX = "moca-claim:"  # behind a gRPC proxy there is no SQL: a claim is a marker study, unique by name


def _table(meta: Any) -> Any:
    from sqlalchemy import Column, Float, String, Table, Text

    return Table(_TABLE, meta, Column("study", String(512), primary_key=True), Column("what", String(128), primary_key=True),
                 Column("owner", Text), Column("at", Float))


def _engine(url: str) -> Any:
    from nas_core.workspace.storage import storage_engine

    return storage_engine(url)


def claim(url: str, study: str, what: str, *, owner: dict[str, Any] | None = None) -> bool:
    """True for the one caller that records (study, what) first; False for every later one."""
    if is_grpc(url):
        return _grpc_claim(url, study, what, owner=owner)
    from sqlalchemy import MetaData, insert
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    engine = _engine(url)
    meta = MetaData()
    table = _table(meta)
    try:
        for attempt in range(5):
            try:
                meta.create_all(engine, checkfirst=True)
                break
            except (OperationalError, ProgrammingError, IntegrityError) as exc:  # two creators raced: the table exists now
                if attempt == 4 or "exist" not in str(exc).lower() and "duplicate" not in str(exc).lower():
                    raise
                time.sleep(0.1 * (attempt + 1))
        try:
            with engine.begin() as conn:
                conn.execute(insert(table).values(study=study, what=what, owner=json.dumps(owner or {}), at=time.time()))
        except IntegrityError:
            return False
        return True
    finally:
        engine.dispose()


def claims(url: str, study: str) -> list[dict[str, Any]]:
    """The claims recorded for a study (what, owner, time), oldest first; empty when there are none."""
    if is_grpc(url):
        return _grpc_claims(url, study)
    from sqlalchemy import MetaData, inspect, select

    engine = _engine(url)
    try:
        if not inspect(engine).has_table(_TABLE):
            return []
        table = _table(MetaData())
        with engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.study == study).order_by(table.c.at)).fetchall()
        return [{"what": r.what, "owner": json.loads(r.owner or "{}"), "at": r.at} for r in rows]
    finally:
        engine.dispose()


def _grpc_claim(url: str, study: str, what: str, *, owner: dict[str, Any] | None) -> bool:
    """Study names are unique in Optuna's storage, so creating the marker study is the atomic insert."""
    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    storage = open_storage(url)
    try:
        sid = storage.create_new_study([StudyDirection.MINIMIZE], f"{CLAIM_PREFIX}{study}:{what}")
    except DuplicatedStudyError:
        return False
    storage.set_study_user_attr(sid, "claim", {"what": what, "owner": owner or {}, "at": time.time()})
    return True


def _grpc_claims(url: str, study: str) -> list[dict[str, Any]]:
    storage = open_storage(url)
    prefix = f"{CLAIM_PREFIX}{study}:"
    out = [dict(s.user_attrs.get("claim") or {"what": s.study_name[len(prefix):], "owner": {}, "at": 0.0})
           for s in storage.get_all_studies() if s.study_name.startswith(prefix)]
    return sorted(out, key=lambda c: c.get("at") or 0.0)
