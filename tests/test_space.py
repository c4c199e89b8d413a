"""Search spaces are data: presets sample valid networks within their ranges, files override presets, bad spaces fail early."""

from __future__ import annotations

import json

import optuna
import pytest

from nas_core.errors import SearchSpaceError
from nas_core.space import PRESETS, SearchSpace, get_space, load_space

PINNED_LATER = {"conv_block": {"choices": ["conv"]}, "pool_every": {"choices": [1]}, "weight_decay": {"choices": [0.0]},
                "schedule": {"choices": ["cosine"]}, "augmentation": {"choices": ["none"]}, "label_smoothing": {"choices": [0.0]},
                "ema_decay": {"choices": [0.0]}}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _samples(space: SearchSpace, n: int = 25, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_sample_valid_buildable_networks(name: str) -> None:
    from nas_core.assemble import assemble

    space = get_space(name)
    for values in _samples(space, 10):
        arch, recipe = space.build(values, input_shape=(1, 8, 8), num_classes=10, epochs=3)
        assert arch.validate() is arch and recipe.epochs == 3
        assemble(arch)


def test_seed_cnn_respects_its_ranges() -> None:
    space = get_space("seed-cnn")
    for v in _samples(space, 40):
        assert 1 <= v["n_conv"] <= 5 and 1 <= v["n_fc"] <= 4
        assert all(v[f"conv_filters_{i}"] in (32, 64, 128, 256) for i in range(v["n_conv"]))
        assert all(v[f"conv_kernel_{i}"] in (3, 5) for i in range(v["n_conv"]))
        assert f"conv_filters_{v['n_conv']}" not in v  # per-layer parameters only for layers that exist
        assert v["activation"] in ("relu", "leakyrelu", "elu", "gelu") and 0 <= v["dropout"] <= 0.5
        assert 1e-4 <= v["lr"] <= 1e-2 and v["optimizer"] in ("adam", "adamw", "sgd") and isinstance(v["pooling"], bool)


def test_modular_conditionals_follow_the_block_kind() -> None:
    for v in _samples(get_space("modular"), 40, seed=1):
        for i in range(v["n_stages"]):
            kind = v[f"stage_block_{i}"]
            assert (f"stage_expansion_{i}" in v) == (kind == "mbconv")
            assert (f"stage_heads_{i}" in v) == (kind == "attention")
            assert (f"stage_channels_{i}" in v) == (kind != "attention")


def test_space_round_trips_through_json() -> None:
    for space in PRESETS.values():
        assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_file_with_base_overrides_a_preset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "small.yaml"
    path.write_text("base: seed-cnn\nname: small\nparams:\n  n_conv: {high: 2}\n  conv_filters: {choices: [8, 16]}\n")
    space = load_space(path)
    assert space.name == "small" and space.param("n_conv").high == 2
    for v in _samples(space, 15):
        assert v["n_conv"] <= 2 and all(v[f"conv_filters_{i}"] in (8, 16) for i in range(v["n_conv"]))


@pytest.mark.parametrize(
    "text, match",
    [
        pytest.param('{"base": "seed-cnn", "params": {"lr": {"low": 0.1, "high": 0.01}}}', "low <= high", id="inverted-range"),
        pytest.param('{"base": "seed-cnn", "params": {"lr": {"low": 0, "log": true}}}', "log-scale range needs low > 0", id="log-zero"),
        pytest.param('{"kind": "seed-cnn", "params": {}}', "needs parameter", id="missing-params"),
        pytest.param('{"kind": "transformer", "params": {}}', "unknown search-space kind", id="unknown-kind"),
        pytest.param('{"base": "seed-cnn", "params": {"conv_filters": {"choices": [0]}}}', "out_channels must be a positive", id="bad-choice"),
        pytest.param('{"base": "seed-cnn", "parms": {}}', "unknown key", id="typo-key"),
        pytest.param("[1, 2", "could not be parsed", id="broken-json"),
    ],
)
def test_bad_space_files_fail_before_any_trial(tmp_path, text: str, match: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "space.json"
    path.write_text(text)
    with pytest.raises(SearchSpaceError, match=match):
        load_space(path)


def test_grid_is_finite_and_refuses_huge_spaces(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SearchSpaceError, match="points"):
        get_space("seed-cnn").grid()
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"base": "seed-cnn", "params": {
        "n_conv": {"low": 1, "high": 1}, "conv_filters": {"choices": [8]}, "conv_kernel": {"choices": [3]},
        "activation": {"choices": ["relu"]}, "n_fc": {"low": 1, "high": 1}, "fc_units": {"choices": [16]},
        "dropout": {"low": 0.0, "high": 0.0}, "lr": {"low": 0.01, "high": 0.01, "log": True},
        "optimizer": {"choices": ["adam"]}, "batch_size": {"choices": [64]},
             # the recipe and block parameters the preset gained later, pinned too so the space stays one point
             **PINNED_LATER}}))
    grid = load_space(path).grid()
    assert grid["pooling"] == [False, True] and grid["n_conv"] == [1]


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(SearchSpaceError, match="seed-cnn, modular"):
        load_space("resnet")
