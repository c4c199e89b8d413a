"""The dashboard on a shared PostgreSQL study (through the workspace config), N workers from the Search page, and the
scale-out servers: an MLflow tracking server and Optuna's gRPC storage proxy, each a real process on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, mlflow_runs, open_app

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
FAST = ["--dataset", "digits", "--epochs", "1", "--train-samples", "200", "--val-samples", "100", "--device", "cpu", "--quiet"]


def _trials(url: str, study: str) -> list[Any]:
    import optuna

    from nas_core.workspace.storage import is_grpc, shared_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        # One storage per database for every poll (a new one per call is a new connection pool, and the session's one
        # PostgreSQL runs out of connections on a loaded machine); a proxy is opened afresh (it may be gone later).
        return optuna.load_study(study_name=study, storage=url if is_grpc(url) else shared_storage(url)).get_trials(deepcopy=False)
    except KeyError:
        return []


@pytest.fixture(scope="module")
def pg_workspace(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose moca.json names the PostgreSQL storage, written by `worker --storage` (2 zero-cost trials)."""
    ws = tmp_path_factory.mktemp("pg_ws")
    run = subprocess.run([sys.executable, "-m", "nas_core", "worker", *FAST, "--study", "pgshown", "--storage", postgres_url,
                          "--trials", "2", "--fidelity", "zero-cost", "--no-finalize", "--no-known-good", "--no-tracking",
                          "--workspace", str(ws)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr
    assert not (ws / "optuna.db").exists()
    return ws


def test_results_and_search_read_a_postgres_study_through_the_workspace_config(pg_workspace: Path, postgres_url: str) -> None:
    import optuna

    from nas_core.owners import OWNER_KEY, owner_record

    at = open_app(pg_workspace, "results")
    assert at.sidebar.selectbox(key="study").value == "pgshown"
    assert any(e.label.startswith("Storage: postgresql+psycopg2://postgres@127.0.0.1") for e in at.sidebar.expander)
    trials = next(df.value for df in at.dataframe if "state" in df.value.columns)
    assert len(trials) == 2 and set(trials["state"]) == {"COMPLETE"}

    # live: a trial a worker starts now shows on the next run, with its worker (host, pid, device, heartbeat)
    study = optuna.load_study(study_name="pgshown", storage=postgres_url)
    trial = study.ask()
    trial.set_user_attr(OWNER_KEY, {**owner_record(), "device": "cpu"})
    try:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        workers = next(df.value for df in at.dataframe if "last heartbeat (s ago)" in df.value.columns)
        assert workers["pid"].tolist() == [os.getpid()] and workers["device"].tolist() == ["cpu"]
        assert workers["trial"].tolist() == [trial.number] and workers["process"].tolist() == ["alive"]
    finally:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

    search = open_app(pg_workspace, "search")
    assert "Resume pgshown" in search.selectbox(key="study_choice").options
    search.number_input(key="workers").set_value(3).run()
    assert not search.error  # a shared storage: several workers are fine


def test_search_page_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    at = open_app(tmp_path)
    at.number_input(key="workers").set_value(2).run()
    assert any("SQLite" in e and "Storage" in e for e in (str(x.value) for x in at.error))
    at.button(key="start").click().run()
    assert any("1 worker" in str(e.value) for e in at.error)  # Start says it again, and starts nothing
    from nas_core.runner import get_registry

    assert not get_registry().running(tmp_path)


def test_search_page_starts_n_workers_and_stop_ends_them_all(pg_workspace: Path, postgres_url: str) -> None:
    from optuna.trial import TrialState

    from nas_core.owners import pid_alive
    from nas_core.runner import get_registry

    registry = get_registry()
    at = open_app(pg_workspace, "search")
    try:
        at.number_input(key="trials").set_value(40)
        at.number_input(key="epochs").set_value(30)
        at.number_input(key="train_samples").set_value(300)
        at.number_input(key="workers").set_value(2)
        at.text_input(key="study_name_digits-seed-cnn").set_value("pgpage")
        at.button(key="start").click().run()
        assert not at.exception and not at.error, [str(e.value) for e in at.error]
        runner = registry.get(pg_workspace, "pgpage")
        assert runner is not None and runner.is_alive() and runner.workers == 2
        deadline = time.monotonic() + 300
        pids: set[int] = set()
        while len(pids) < 2:  # both workers are training a trial
            assert runner.is_alive() and time.monotonic() < deadline, runner.snapshot().error
            pids = {t.user_attrs["owner"]["pid"] for t in _trials(postgres_url, "pgpage")
                    if t.state == TrialState.RUNNING and "owner" in t.user_attrs and "summary" in t.user_attrs}
            time.sleep(0.1)
        assert os.getpid() not in pids  # processes of their own
        at.run()
        assert any(e.label == "Workers (2)" for e in at.expander)
        at.button(key="stop").click().run()
        assert not runner.is_alive()
        print(f"stop with 2 workers: {at.session_state['_stop_seconds']:.2f} s")  # figure for the report, not asserted
        assert not [p for p in pids if pid_alive(p)]
        assert not [t for t in _trials(postgres_url, "pgpage") if t.state == TrialState.RUNNING]  # each recorded its trial
        assert runner.snapshot().status == "stopped"
    finally:
        for r in registry.running(pg_workspace):
            r.stop(wait=30)


# --- servers: MLflow tracking server, gRPC storage proxy ----------------------------------------------


def _wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 120.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def storage_proxy(postgres_url: str) -> Iterator[str]:
    pytest.importorskip("grpc")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nas_core", "storage-proxy", "--storage", postgres_url, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        _wait_port(port, proc)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        _stop(proc)


def test_workers_and_finalize_through_the_grpc_storage_proxy(storage_proxy: str, postgres_url: str, tmp_path: Path) -> None:
    """`search --workers 2 --storage grpc://...`: the trials land in the PostgreSQL behind the proxy, the final phase runs
    once (its claim goes through the proxy too), `finalize` after it finds it done, and the dashboard reads the study."""
    from nas_core import dashboard
    from nas_core.claims import claims

    run = subprocess.run([sys.executable, "-m", "nas_core", "search", "--workers", "2", *FAST, "--study", "proxied",
                          "--storage", storage_proxy, "--trials", "4", "--fidelity", "zero-cost", "--fidelity-option",
                          "finetune_top_k=1", "--no-known-good", "--no-tracking", "--workspace", str(tmp_path)],
                         capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].endswith("best_config.json")
    done = [t for t in _trials(postgres_url, "proxied") if t.state.name == "COMPLETE"]
    assert len(done) == 4
    assert len([c for c in claims(storage_proxy, "proxied") if c["what"].startswith("finalize@")]) == 1
    again = subprocess.run([sys.executable, "-m", "nas_core", "finalize", "--study", "proxied", "--workspace", str(tmp_path)],
                           capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)  # storage from moca.json
    assert again.returncode == 0 and "was run by another worker" in again.stderr, again.stderr
    names = [s["name"] for s in dashboard.studies(tmp_path)]  # the proxy fronts the whole database: the session's studies
    assert "proxied" in names and not [n for n in names if n.startswith("moca-claim:")]  # claim markers are not studies
    assert len(dashboard.load_study(tmp_path, "proxied").trials) == 4


# --- docs/scale-out.md, run as written ------------------------------------------------------------------

DOC = ROOT / "docs" / "scale-out.md"
SERVERS = ("mlflow server", "python -m nas_core storage-proxy", "python -m nas_core serve")


def _doc_commands() -> list[str]:
    """Every line of the doc's ```bash blocks, in order."""
    import re

    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def _killpg(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:  # servers with children of their own (gunicorn, streamlit): end the group we started
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.mark.slow  # ~150 s: with it the default suite passed 10 minutes on 2 cores; run with `pytest -m slow`
def test_scale_out_recipe_runs_as_written(postgres_url: str, tmp_path: Path) -> None:
    """Each command of docs/scale-out.md on real servers: PostgreSQL (a database of its own), `mlflow server`, `search
    --workers 3`, a `worker` from "another machine", `finalize`, `serve`, and a worker through the gRPC proxy. Every
    worker's MLflow runs nest under the study's one parent run on the server."""
    import re
    import urllib.request

    import psycopg2

    commands = _doc_commands()
    assert [c for c in commands if c.startswith("sudo ")] == ["sudo apt-get install postgresql", "sudo -u postgres createuser moca",
                                                               "sudo -u postgres createdb -O moca moca"]
    # createdb: a database of its own in the test server
    dsn = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    con = psycopg2.connect(dsn)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("CREATE DATABASE moca")
    con.close()
    ports = {"5000": free_port(), "13000": free_port(), "8501": free_port()}
    env = {**ENV, "STORE": postgres_url.rsplit("/", 1)[0] + "/moca", "MLFLOW": f"http://127.0.0.1:{ports['5000']}"}
    fast = ["--epochs", "1", "--train-samples", "200", "--val-samples", "100", "--device", "cpu", "--quiet", "--fidelity", "zero-cost",
            "--fidelity-option", "finetune_top_k=1"]
    servers: list[subprocess.Popen[Any]] = []
    ran: list[str] = []
    try:
        for command in commands:
            if command.startswith("sudo "):
                continue
            if command.startswith("export "):
                name = command.split()[1].split("=")[0]
                assert name in env, f"the test does not know the placeholder {name}"
                ran.append(command)
                continue
            line = command.replace("0.0.0.0", "127.0.0.1").replace("proxy-host", "127.0.0.1")
            for doc_port, port in ports.items():
                line = line.replace(f"--port {doc_port}", f"--port {port}").replace(f":{doc_port} ", f":{port} ")
            line = re.sub(r"--trials \d+", "--trials 2", line)
            assert line.startswith(("python -m nas_core ", "mlflow server ")), f"the test does not know how to run: {command}"
            line = line.replace("python -m", f"{sys.executable} -m", 1) if line.startswith("python") else f"{sys.executable} -m {line}"
            if line.split(" -m ", 1)[1].startswith(("nas_core search", "nas_core worker")):
                line += " " + " ".join(fast)
            if command.startswith(SERVERS):
                proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
                servers.append(proc)
                port = int(re.search(r"--port (\d+)", line).group(1))  # type: ignore[union-attr]
                _wait_port(port, proc)
            else:
                run = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
                assert run.returncode == 0, f"{command}\n{run.stderr}"
            ran.append(command)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['8501']}/_stcore/health", timeout=30) as resp:  # the dashboard
            assert resp.read().decode().strip() == "ok"
    finally:
        for proc in reversed(servers):
            _killpg(proc)
    assert ran == [c for c in commands if not c.startswith("sudo ")]

    store = env["STORE"]
    finished = [t for t in _trials(store, "team") if t.state.is_finished()]
    assert len(finished) >= 2 + 2 + 2 and not [t for t in _trials(store, "team") if t.state.name == "RUNNING"]
    # the server is down now: read its store directly (the doc's --backend-store-uri, relative to where it ran)
    _, parents, nested = mlflow_runs(tmp_path / "mlflow.db", "team")
    assert len(parents) == 1
    assert {int(r.data.tags["trial_number"]) for r in nested} == {t.number for t in finished}
    assert all(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in nested)
