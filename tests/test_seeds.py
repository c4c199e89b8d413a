"""Known-good designs: they fit their presets at every input size, are skipped by spaces that cannot express them, and open a new study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from nas_core.model.assembly import assemble
from nas_core.search import SearchConfig, run_search
from nas_core.seeds import COMPANION, WIDER, fits, known_good_designs
from nas_core.space import get_space, load_space

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 4, 4)]


@pytest.mark.parametrize("kind", ["seed-cnn", "modular"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_design_fits_its_preset_and_builds_for_the_input(kind: str, shape: tuple[int, int, int]) -> None:
    space = get_space(kind)
    designs = known_good_designs(kind, shape)
    # seed-cnn adds the 4-conv net's wider variant (the one training's scale-up) from 16x16 up
    assert len(designs) == (4 if kind == "seed-cnn" and min(shape[1:]) >= 16 else 2)
    for name, values in designs:
        assert fits(space, values), name
        arch, recipe = space.build(values, input_shape=shape, num_classes=10, epochs=3)
        assert recipe.schedule in ("onecycle", "cosine-warmup") and recipe.augmentation == "crop" and recipe.ema_decay > 0


def test_the_4_conv_bn_net_is_the_textbook_one() -> None:
    name, values = known_good_designs("seed-cnn", (1, 28, 28))[0]
    arch, _ = get_space("seed-cnn").build(values, input_shape=(1, 28, 28), num_classes=10, epochs=1)
    assert name == "4-conv BN CNN"
    assert arch.summary() == "conv-32 | conv-32 > maxpool | conv-64 | conv-64 > maxpool | head flatten>128>10"
    assert arch.head.dropout > 0
    name, values = known_good_designs("seed-cnn", (1, 28, 28))[1]
    arch, _ = get_space("seed-cnn").build(values, input_shape=(1, 28, 28), num_classes=10, epochs=1)
    assert name == "small ResNet" and all(stage[0].kind == "residual" for stage in arch.stages)
    name, values = known_good_designs("seed-cnn", (1, 28, 28))[2]
    arch, recipe = get_space("seed-cnn").build(values, input_shape=(1, 28, 28), num_classes=10, epochs=1)
    assert name == WIDER["4-conv BN CNN"] == "4-conv BN CNN, wide"
    assert arch.summary() == "conv-32 | conv-64 > maxpool | conv-64 | conv-128 > maxpool | head flatten>128>10"
    assert (recipe.optimizer, recipe.weight_decay) == ("adamw", 5e-2)  # decoupled decay: the wide net's one training
    name, values = known_good_designs("seed-cnn", (1, 28, 28))[3]
    arch, recipe = get_space("seed-cnn").build(values, input_shape=(1, 28, 28), num_classes=10, epochs=1)
    assert name == COMPANION and arch.summary() == "conv-32 | conv-32 > maxpool | conv-64 | conv-64 > maxpool | head flatten>10"
    assert sum(p.numel() for p in assemble(arch).parameters()) <= 100_000  # the one training's small companion
    for shape in ((1, 28, 28), (3, 32, 32)):  # the one training's nets train with decoupled weight decay from 16x16 up
        assert all(v["optimizer"] == "adamw" and v["weight_decay"] == 5e-2 for _, v in known_good_designs("seed-cnn", shape))
    _, digits_bn4 = known_good_designs("seed-cnn", (1, 8, 8))[0]
    assert (digits_bn4["optimizer"], digits_bn4["weight_decay"]) == ("adam", 0.0)  # digits: the measured recipe, as before
    assert [n for n, _ in known_good_designs("seed-cnn", (1, 8, 8))] == ["4-conv BN CNN", "small ResNet"]  # digits: as before


def test_a_space_that_cannot_express_a_design_skips_it(tmp_path: Path) -> None:
    path = tmp_path / "narrow.json"
    path.write_text(json.dumps({"base": "seed-cnn", "params": {"conv_filters": {"choices": [8, 16]}}}))
    space = load_space(path)
    assert not any(fits(space, values) for _, values in known_good_designs("seed-cnn", (1, 8, 8)))
    assert not fits(get_space("seed-cnn"), {"n_conv": 1})  # a design missing values is not one the space can replay


@pytest.mark.parametrize("known_good", [True, False])
def test_a_new_study_starts_with_the_designs_then_samples(tmp_path: Path, known_good: bool) -> None:
    # screen off: every trial trains, so the third one is a full sampled trial (the screen has its own tests). Without the
    # designs one trial shows it: a design would be the first (sampled seed-cnn candidates take ~10 s each here)
    n = 3 if known_good else 1
    result = run_search(SearchConfig(dataset="digits", trials=n, epochs=1, patience=1, train_samples=200, val_samples=100, seed=0,
                                     device="cpu", workspace=str(tmp_path), study="kg", tracking=False, known_good=known_good,
                                     fidelity_options={"screen": "off"}))
    assert result.n_complete == n
    study = optuna.load_study(study_name="kg", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    marks = [t.user_attrs.get("known_good") for t in study.trials]
    if known_good:
        assert marks == ["4-conv BN CNN", "small ResNet", None]
        assert study.user_attrs["known_good"] == ["4-conv BN CNN", "small ResNet"]
        assert study.trials[0].user_attrs["summary"].startswith("conv-32 | conv-32 > maxpool")
        summary = (tmp_path / "kg" / "summary.md").read_text()
        assert "4-conv BN CNN, small ResNet" in summary
    else:
        assert marks == [None] and not study.user_attrs.get("known_good")
        return
    # resuming does not enqueue them again
    run_search(SearchConfig(dataset="digits", trials=1, epochs=1, patience=1, train_samples=200, val_samples=100, seed=0,
                            device="cpu", workspace=str(tmp_path), study="kg", tracking=False, known_good=known_good))
    study = optuna.load_study(study_name="kg", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.user_attrs.get("known_good") for t in study.trials][3] is None


def test_the_cli_flag_turns_the_designs_off() -> None:
    from nas_core.cli import _search_config, build_parser

    args = build_parser().parse_args(["search", "--no-known-good", "--workspace", "/tmp/unused"])
    assert _search_config(args).known_good is False
    assert _search_config(build_parser().parse_args(["search", "--workspace", "/tmp/unused"])).known_good is True
