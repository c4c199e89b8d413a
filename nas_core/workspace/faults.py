"""Faults of the machine rather than of a candidate: the study storage locked or corrupt, the disk full.

A candidate that raises is one failed trial and the search goes on; these faults would fail every
trial after it, so the search stops at once with one message that names the cause and the fix.
Finished trials stay in the study and the same command resumes it.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from nas_core.errors import LibraryError, NasCoreError, StorageError, WorkspaceError

__all__ = ["as_fatal", "sqlite_timeout", "storage_kwargs", "RESUME_HINT"]

RESUME_HINT = "finished trials are kept; run the same command again to resume"

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
# Libraries that do their own I/O report a full disk in their own exception type: safetensors (Rust) says
# "I/O error: No space left on device (os error 28)", not an OSError.
_DISK_FULL_TEXT = ("No space left on device", "(os error 28)", "Disk quota exceeded")


def sqlite_timeout() -> float:
    """Seconds a SQLite connection waits for another writer's lock: ``MOCA_SQLITE_TIMEOUT_S``, default 60."""
    text = os.environ.get("MOCA_SQLITE_TIMEOUT_S", "60")
    try:
        value = float(text)
    except ValueError:
        raise StorageError(f"MOCA_SQLITE_TIMEOUT_S must be a number of seconds, but got {text!r}.") from None
    if not value > 0:
        raise StorageError(f"MOCA_SQLITE_TIMEOUT_S must be a positive number of seconds, but got {text!r}.")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _root_cause(exc: BaseException) -> BaseException:
    """The first SQLAlchemy or OS error in the chain (Optuna wraps a failed commit in StorageInternalError)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) or type(cur).__module__.startswith("sqlalchemy"):
            return cur
        cur = cur.__cause__ or cur.__context__
    return exc


def as_fatal(exc: BaseException, *, where: str = "the workspace", generic: bool = True) -> NasCoreError | None:
    """The user-facing error for a fault that must stop the search, or None for an ordinary candidate failure.

    ``generic=False`` answers None for a storage error of no known cause (the caller has its own message).
    """
    cause = _root_cause(exc)
    if cause is not exc:
        found = as_fatal(cause, where=where, generic=generic)
        if found is not None:
            return found
    if isinstance(exc, LibraryError):
        return exc  # a tampered or missing library block fails every candidate that binds to it
    if isinstance(exc, (StorageError, WorkspaceError)):
        return exc
    if (isinstance(exc, OSError) and exc.errno in _DISK_FULL) or any(m in str(exc) for m in _DISK_FULL_TEXT):
        return WorkspaceError(f"the disk holding {where} is full ({_first_line(exc)}); free some space or use another --workspace; {RESUME_HINT}.")
    if isinstance(exc, OSError) and exc.errno in _READ_ONLY and getattr(exc, "filename", None):
        return WorkspaceError(f"cannot write {exc.filename} ({exc.strerror}); make {where} writable or use another --workspace.")
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - optuna depends on SQLAlchemy
        return None
    if not isinstance(exc, SQLAlchemyError):
        return None
    msg = _first_line(exc).lower()
    if "locked" in msg or "busy" in msg:
        return StorageError(
            f"the study database is locked by another process for longer than {sqlite_timeout():g} s ({_first_line(exc)}); "
            f"close the other program using it (or raise MOCA_SQLITE_TIMEOUT_S, or use PostgreSQL for many workers); {RESUME_HINT}."
        )
    if "full" in msg:
        return WorkspaceError(f"the disk holding the study database is full ({_first_line(exc)}); free some space; {RESUME_HINT}.")
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return StorageError(
            f"the study database is corrupt ({_first_line(exc)}); move it aside (keep a copy) and use a new --workspace or --storage."
        )
    if "readonly" in msg or "read-only" in msg:
        return StorageError(f"the study database is read-only ({_first_line(exc)}); make it writable; {RESUME_HINT}.")
    if not generic:
        return None
    return StorageError(f"the study storage failed ({_first_line(exc)}); check --storage and that the database is reachable; {RESUME_HINT}.")


def storage_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine arguments for an Optuna RDB storage URL."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": sqlite_timeout()}}
    if url.startswith("postgresql"):  # an unreachable server fails in 10 s, not the OS's minutes (the dashboard waits on it)
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}
