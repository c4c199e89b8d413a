"""Conformance of every registered fidelity to the Fidelity protocol (as timm tests every registered model)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from nas_core.data import load_dataset
from nas_core.errors import ConfigError
from nas_core.fidelities import FIDELITIES, FINETUNE_OPTIONS, EvalContext, EvalResult, Fidelity
from nas_core.library import build_library
from nas_core.schema import OBJECTIVES, Architecture, BlockSpec, TrainingRecipe
from nas_core.search import SearchConfig

NAMES = FIDELITIES.names()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("fidelities")
    build_library(dataset="digits", workspace=ws, minutes=0.02, train_samples=300, donors=("conv-a",), min_steps=10)
    return ws


@pytest.fixture(scope="module")
def data() -> Any:
    return load_dataset("digits", seed=0, train_samples=200, val_samples=100)


def _defaults(fidelity: Fidelity) -> dict[str, Any]:
    return {opt.name: opt.default for opt in fidelity.page_options}


def test_the_built_ins_are_registered_train_first() -> None:
    assert NAMES[:3] == ["train", "cached", "zero-cost"]


@pytest.mark.parametrize("name", NAMES)
def test_declarations(name: str) -> None:
    fidelity = FIDELITIES.get(name)
    assert isinstance(fidelity, Fidelity) and fidelity.name == name
    assert fidelity.summary, "a one-line summary: the Search page's help lists it"
    assert len(set(fidelity.options)) == len(fidelity.options) and all(isinstance(o, str) for o in fidelity.options)
    for opt in fidelity.page_options:
        assert opt.name in fidelity.options, f"page option {opt.name} must be one --fidelity-option accepts"
        assert not opt.choices or opt.default in opt.choices
        assert opt.choices or opt.minimum <= opt.default <= opt.maximum
    if fidelity.has_final_phase:
        assert set(FINETUNE_OPTIONS) <= set(fidelity.options), "a second phase takes the fine-tune options"


@pytest.mark.parametrize("name", NAMES)
def test_options_are_checked_where_they_enter(name: str) -> None:
    fidelity = FIDELITIES.get(name)
    fidelity.check({})
    fidelity.check(_defaults(fidelity))
    SearchConfig(dataset="digits", trials=1, fidelity=name, fidelity_options=_defaults(fidelity)).validate()
    with pytest.raises(ConfigError, match="unknown option 'no_such_option'"):
        SearchConfig(dataset="digits", trials=1, fidelity=name, fidelity_options={"no_such_option": 1}).validate()
    for opt in fidelity.page_options:
        if opt.choices:
            with pytest.raises(ConfigError):
                fidelity.check({opt.name: "not-a-choice"})


@pytest.mark.parametrize("name", NAMES)
def test_prepare_and_evaluate_give_every_objective(name: str, workspace: Path, data: Any) -> None:
    fidelity = FIDELITIES.get(name)
    arch = Architecture((1, 8, 8), 10, ((BlockSpec("conv", {"out_channels": 16}), BlockSpec("conv", {"out_channels": 32, "stride": 2})),))
    options = _defaults(fidelity)
    arch = fidelity.prepare(arch, workspace=workspace, data=data, options=options, seed=0)
    assert isinstance(arch, Architecture)
    epochs: list[int] = []
    ctx = EvalContext(arch=arch, recipe=TrainingRecipe(epochs=1), data=data, workspace=workspace, options=options,
                      on_epoch=lambda epoch, total, row: epochs.append(epoch))
    result = fidelity.evaluate(ctx)
    assert isinstance(result, EvalResult)
    for objective in OBJECTIVES.values():
        value = result.metrics[objective.metric]
        assert math.isfinite(float(value)), (objective.name, value)
    assert 0 <= result.metrics["test_accuracy"] <= 1
    assert result.latency.get("how"), "latency says how it was measured"
    proxy = fidelity.proxy(options)
    assert proxy is None or isinstance(proxy, str)


@pytest.mark.parametrize("name", NAMES)
def test_a_stop_request_ends_evaluation(name: str, workspace: Any, data: Any) -> None:
    """A fidelity that trains honours should_stop (the user's Stop); one that does not train simply finishes."""
    from nas_core.training import StopRequested

    fidelity = FIDELITIES.get(name)
    arch = Architecture((1, 8, 8), 10, ((BlockSpec("conv", {"out_channels": 8}),),))
    options = _defaults(fidelity)
    arch = fidelity.prepare(arch, workspace=workspace, data=data, options=options, seed=0)
    ctx = EvalContext(arch=arch, recipe=TrainingRecipe(epochs=50), data=data, workspace=workspace, options=options, should_stop=lambda: True)
    try:
        result = fidelity.evaluate(ctx)
    except StopRequested:
        return
    assert result.metrics["epochs_trained"] <= 1
