"""Shared fixtures: one real tiny finished study (digits, 3 trials, 2 epochs) built once per test session, and a real
PostgreSQL server on loopback for the scale-out tests."""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# The MLflow store template (nas_core.tracking._store_template) of this test process and the searches it starts: its own,
# so a user's cached template never decides a test, and the tests build it the way a first run does.
os.environ["MOCA_CACHE_DIR"] = tempfile.mkdtemp(prefix="moca-cache-")
atexit.register(shutil.rmtree, os.environ["MOCA_CACHE_DIR"], ignore_errors=True)


APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = {"search": "app_pages/search.py", "results": "app_pages/results.py", "best_model": "app_pages/best_model.py", "analytics": "app_pages/analytics.py"}
APP_TIMEOUT = 120


def open_app(workspace: Path, page: str | None = None) -> Any:
    """The dashboard in Streamlit's AppTest on ``workspace``, switched to ``page`` (a key of PAGES), with no exception."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT)
    at.session_state["workspace"] = str(workspace)
    at.run()
    if page is not None:
        at.switch_page(PAGES[page]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@dataclass(frozen=True)
class TinyStudy:
    workspace: Path
    study: str
    best_config: Path


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> TinyStudy:
    """A finished 3-trial digits study with MLflow tracking, in its own workspace (treat it as read-only)."""
    from nas_core.search import SearchConfig, run_search

    ws = tmp_path_factory.mktemp("moca_tiny")
    result = run_search(SearchConfig(dataset="digits", trials=3, epochs=2, train_samples=300, workspace=str(ws), study="tiny", seed=0))
    assert result.n_complete >= 1 and result.best_config, result
    return TinyStudy(workspace=ws, study="tiny", best_config=Path(result.best_config))


def free_port() -> int:
    """A port nothing listens on now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own on a free loopback port (initdb + pg_ctl), for the whole session; skipped without it."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (scripts/test.sh installs the Debian package postgresql)")
    pytest.importorskip("psycopg2")
    bindir = Path(bins[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="moca-pg-"))
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres system user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser; cannot start PostgreSQL")
        os.chmod(base, 0o755)
        data.mkdir()
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    log = data / "server.log"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def mlflow_runs(db: Path, study: str) -> tuple[Any, list[Any], list[Any]]:
    """(client, parent runs, nested trial runs) of ``study`` in the MLflow SQLite store ``db``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(f"moca-{study}")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("moca_role") == "study"]
    nested = [r for r in runs if r.data.tags.get("moca_role") == "trial"]
    return client, parents, nested


def start_search_from_page(at: Any, workspace: Path, *, trials: int, epochs: int, train_samples: int, timeout: float = 300) -> Any:
    """Set the Search page's run size (an AppTest of app.py), press Start and wait for the search it starts; its runner."""
    from nas_core.jobs import get_registry

    at.number_input(key="trials").set_value(trials)
    at.number_input(key="epochs").set_value(epochs)
    at.number_input(key="train_samples").set_value(train_samples).run()
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    runner = get_registry().latest(workspace)
    assert runner is not None and runner.wait(timeout=timeout)
    return runner
