"""Architecture JSON round-trips, hashes by content, and refuses malformed, unknown or future input clearly."""

from __future__ import annotations

import json

import pytest

from nas_core.errors import ConfigError, RegistryError
from nas_core.genotype import SCHEMA_VERSION, Architecture, BlockSpec, DatasetRef, HeadSpec, ModelConfig, TrainingRecipe


def _config() -> ModelConfig:
    arch = Architecture(
        input_shape=(1, 8, 8),
        num_classes=10,
        stem=BlockSpec("conv", {"out_channels": 16}),
        stages=((BlockSpec("mbconv", {"out_channels": 24, "se": True, "stride": 2}), BlockSpec("attention", {"heads": 2})),
                (BlockSpec("pool", {"mode": "avg"}),)),
        head=HeadSpec(pool="avg", hidden=(32,), dropout=0.1, activation="gelu"),
    )
    return ModelConfig(
        dataset=DatasetRef("digits", (1, 8, 8), 10, tuple(str(i) for i in range(10))),
        architecture=arch,
        training=TrainingRecipe(optimizer="adamw", lr=3e-3, epochs=7, batch_size=32),
        metrics={"val_accuracy": 0.9},
        provenance={"study": "s", "trial": 3},
    )


def test_round_trip_is_lossless() -> None:
    cfg = _config()
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert again.to_dict()["schema_version"] == SCHEMA_VERSION


def test_hash_depends_on_content_not_key_order() -> None:
    cfg = _config()
    shuffled = json.loads(cfg.to_json())
    shuffled["architecture"] = dict(reversed(list(shuffled["architecture"].items())))
    assert ModelConfig.from_dict(shuffled).architecture.content_hash() == cfg.architecture.content_hash()
    changed = json.loads(cfg.to_json())
    changed["architecture"]["stem"]["params"]["out_channels"] = 17
    assert ModelConfig.from_dict(changed).architecture.content_hash() != cfg.architecture.content_hash()
    retuned = json.loads(cfg.to_json())
    retuned["training"]["lr"] = 0.01
    assert ModelConfig.from_dict(retuned).candidate_hash() != cfg.candidate_hash()


def test_summary_is_one_readable_line() -> None:
    s = _config().architecture.summary()
    assert "\n" not in s
    assert s.startswith("stem conv-16") and "mbconv-24-s2-e4+se" in s and "attention" in s and s.endswith("head avg>32>10")


@pytest.mark.parametrize(
    "mutate, match",
    [
        pytest.param(lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this MoCA-NAS", id="future-schema"),
        pytest.param(lambda d: d.pop("schema_version"), "no integer schema_version", id="no-schema"),
        pytest.param(lambda d: d.update(extra=1), "unknown key.*extra", id="unknown-top-key"),
        pytest.param(lambda d: d["architecture"]["stages"][0][0].update(kind="warpdrive"), "unknown block 'warpdrive'.*valid names", id="unknown-block"),
        pytest.param(lambda d: d["architecture"]["stem"]["params"].update(filters=3), "no parameter", id="unknown-param"),
        pytest.param(lambda d: d["architecture"].update(num_classes=3), "agree", id="dataset-mismatch"),
        pytest.param(lambda d: d["training"].update(optimizer="rmsprop"), "optimizer must be one of", id="bad-optimizer"),
        pytest.param(lambda d: d["training"].update(lr="fast"), "wrong type", id="bad-type"),
        pytest.param(lambda d: d["architecture"].update(stages="conv"), "list of lists", id="bad-stages"),
        pytest.param(lambda d: d["architecture"]["head"].update(dropout=1.5), "dropout", id="bad-dropout"),
    ],
)
def test_bad_configs_are_refused_with_a_reason(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(_config().to_json())
    mutate(data)
    with pytest.raises((ConfigError, RegistryError), match=match):
        ModelConfig.from_dict(data)


def test_malformed_json_names_the_position() -> None:
    with pytest.raises(ConfigError, match="not valid JSON.*line 1"):
        ModelConfig.from_json('{"schema_version": 1,', source="best_config.json")
