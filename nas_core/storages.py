"""The one storage opener: an SQLAlchemy URL gives Optuna's RDB storage, ``grpc://HOST:PORT`` its gRPC storage proxy.

``python -m nas_core storage-proxy --storage URL --port P`` runs :func:`run_proxy` in front of a database, so a fleet
of workers holds gRPC connections to one proxy (which caches trials) instead of each its own database connections.
The proxy speaks Optuna's storage API only: no heartbeats (a dead worker's trial is reclaimed at once on its own
machine through its owner record, and otherwise stays RUNNING until ``finalize``), and no SQL for the claim table
(claims go through the proxy too, see :mod:`nas_core.claims`).
"""

from __future__ import annotations

from typing import Any

from nas_core.errors import ConfigError

__all__ = ["GRPC_SCHEME", "grpc_address", "is_grpc", "open_storage", "run_proxy"]

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


def open_storage(url: str, *, engine_kwargs: dict[str, Any] | None = None, wait_s: float = 10.0, **rdb_kwargs: Any) -> Any:
    """Optuna storage for ``url``: :class:`GrpcStorageProxy` for ``grpc://``, else :class:`RDBStorage` (``rdb_kwargs``:
    heartbeat settings and the like, which the proxy does not take)."""
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
    import time

    import optuna

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **rdb_kwargs)
        except Exception as exc:
            # Processes opening a new database together (workers, the dashboard) race to create Optuna's schema;
            # the loser retries and finds it made.
            if attempt == 4 or not any(m in str(exc) for m in _SCHEMA_RACE):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


_SCHEMA_RACE = ("already exists", "duplicate key", "UniqueViolation", "UNIQUE constraint")


def run_proxy(storage_url: str, *, host: str = "127.0.0.1", port: int = 13000, threads: int = 16) -> None:
    """Serve ``storage_url`` (an SQLAlchemy URL) to ``grpc://HOST:PORT`` clients until interrupted."""
    from concurrent.futures import ThreadPoolExecutor

    if is_grpc(storage_url):
        raise ConfigError(f"--storage {storage_url!r} is itself a proxy; give the database's SQLAlchemy URL "
                          "(e.g. postgresql+psycopg2://USER@HOST/DB).")
    storages = _grpc_module()
    from nas_core.faults import storage_kwargs

    # get_storage wraps the RDB storage in Optuna's trial cache, as run_grpc_proxy_server's docs advise.
    storage = storages.get_storage(storages.RDBStorage(storage_url, engine_kwargs=storage_kwargs(storage_url)))
    storages.run_grpc_proxy_server(storage, host=host, port=port, thread_pool=ThreadPoolExecutor(threads))
