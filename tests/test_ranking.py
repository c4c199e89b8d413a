"""Ranking quality of a study's own fidelity (nas_core.ranking) and the Analytics page that shows it with the budget split."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from nas_core.ranking import bootstrap_ci, kendall, ranking_quality


def _trial(number: int, metrics: dict[str, float], history: list[dict[str, float]] | None = None, state: str = "COMPLETE") -> Any:
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), user_attrs={"metrics": metrics, "history": history or []})


def test_kendall_and_its_interval() -> None:
    a = np.arange(30.0)
    assert kendall(a, a) == pytest.approx(1.0) and kendall(a, -a) == pytest.approx(-1.0)
    assert math.isnan(kendall(a, np.ones(30)))  # a constant target ranks nothing
    lo, hi = bootstrap_ci(a, a)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=30)
    lo, hi = bootstrap_ci(a, noise)
    assert lo < kendall(a, noise) < hi and lo < 0 < hi  # unrelated numbers: the interval includes 0
    assert bootstrap_ci(a, noise) == (lo, hi)  # seeded


def test_checks_found_from_what_the_trials_carry() -> None:
    rng = np.random.default_rng(1)
    val = rng.uniform(0.8, 0.95, 20)
    trials = [_trial(i, {"val_accuracy": v, "test_accuracy": v + rng.normal(0, 0.005)},
                     [{"val_accuracy": v - 0.2 + rng.normal(0, 0.01)}, {"val_accuracy": v - 0.1}, {"val_accuracy": v}])
              for i, v in enumerate(val)]
    trials.append(_trial(99, {"val_accuracy": 0.1, "test_accuracy": 0.99}, state="PRUNED"))  # not complete: not counted
    checks = {(c.signal, c.target): c for c in ranking_quality(trials)}
    assert set(checks) == {("validation accuracy", "test accuracy"), ("validation accuracy after epoch 1", "validation accuracy at the end")}
    val_test = checks[("validation accuracy", "test accuracy")]
    assert val_test.n == 20 and val_test.kendall > 0.7 and val_test.ci95[0] > 0.5 and "ranks well" in val_test.verdict
    # Proxy studies are checked proxy -> final, over the finalists only.
    proxy = [_trial(i, {"proxy_score": float(i), **({"final_accuracy": 0.9 - 0.01 * i} if i < 6 else {})}) for i in range(12)]
    (check,) = [c for c in ranking_quality(proxy) if c.signal == "proxy score"]
    assert check.n == 6 and check.kendall == pytest.approx(-1.0) and "not shown" in check.verdict
    assert ranking_quality(proxy[:3]) == []  # too few trials to say anything


def test_analytics_shows_ranking_quality_and_budget_split(tmp_path: Path) -> None:
    """A real timed search; the Analytics page reads its validation-vs-test ranking and its planned vs used budget."""
    from conftest import open_app

    from nas_core.search import SearchConfig, run_search

    # screen off: this check needs five complete trials, and a screened search prunes some of six (test_screening.py
    # shows the page's Screening section)
    result = run_search(SearchConfig(dataset="digits", trials=6, epochs=3, patience=5, train_samples=300, timeout=300,
                                     workspace=str(tmp_path), study="ranked", seed=0, fidelity_options={"screen": "off"}))
    assert result.n_complete >= 5, result
    at = open_app(tmp_path, "analytics")
    heads = [h.value for h in at.subheader]
    assert heads[-2:] == ["Ranking quality of this study's fidelity", "Budget split"]
    labels = [m.label for m in at.metric]
    assert "Kendall τ: validation accuracy → test accuracy" in labels and "95 % bootstrap interval" in labels
    budget = next(df.value for df in at.dataframe if "planned" in df.value.columns)
    assert budget["phase"].tolist() == ["search (trials)", "finalists (fine-tune)", "final training of the best"]
    assert budget["planned"].tolist()[0] == "180 s (60%)" and budget["used"].tolist()[0].endswith(" s")
    assert budget["used"].tolist()[2].endswith(" s")  # the refit of the best ran and its seconds are shown
