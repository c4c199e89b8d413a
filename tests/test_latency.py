"""Latency is measured the same way wherever the search runs: the CLI (main thread) and the dashboard (a runner thread)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import torch
from torch import nn

from nas_core.evaluate import latency_threads, measure_latency
from nas_core.schema.record import trial_record
from nas_core.workspace import default_storage

ROOT = Path(__file__).resolve().parent.parent


def test_measure_latency_records_p50_p90_threads_and_noise() -> None:
    torch.manual_seed(0)
    before = torch.get_num_threads()
    lat = measure_latency(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), (1, 8, 8))
    assert lat["threads"] == latency_threads() and torch.get_num_threads() == before  # fixed for the measure, then restored
    assert lat["latency_ms"] == lat["p50_ms"] <= lat["p90_ms"]
    assert lat["repeats"] >= 20 and lat["warmup"] >= 10 and isinstance(lat["noisy"], bool)
    assert f"{lat['threads']} thread" in lat["how"]


def _trial0(workspace: Path, study: str) -> dict:
    s = optuna.load_study(study_name=study, storage=default_storage(workspace))
    t = s.trials[0]
    again = (s.user_attrs.get("latency_remeasured") or {}).get("0", {})
    return {"params": trial_record(t)["metrics"]["params"], "in_search": trial_record(t)["latency"]["latency_ms"],
            "threads": trial_record(t)["latency"].get("threads"), "warmup": trial_record(t)["latency"].get("warmup"), "remeasured": again.get("latency_ms"), "remeasured_threads": again.get("threads")}


_RUNNER = """
from nas_core.runner import RunnerRegistry
from nas_core.search import SearchConfig
runner = RunnerRegistry().start(SearchConfig(dataset="digits", trials=1, epochs=1, train_samples=200, seed=0,
                                             workspace={workspace!r}, study="same"))
runner.wait(timeout=300)
print(runner.snapshot().error or "")
print(runner.snapshot().status)
"""


def test_cli_and_dashboard_record_the_same_latency(tmp_path: Path) -> None:
    """The same network (seed 0, trial 0) from `python -m nas_core search` and from the dashboard's runner thread:
    both are measured the same way (the same fixed thread count and warm-up; the figures were 0.33 ms and 1.13 ms before
    the thread count was fixed), and best_config.json carries the quiet re-measurement. The 10 % agreement figure is a
    timing on a shared machine, so it lives in a benchmark (benchmarks/latency_agreement.py)."""
    flags = ["--dataset", "digits", "--trials", "1", "--epochs", "1", "--train-samples", "200", "--seed", "0"]
    cli = subprocess.run([sys.executable, "-m", "nas_core", "search", *flags, "--workspace", str(tmp_path / "cli"), "--study", "same"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    # The dashboard's way, a SearchRunner thread, in a process of its own: in the test process, threads other tests
    # left behind (AppTest servers, background jobs) would compete with the measurement, which no dashboard run sees.
    ui = subprocess.run([sys.executable, "-c", _RUNNER.format(workspace=str(tmp_path / "ui"))], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
    assert ui.returncode == 0 and ui.stdout.strip().endswith("finished"), ui.stderr[-2000:]
    a, b = _trial0(tmp_path / "cli", "same"), _trial0(tmp_path / "ui", "same")
    assert a["params"] == b["params"]  # the same network
    # The same method on both paths: this is what the old bug broke (the runner thread measured with torch's default
    # thread count, the CLI with another; 0.33 vs 1.13 ms). How close the two figures come is a timing on a shared
    # machine: two fresh processes with the same thread count were seen 1x and 2x apart in CI, so no ratio is asserted
    # here; benchmarks/latency_agreement.py reports it over repeated pairs.
    assert a["threads"] == b["threads"] and a["remeasured_threads"] == b["remeasured_threads"] is not None, (a, b)
    assert a["warmup"] == b["warmup"] and a["remeasured"] and b["remeasured"], (a, b)
    best = json.loads((tmp_path / "ui" / "same" / "best_config.json").read_text())
    assert best["metrics"]["latency_ms"] == b["remeasured"] and "quiet batch" in best["metrics"]["latency_measurement"]["how"]
