"""Many workers, one study: two `python -m nas_core worker` processes share a study in a real PostgreSQL on loopback."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
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
    port = _free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    log = data / "server.log"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_one_study(postgres_url: str, tmp_path: Path) -> None:
    import optuna

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--dataset", "digits", "--study", "shared", "--storage", postgres_url, "--trials", "2", "--epochs", "1",
            "--train-samples", "200", "--val-samples", "100", "--device", "cpu", "--quiet"]
    workers = [
        subprocess.Popen([sys.executable, "-m", "nas_core", "worker", *args, "--seed", str(i), "--workspace", str(tmp_path / f"w{i}")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err
        assert out.strip().splitlines()[-1].endswith("best_config.json")
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 4
    assert len({t.number for t in study.trials}) == 4
