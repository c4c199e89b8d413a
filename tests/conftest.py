"""Shared fixtures: one real tiny finished study (digits, 3 trials, 2 epochs) built once per test session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


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
