"""Tests for nas_core.proxies: every registered zero-cost proxy on a tiny network, and the zero-cost fidelity."""

from __future__ import annotations

import math

import pytest
import torch

from nas_core.assemble import assemble
from nas_core.errors import ConfigError, RegistryError
from nas_core.evaluate import FIDELITIES, FINALIZERS, EvalContext
from nas_core.genotype import Architecture, BlockSpec, HeadSpec, TrainingRecipe
from nas_core.proxies import PROXIES, list_proxies, register_proxy, score
from nas_core.schema.record import trial_record


def _tiny(width: int = 8, attention: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    stages = [(BlockSpec("conv", {"out_channels": width}), BlockSpec("residual", {"out_channels": width, "stride": 2}))]
    if attention:
        stages.append((BlockSpec("attention", {"heads": 2}),))
    return assemble(Architecture((1, 8, 8), 3, tuple(stages), HeadSpec(hidden=(8,))))


@pytest.fixture()
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)


def test_the_four_proxies_are_registered() -> None:
    assert {"synflow", "naswot", "grad_norm", "snip"} <= set(list_proxies())


@pytest.mark.parametrize("name", PROXIES.names())
@pytest.mark.parametrize("attention", [False, True], ids=["cnn", "attention"])
def test_proxy_on_a_tiny_network(name: str, attention: bool, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = _tiny(attention=attention)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    value = score(name, model, *batch)
    assert isinstance(value, float) and math.isfinite(value) and value > -1e29
    assert score(name, model, *batch) == pytest.approx(value, rel=1e-6)  # deterministic
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} modified the model ({k})"


@pytest.mark.parametrize("name", ["synflow", "snip", "grad_norm"])
def test_wider_network_scores_higher_on_magnitude_proxies(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert score(name, _tiny(width=32), *batch) > score(name, _tiny(width=4), *batch)


def test_duplicate_proxy_name_is_an_error() -> None:
    with pytest.raises(RegistryError, match="already registered"):
        register_proxy("naswot")(lambda m, x, y: 0.0)


def test_zero_cost_fidelity_scores_without_training() -> None:
    from nas_core.data import load_dataset

    assert "zero-cost" in FIDELITIES and "zero-cost" in FINALIZERS
    data = load_dataset("digits", seed=0, train_samples=100, val_samples=50)
    arch = Architecture((1, 8, 8), 10, ((BlockSpec("conv", {"out_channels": 8}),),))
    ctx = EvalContext(arch=arch, recipe=TrainingRecipe(), data=data, options={"proxy": "synflow"})
    result = FIDELITIES.get("zero-cost")(ctx)
    assert result.metrics["epochs_trained"] == 0
    # the score is recorded under its own name and ranks in accuracy's place; val_accuracy stays a measured accuracy
    assert result.extra["ranked_by"] == {"val_accuracy": "proxy_score"}
    assert result.metrics["val_accuracy"] == result.metrics["val_accuracy_untrained"] and 0 <= result.metrics["val_accuracy"] <= 1
    assert result.extra["proxy"] == "synflow" and 0 <= result.metrics["test_accuracy"] <= 1
    with pytest.raises(ConfigError, match="unknown zero-cost proxy"):
        FIDELITIES.get("zero-cost")(EvalContext(arch=arch, recipe=TrainingRecipe(), data=data, options={"proxy": "nope"}))


def test_zero_cost_best_config_is_a_trained_finalist(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The untrained trials hold proxy scores (e.g. NASWOT ~ hundreds) where accuracy goes: the best config
    and the Pareto front must come from the finalists the second phase trained, never from a bare score."""
    import json
    from pathlib import Path

    import optuna

    from nas_core.search import SearchConfig, run_search
    from nas_core.workspace import default_storage

    result = run_search(SearchConfig(dataset="digits", trials=5, epochs=2, workspace=str(tmp_path), space="modular", fidelity="zero-cost",
                                     tracking=False, train_samples=300, study="zc", fidelity_options={"finetune_top_k": 2}))
    best = json.loads(Path(result.best_config).read_text())
    study = optuna.load_study(study_name="zc", storage=default_storage(tmp_path))
    finalists = {str(f["trial"]) for f in study.user_attrs["finetune"]}
    assert best["metrics"]["final_test_accuracy"] is not None and 0 <= best["metrics"]["val_accuracy"] <= 1
    assert best["metrics"]["val_accuracy"] in {float(f["final_accuracy"]) for f in study.user_attrs["finetune"]}
    front = sorted(p.stem for p in (Path(result.best_config).parent / "pareto").glob("trial_*.json"))
    assert front and all(name.removeprefix("trial_") in finalists for name in front)
    assert best["provenance"]["finetune"]["recipe"]["epochs"] == 2  # from scratch: the search's epochs, not the short fine-tune
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        m = trial_record(t)["metrics"]  # every trial: the score under its own name, ranking in accuracy's place
        assert t.values[0] == m["proxy_score"] and 0 <= m["val_accuracy"] <= 1
