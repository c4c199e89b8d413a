"""The trial record: one versioned user attribute per finished trial, read through one accessor that also reads old studies."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from nas_core.errors import ConfigError
from nas_core.results import study_rows
from nas_core.schema.record import LIVE_KEYS, RECORD_KEY, RECORD_VERSION, trial_record, with_record


def test_a_finished_trial_stores_one_record_beside_its_live_keys(tiny_study) -> None:  # type: ignore[no-untyped-def]
    study = optuna.load_study(study_name=tiny_study.study, storage=f"sqlite:///{tiny_study.workspace / 'optuna.db'}")
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        assert set(t.user_attrs) - {"known_good"} <= {RECORD_KEY, *LIVE_KEYS}, sorted(t.user_attrs)
        record = trial_record(t)
        assert t.user_attrs[RECORD_KEY]["version"] == RECORD_VERSION
        assert {"metrics", "config", "history", "latency", "candidate_hash"} <= set(record)
        assert record["summary"] == t.user_attrs["summary"]


def _old_style_study(tmp_path: Path) -> optuna.Study:
    """A study as MoCA-NAS wrote it before the record: one user attribute per key."""
    study = optuna.create_study(study_name="old", storage=f"sqlite:///{tmp_path / 'old.db'}", directions=["maximize"])
    study.set_user_attr("objectives", ["accuracy"])
    study.add_trial(create_trial(
        value=0.9, params={"lr": 0.01}, distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
        user_attrs={"metrics": {"val_accuracy": 0.9, "test_accuracy": 0.88, "latency_ms": 0.1, "params": 1000.0, "flops": 5e4,
                                "size_mb": 0.01}, "summary": "conv-32", "candidate_hash": "abc", "mlflow_run_id": "r1"}))
    return study


def test_old_per_key_studies_read_the_same_through_the_accessor(tmp_path: Path) -> None:
    study = _old_style_study(tmp_path)
    t = study.trials[0]
    assert with_record(t) is t and trial_record(t)["metrics"]["val_accuracy"] == 0.9
    rows = study_rows(study)
    assert rows[0]["summary"] == "conv-32" and rows[0]["mlflow_run_id"] == "r1" and rows[0]["val_accuracy"] == 0.9


def test_a_record_from_a_newer_version_is_a_clear_error(tmp_path: Path) -> None:
    study = _old_style_study(tmp_path)
    study.add_trial(create_trial(value=0.5, user_attrs={RECORD_KEY: {"version": RECORD_VERSION + 1, "metrics": {}}}))
    with pytest.raises(ConfigError, match="newer MoCA-NAS .* upgrade nas_core"):
        trial_record(study.trials[1])
