"""The one way nas_core opens study storage: Optuna RDB storage (SQLite in the workspace or any SQLAlchemy URL), or
``grpc://HOST:PORT`` for Optuna's gRPC storage proxy.

Every opener gets the same settings: the SQLite folder made and WAL tuning (:func:`nas_core.workspace.tune_sqlite`),
the lock timeout and connection-pool settings of :func:`nas_core.workspace.faults.storage_kwargs`, and, for a
search, heartbeats that fail a crashed trial and retry it once. Readers that poll (the dashboard, a progress
bar) share one storage per URL per process instead of opening a new connection pool each time.

``python -m nas_core storage-proxy --storage URL --port P`` runs :func:`run_proxy` in front of a database, so a fleet
of workers holds gRPC connections to one proxy (which caches trials) instead of each its own database connections.
The proxy speaks Optuna's storage API only: no heartbeats (a dead worker's trial is reclaimed at once on its own
machine through its owner record, and otherwise stays RUNNING until ``finalize``), and no SQL for the claim table
(claims go through the proxy too, see :mod:`nas_core.search.claims`).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from nas_core.errors import ConfigError
from nas_core.workspace import tune_sqlite
from nas_core.workspace.faults import storage_kwargs

__all__ = ["GRPC_SCHEME", "grpc_address", "is_grpc", "open_storage", "run_proxy", "shared_storage", "storage_engine"]

GRPC_SCHEME = "grpc://"


def is_grpc(url: str) -> bool:
    return url.startswith(GRPC_SCHEME)


def grpc_address(url: str) -> tuple[str, int]:
    """(host, port) of a ``grpc://HOST:PORT`` URL; a :class:`ConfigError` naming the form otherwise."""
    rest = url[len(GRPC_SCHEME):].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"storage {url!r} is not grpc://HOST:PORT (e.g. grpc://127.0.0.1:13000, where "
                          "`python -m nas_core storage-proxy` listens).")
    return host.strip("[]"), int(port)


def _grpc_module() -> Any:
    try:
        import grpc  # noqa: F401 - Optuna's proxy needs it; say how to get it rather than fail in Optuna's import
    except ImportError:
        raise ConfigError("the gRPC storage proxy needs grpcio; run `pip install -r requirements-dev.txt` "
                          "(or `pip install grpcio protobuf`).") from None
    import optuna.storages

    return optuna.storages


def open_storage(url: str, *, heartbeat: tuple[float, float] | None = None, wait_s: float = 10.0) -> Any:
    """Optuna storage for ``url``: ``GrpcStorageProxy`` for ``grpc://`` (no heartbeats there), else a new ``RDBStorage``;
    ``heartbeat=(interval_s, grace_s)`` for a process that runs trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if is_grpc(url):
        host, port = grpc_address(url)
        storages = _grpc_module()
        proxy = storages.GrpcStorageProxy(host=host, port=port)
        try:
            proxy.wait_server_ready(timeout=wait_s)
        except Exception:  # noqa: BLE001 - grpc's timeout error type varies by version
            proxy.close()
            raise ConfigError(f"no storage proxy answers at {url} within {wait_s:g} s; start it with "
                              f"`python -m nas_core storage-proxy --storage URL --port {port}` or check --storage.") from None
        return proxy
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    tune_sqlite()
    beats: dict[str, Any] = {}
    if heartbeat is not None:
        interval, grace = heartbeat
        beats = {"heartbeat_interval": max(1, round(interval)), "grace_period": max(2, round(grace)),
                 "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=storage_kwargs(url), **beats)
        except Exception as exc:
            # Processes opening a new database together (workers, the dashboard) race to create Optuna's schema;
            # the loser retries and finds it made.
            if attempt == 4 or not any(m in str(exc) for m in _SCHEMA_RACE):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


_SCHEMA_RACE = ("already exists", "duplicate key", "UniqueViolation", "UNIQUE constraint")


@functools.lru_cache(maxsize=16)
def shared_storage(url: str) -> Any:
    """One storage per URL for this process's readers (no heartbeats): polling never piles up connection pools."""
    return open_storage(url)


def storage_engine(url: str) -> Any:
    """A SQLAlchemy engine on the study database with the same settings (for nas_core's own table beside Optuna's)."""
    from sqlalchemy import create_engine

    tune_sqlite()
    return create_engine(url, **storage_kwargs(url))


def run_proxy(storage_url: str, *, host: str = "127.0.0.1", port: int = 13000, threads: int = 16) -> None:
    """Serve ``storage_url`` (an SQLAlchemy URL) to ``grpc://HOST:PORT`` clients until interrupted."""
    from concurrent.futures import ThreadPoolExecutor

    if is_grpc(storage_url):
        raise ConfigError(f"--storage {storage_url!r} is itself a proxy; give the database's SQLAlchemy URL "
                          "(e.g. postgresql+psycopg2://USER@HOST/DB).")
    storages = _grpc_module()
    # get_storage wraps the RDB storage in Optuna's trial cache, as run_grpc_proxy_server's docs advise.
    storage = storages.get_storage(storages.RDBStorage(storage_url, engine_kwargs=storage_kwargs(storage_url)))
    storages.run_grpc_proxy_server(storage, host=host, port=port, thread_pool=ThreadPoolExecutor(threads))
