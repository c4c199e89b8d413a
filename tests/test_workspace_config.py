"""The workspace config (moca.json): recorded by the CLI and the sidebar, followed by searches and the dashboard."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import optuna
import pytest
from conftest import open_app

from nas_core import dashboard
from nas_core.cli import main
from nas_core.errors import ConfigError
from nas_core.fleet import WORKER_COLUMNS, workers_frame
from nas_core.owners import OWNER_KEY, owner_record
from nas_core.search import SearchConfig
from nas_core.storages import grpc_address
from nas_core.workers import check_workers, config_argv
from nas_core.workspace_config import (
    CONFIG_NAME,
    describe,
    read_config,
    save_config,
    workspace_storage,
    workspace_tracking_uri,
)


def test_save_and_read_keep_only_the_set_keys_owner_readable(tmp_path: Path) -> None:
    assert read_config(tmp_path) == {}
    assert workspace_storage(tmp_path).endswith("/optuna.db")
    save_config(tmp_path, storage="postgresql+psycopg2://u:secret@db/moca")
    save_config(tmp_path, tracking_uri="http://127.0.0.1:5000")  # None leaves storage as it is
    assert read_config(tmp_path) == {"storage": "postgresql+psycopg2://u:secret@db/moca", "tracking_uri": "http://127.0.0.1:5000"}
    assert stat.S_IMODE(os.stat(tmp_path / CONFIG_NAME).st_mode) == 0o600  # a URL may hold a password
    assert workspace_tracking_uri(tmp_path) == "http://127.0.0.1:5000"
    save_config(tmp_path, storage="")  # "" removes: back to the workspace's own SQLite
    assert workspace_storage(tmp_path).endswith("/optuna.db")
    assert describe("postgresql+psycopg2://u:secret@db/moca") == "postgresql+psycopg2://u:***@db/moca"


def test_a_broken_config_is_one_error_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        read_config(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ConfigError, match="delete it"):
        read_config(tmp_path)
    with pytest.raises(ConfigError, match="unknown workspace setting"):
        save_config(tmp_path, colour="red")
    with pytest.raises(ConfigError, match="grpc://HOST:PORT"):
        grpc_address("grpc://nohost")


def test_search_and_dashboard_follow_the_recorded_storage(tmp_path: Path) -> None:
    """A storage recorded in moca.json (here an SQLite file elsewhere) is where a flagless search writes and what the
    dashboard lists and opens."""
    elsewhere = f"sqlite:///{tmp_path / 'shared' / 'studies.db'}"
    ws = tmp_path / "ws"
    (tmp_path / "shared").mkdir()
    save_config(ws, storage=elsewhere)
    assert SearchConfig(workspace=str(ws)).storage_url() == elsewhere
    storage = optuna.storages.RDBStorage(elsewhere)
    study = optuna.create_study(study_name="remote", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency_ms"])
    study.add_trial(optuna.create_trial(values=[0.5, 1.0]))
    assert not (ws / "optuna.db").exists()
    assert [s["name"] for s in dashboard.studies(ws)] == ["remote"]
    assert dashboard.load_study(ws, "remote").trials[0].values == [0.5, 1.0]
    study.add_trial(optuna.create_trial(values=[0.7, 2.0]))  # live: a new trial shows on the next read
    assert len(dashboard.load_study(ws, "remote").trials) == 2
    assert dashboard.studies(ws)[0]["n_trials"] == 2


def test_cli_records_storage_and_tracking_uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    code = main(["search", "--workspace", str(tmp_path / "ws"), "--storage", url, "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}",
                 "--trials", "1", "--epochs", "1", "--train-samples", "100", "--val-samples", "50", "--study", "s", "--quiet",
                 "--no-known-good", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert read_config(tmp_path / "ws") == {"storage": url, "tracking_uri": f"sqlite:///{tmp_path / 'ml.db'}"}
    assert [s["name"] for s in dashboard.studies(tmp_path / "ws")] == ["s"]
    assert (tmp_path / "ml.db").exists()


def test_workers_frame_shows_owner_device_and_heartbeat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=120)
    study = optuna.create_study(study_name="w", storage=storage)
    trial = study.ask()
    trial.set_user_attr(OWNER_KEY, {**owner_record(), "device": "cpu"})
    storage.record_heartbeat(trial._trial_id)
    frame = workers_frame(dashboard.load_study(tmp_path, "w"))
    assert list(frame.columns) == WORKER_COLUMNS and len(frame) == 1
    row = frame.iloc[0]
    assert row["pid"] == os.getpid() and row["device"] == "cpu" and row["trial"] == 0 and row["process"] == "alive"
    assert 0 <= row["last heartbeat (s ago)"] < 60
    study.tell(trial, 1.0)
    assert workers_frame(dashboard.load_study(tmp_path, "w")).empty


def test_workers_need_a_shared_storage_and_get_the_config_as_flags(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL|postgresql"):
        check_workers(2, f"sqlite:///{tmp_path / 'x.db'}")
    config = SearchConfig(workspace=str(tmp_path), storage="postgresql+psycopg2://u@h/db", fidelity="zero-cost",
                          fidelity_options={"finetune_top_k": 2}, train_samples=100, study="s", known_good=False)
    argv = config_argv(config)
    from nas_core.cli import build_parser

    args = build_parser().parse_args(argv)  # every flag is one the CLI takes
    assert args.storage == "postgresql+psycopg2://u@h/db" and args.fidelity_option == [("finetune_top_k", 2)]
    assert args.train_samples == 100 and args.no_known_good


def test_each_worker_gets_one_of_the_gpus_this_process_sees() -> None:
    """``search --workers`` hands GPUs round robin from the parent's own CUDA_VISIBLE_DEVICES, not from the machine's list."""
    from nas_core.search.workers import worker_gpu

    assert [worker_gpu(i, 2, None) for i in range(3)] == ["0", "1", "0"]
    assert [worker_gpu(i, 2, "4,5") for i in range(3)] == ["4", "5", "4"]  # not the physical GPUs 0 and 1
    mig = "MIG-1f2e,MIG-9a8b"
    assert [worker_gpu(i, 2, mig) for i in range(2)] == ["MIG-1f2e", "MIG-9a8b"]
    assert worker_gpu(1, 2, "") == "1"


def test_an_unreachable_recorded_server_is_one_error_naming_the_setting(tmp_path: Path) -> None:
    pytest.importorskip("psycopg2")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    save_config(tmp_path, storage=f"postgresql+psycopg2://moca:secret@127.0.0.1:{port}/moca")
    with pytest.raises(ConfigError, match="sidebar: Storage") as info:
        dashboard.studies(tmp_path)
    assert "secret" not in str(info.value)  # the password is never shown


def test_the_sidebar_storage_settings_write_the_workspace_config(tmp_path: Path) -> None:
    """Saved from the sidebar, the storage is the one the dashboard then lists studies from."""
    elsewhere = tmp_path / "shared"
    elsewhere.mkdir()
    url = f"sqlite:///{elsewhere / 'studies.db'}"
    optuna.create_study(study_name="over-there", storage=url, directions=["maximize", "minimize"])
    ws = tmp_path / "ws"
    at = open_app(ws)
    assert "selectbox" not in [type(e).__name__.lower() for e in at.sidebar]  # no studies yet
    at.sidebar.text_input(key="cfg_storage").set_value(url)
    at.sidebar.text_input(key="cfg_tracking").set_value("http://127.0.0.1:5000")
    next(b for b in at.sidebar.button if b.label == "Save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert read_config(ws) == {"storage": url, "tracking_uri": "http://127.0.0.1:5000"}
    assert at.sidebar.selectbox(key="study").value == "over-there"
    warming = dashboard.warm_up(ws)  # the sidebar started it: let it end before the interpreter does (torch aborts otherwise)
    if warming is not None:
        warming.join(120)
