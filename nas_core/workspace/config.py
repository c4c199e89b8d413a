"""The workspace config, ``<workspace>/moca.json``: the storage and tracking URIs a workspace's studies live in.

``search``/``worker``/``finalize`` with ``--storage`` or ``--tracking-uri`` (and the dashboard's sidebar) record them
here, so the dashboard, a later ``search`` with no flags and ``finalize`` all open the same PostgreSQL study and
the same MLflow server. With no file (or no key) the workspace's own SQLite files are used, as before.

The file may hold a database password inside a URL: it is written readable by its owner only (mode 0600). A
password can stay out of it altogether with PostgreSQL's own ``~/.pgpass`` or ``PGPASSWORD``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from nas_core.errors import ConfigError
from nas_core.workspace import default_storage

__all__ = ["CONFIG_NAME", "describe", "is_sqlite", "read_config", "save_config", "workspace_storage", "workspace_tracking_uri"]

CONFIG_NAME = "moca.json"
_KEYS = ("storage", "tracking_uri")


def read_config(workspace: str | Path) -> dict[str, str]:
    """The recorded URIs (only the keys that are set); empty when the workspace has no config."""
    path = Path(workspace) / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}); check its permissions or delete it to use the workspace's "
                          "own SQLite files.") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}); fix it or delete it to use the workspace's own SQLite files.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object like {{\"storage\": \"postgresql+psycopg2://...\"}}, "
                          f"not {type(data).__name__}; fix it or delete it.")
    return {k: str(data[k]) for k in _KEYS if isinstance(data.get(k), str) and data[k].strip()}


def save_config(workspace: str | Path, **values: str | None) -> dict[str, str]:
    """Record ``storage`` and/or ``tracking_uri`` (None leaves a key as it is, "" removes it); returns the new config.

    Written atomically (temp file + rename), so a dashboard reading it never sees half a file.
    """
    unknown = set(values) - set(_KEYS)
    if unknown:
        raise ConfigError(f"unknown workspace setting {sorted(unknown)[0]!r}; the workspace config holds {', '.join(_KEYS)}.")
    ws = Path(workspace)
    config = read_config(ws)
    for key, value in values.items():
        if value is None:
            continue
        if value.strip():
            config[key] = value.strip()
        else:
            config.pop(key, None)
    ws.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=ws, prefix=".moca.json.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, ws / CONFIG_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return config


def workspace_storage(workspace: str | Path) -> str:
    """The Optuna storage of the workspace: the recorded one, else ``sqlite:///<workspace>/optuna.db``."""
    return read_config(workspace).get("storage") or default_storage(workspace)


def workspace_tracking_uri(workspace: str | Path) -> str:
    """The MLflow tracking URI of the workspace: the recorded one, else ``sqlite:///<workspace>/mlflow.db``."""
    return read_config(workspace).get("tracking_uri") or f"sqlite:///{Path(workspace).resolve() / 'mlflow.db'}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def describe(url: str) -> str:
    """A URL for display, with any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"

