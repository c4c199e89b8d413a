"""Training recipes: schedules, augmentation, label smoothing and weight averaging as config keys, and old configs still loading."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from nas_core import recipes
from nas_core.errors import ConfigError
from nas_core.genotype import ModelConfig, TrainingRecipe


def _opt(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(schedule: str, *, epochs: int = 10, steps: int = 10, warmup: float = 0.2) -> list[float]:
    opt = _opt()
    sched, per_step = recipes.make_scheduler(opt, schedule=schedule, epochs=epochs, steps_per_epoch=steps, warmup=warmup)
    out = []
    for _ in range(epochs * steps if per_step else epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_an_old_config_without_the_new_keys_loads_with_the_first_release_recipe(tiny_study) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(tiny_study.best_config.read_text())
    for key in ("schedule", "warmup", "label_smoothing", "ema_decay"):
        data["training"].pop(key)
    data["training"]["augmentation"] = "shift+flip"
    cfg = ModelConfig.from_dict(data)
    assert (cfg.training.schedule, cfg.training.warmup, cfg.training.label_smoothing, cfg.training.ema_decay) == ("cosine", 0.0, 0.0, 0.0)
    assert {"schedule", "warmup", "label_smoothing", "ema_decay"} <= set(cfg.to_dict()["training"])  # written out in full again


def test_a_new_recipe_round_trips_through_json() -> None:
    recipe = TrainingRecipe(optimizer="sgd", lr=0.05, schedule="onecycle", warmup=0.25, augmentation="crop+flip+erase",
                            label_smoothing=0.1, ema_decay=0.999)
    assert TrainingRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


@pytest.mark.parametrize(
    "changes, match",
    [
        pytest.param({"schedule": "step"}, "schedule must be one of cosine, onecycle, cosine-warmup", id="schedule"),
        pytest.param({"augmentation": "crop+blur"}, "augmentation must be one of", id="unknown-op"),
        pytest.param({"augmentation": "crop+crop"}, "augmentation must be one of", id="repeated-op"),
        pytest.param({"ema_decay": 1.0}, "ema_decay must be in", id="ema"),
        pytest.param({"label_smoothing": -0.1}, "label_smoothing must be in", id="smoothing"),
        pytest.param({"warmup": 1.0}, "warmup is a fraction", id="warmup"),
        pytest.param({"precision": "fp16"}, "precision must be one of fp32, bf16, auto", id="precision"),
    ],
)
def test_bad_recipe_values_are_refused_with_the_rule(changes: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainingRecipe.from_dict({**TrainingRecipe().to_dict(), **changes})


def test_cosine_is_the_per_epoch_annealing_of_the_first_release() -> None:
    lrs = _lrs("cosine", epochs=4)
    assert lrs == pytest.approx([0.1, 0.1 * (1 + 2**-0.5) / 2, 0.05, 0.1 * (1 - 2**-0.5) / 2])


@pytest.mark.parametrize("schedule", ["onecycle", "cosine-warmup"])
def test_warm_up_schedules_peak_at_the_recipe_lr_after_the_warm_up_and_anneal_towards_zero(schedule: str) -> None:
    lrs = _lrs(schedule, epochs=10, steps=10, warmup=0.2)
    peak = max(range(len(lrs)), key=lambda i: lrs[i])
    assert lrs[0] < 0.1 * 0.5  # starts low
    assert max(lrs) == pytest.approx(0.1, rel=1e-3)  # the recipe's lr is the peak
    assert 15 <= peak <= 21  # 20 % of the 100 steps
    assert lrs[-1] < 0.1 * 0.01  # annealed


@pytest.mark.parametrize("schedule", ["onecycle", "cosine-warmup"])
def test_a_compressed_schedule_runs_its_rest_faster_without_a_jump_and_ends_annealed(schedule: str) -> None:
    """A time box that will end a training early compresses the rest of its schedule (``compress_schedule``): the steps
    taken keep their rates, the next one continues from there, and the new last step is at the schedule's end."""
    opt = _opt()
    sched, _ = recipes.make_scheduler(opt, schedule=schedule, epochs=10, steps_per_epoch=10, warmup=0.2)
    plain = _lrs(schedule, epochs=10, steps=10, warmup=0.2)
    lrs = []
    for step in range(100):
        if step == 40:
            assert recipes.compress_schedule(sched, steps_left=20)  # 60 planned steps left, 20 will fit
        if step == 50:
            assert recipes.compress_schedule(sched, steps_left=25)  # more steps than the compressed rest: never later than that
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:41] == pytest.approx(plain[:41])  # what was trained is untouched, and the next step continues from there
    assert abs(lrs[41] - lrs[40]) < 0.1 * 0.05  # no jump
    # the 60th step trains where the plain schedule's 98th does (3 of its steps a step): annealed at step 60, not 100
    assert lrs[59] < 0.1 * 0.01 and lrs[59] == pytest.approx(plain[97])
    assert all(a >= b - 1e-12 for a, b in zip(lrs[40:60], lrs[41:60]))  # annealing all the way


def test_a_per_epoch_schedule_is_not_compressed() -> None:
    opt = _opt()
    sched, per_step = recipes.make_scheduler(opt, schedule="cosine", epochs=4, steps_per_epoch=10, warmup=0.0)
    assert not per_step and not recipes.compress_schedule(sched, steps_left=1)


def test_crop_moves_each_image_by_its_own_offset_within_the_pad() -> None:
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3, 3] = 1.0  # one lit pixel per image
    out = recipes.augment(x, ("crop",), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    where = [tuple(int(v) for v in (img[0] == 1).nonzero()[0]) for img in out]
    assert all(abs(r - 3) <= 1 and abs(c - 3) <= 1 for r, c in where)  # 8 // 14 -> at least 1 px
    assert len(set(where)) > 3  # per image, not one offset for the batch
    again = recipes.augment(x, ("crop",), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_hflip_mirrors_about_half_the_images_each_on_its_own() -> None:
    x = torch.zeros(400, 1, 8, 8)
    x[:, :, 2, 1] = 1.0  # one lit pixel left of centre
    out = recipes.augment(x, ("hflip",), torch.Generator().manual_seed(0))
    mirrored = out[:, 0, 2, 6] == 1.0
    kept = out[:, 0, 2, 1] == 1.0
    assert torch.equal(mirrored, ~kept)  # each image either mirrored or untouched, nothing else
    assert 0.4 < mirrored.float().mean() < 0.6  # per image, not one coin for the batch
    assert torch.equal(out, recipes.augment(x, ("hflip",), torch.Generator().manual_seed(0)))


def test_erase_zeroes_one_rectangle_in_about_half_the_images() -> None:
    x = torch.ones(400, 1, 16, 16)
    out = recipes.augment(x, ("erase",), torch.Generator().manual_seed(1))
    erased = (out == 0).flatten(1).any(1)
    assert 0.35 < erased.float().mean() < 0.65
    for img in out[erased][:20]:
        rows, cols = (img[0] == 0).nonzero().unbind(1)
        area = int((img[0] == 0).sum())
        assert area == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)  # a filled rectangle
        assert 1 <= area <= 0.2 * 256 * 1.5


def test_model_ema_follows_the_warmed_up_decay_exactly() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = recipes.ModelEma(net, 0.9)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()
    net(torch.randn(8, 3))  # moves the batch-norm statistics and num_batches_tracked
    ema.update(net)
    d = min(0.9, 2 / 11)
    assert torch.allclose(ema.state["0.weight"], d * w0 + (1 - d) * net[0].weight.detach())
    assert int(ema.state["1.num_batches_tracked"]) == 1
    assert torch.allclose(ema.state["1.running_mean"], d * torch.zeros(2) + (1 - d) * net[1].running_mean)


@pytest.mark.parametrize("recipe", [
    pytest.param(TrainingRecipe(), id="first-release"),
    pytest.param(TrainingRecipe(schedule="onecycle", warmup=0.2, augmentation="crop+erase", label_smoothing=0.1, ema_decay=0.99), id="onecycle"),
    pytest.param(TrainingRecipe(optimizer="adamw", weight_decay=0.05, schedule="cosine-warmup", warmup=0.2, augmentation="crop+flip"), id="cosine-warmup"),
])
def test_training_with_a_recipe_learns_and_repeats_exactly_with_the_same_seed(recipe: TrainingRecipe) -> None:
    from nas_core.assemble import assemble
    from nas_core.data import load_dataset
    from nas_core.evaluate import measure_model, set_seed, train_model
    from nas_core.genotype import Architecture, BlockSpec, HeadSpec

    data = load_dataset("digits", seed=0, train_samples=400)
    arch = Architecture((1, 8, 8), 10, ((BlockSpec("conv", {"out_channels": 8}), BlockSpec("pool", {"mode": "max"})),), HeadSpec("flatten"))
    recipe = replace(recipe, epochs=4, patience=4, lr=3e-3)
    states = []
    for _ in range(2):
        set_seed(3)
        model = assemble(arch)
        train_model(model, data, recipe, device=torch.device("cpu"), seed=3)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert measure_model(model, data, torch.device("cpu"))["metrics"]["val_accuracy"] > 0.3  # chance is 0.1


def test_a_config_without_precision_retrains_in_float32_and_the_space_asks_for_auto(tiny_study) -> None:  # type: ignore[no-untyped-def]
    from nas_core.search.seeds import known_good_designs
    from nas_core.space import get_space

    data = json.loads(tiny_study.best_config.read_text())
    assert data["training"]["precision"] == "auto"  # what a search now writes
    data["training"].pop("precision")
    assert ModelConfig.from_dict(data).training.precision == "fp32"  # configs from before the key: trained in float32
    values = known_good_designs("seed-cnn", (1, 28, 28))[0][1]
    _, recipe = get_space("seed-cnn").build(values, input_shape=(1, 28, 28), num_classes=10, epochs=3)
    assert recipe.precision == "auto"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_for_larger_images_on_hardware_that_computes_it(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(recipes, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert recipes.resolve_precision("auto", cpu, (64, 1, 28, 28)) == ("bf16" if native else "fp32")
    assert recipes.resolve_precision("auto", cpu, (1, 8, 8)) == "fp32"  # digits: too small to gain
    assert recipes.resolve_precision("auto", cpu, (60000, 784)) == "fp32"  # a batch of feature rows is not an image
    assert recipes.resolve_precision("fp32", cpu, (1, 28, 28)) == "fp32"
    assert recipes.resolve_precision("bf16", cpu, (1, 8, 8)) == "bf16"  # asked for: done, wherever


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")], ids=["ampere", "t4-emulated"])
def test_auto_precision_on_cuda_takes_bf16_only_where_the_gpu_computes_it(monkeypatch: pytest.MonkeyPatch, native: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # torch's own default counts emulation as support (a T4 says yes); only native support may turn bf16 on
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert recipes.resolve_precision("auto", torch.device("cuda"), (1, 28, 28)) == expected


def _conv_dtypes(precision: str) -> tuple[set[torch.dtype], float, dict[str, torch.Tensor]]:
    from types import SimpleNamespace

    from nas_core.assemble import assemble
    from nas_core.evaluate import set_seed, train_model
    from nas_core.genotype import Architecture, BlockSpec, HeadSpec

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (256,), generator=gen)
    x = torch.randn(256, 1, 20, 20, generator=gen) * 0.3
    x[torch.arange(256), 0, y * 5, y * 5] += 3.0  # each class lights its own pixel: learnable in a few epochs
    data = SimpleNamespace(x_train=x[:192], y_train=y[:192], x_val=x[192:], y_val=y[192:])
    arch = Architecture((1, 20, 20), 4, ((BlockSpec("conv", {"out_channels": 8}), BlockSpec("pool", {"mode": "max"})),), HeadSpec("flatten"))
    set_seed(0)
    model = assemble(arch)
    seen: set[torch.dtype] = set()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype) if _m.training else None)
    recipe = TrainingRecipe(epochs=6, patience=7, lr=3e-3, schedule="onecycle", warmup=0.2, precision=precision)
    hist = train_model(model, data, recipe, device=torch.device("cpu"), seed=0)
    return seen, hist[-1]["val_accuracy"], model.state_dict()


def test_bf16_training_computes_the_convolutions_in_bfloat16_keeps_float32_weights_learns_and_repeats() -> None:
    seen, acc, state = _conv_dtypes("bf16")
    assert seen == {torch.bfloat16}
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # what is saved and exported stays float32
    assert acc > 0.6  # chance is 0.25
    again = _conv_dtypes("bf16")[2]
    assert all(torch.equal(state[k], again[k]) for k in state)
    seen32, acc32, state32 = _conv_dtypes("fp32")
    assert seen32 == {torch.float32} and acc32 > 0.6
    assert not all(torch.equal(state[k], state32[k]) for k in state)  # the arithmetic did change


def test_label_smoothing_reaches_the_loss() -> None:
    from nas_core.assemble import assemble
    from nas_core.data import load_dataset
    from nas_core.evaluate import set_seed, train_model
    from nas_core.genotype import Architecture, BlockSpec, HeadSpec

    data = load_dataset("digits", seed=0, train_samples=300)
    arch = Architecture((1, 8, 8), 10, ((BlockSpec("conv", {"out_channels": 8}),),), HeadSpec("avg"))
    losses = []
    for smoothing in (0.0, 0.3):
        set_seed(0)
        hist = train_model(assemble(arch), data, TrainingRecipe(epochs=1, label_smoothing=smoothing), device=torch.device("cpu"), seed=0)
        losses.append(hist[0]["train_loss"])
    assert losses[0] != losses[1]


def test_a_training_its_time_box_will_cut_compresses_its_schedule_and_ends_annealed_inside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``train_model(time_left=)``: on a clock where each epoch takes one second and the box holds six, a 12-epoch one-cycle
    run does not train to the box's edge mid-schedule: from its third epoch (the first two paced it) it compresses the rest
    into the epochs that fit with the margin, ends there annealed, and says so in its rows and to ``on_epoch``."""
    from types import SimpleNamespace

    from nas_core.data import load_dataset
    from nas_core.model.assembly import assemble
    from nas_core.search import SearchConfig
    from nas_core.search.seeds import known_good_designs, replay
    from nas_core.training import loop

    data = load_dataset("digits", seed=0, train_samples=300)
    space = SearchConfig(dataset="digits").search_space()
    arch, recipe = space.build(replay(space, known_good_designs("seed-cnn", (1, 8, 8))[0][1]), input_shape=(1, 8, 8), num_classes=10,
                               epochs=12)
    assert recipe.schedule == "onecycle" and recipe.ema_decay > 0
    averaged = replace(recipe, patience=12)
    recipe = replace(averaged, ema_decay=0.0)  # compressed only without weight averaging (see ANNEAL_SPARE's note)
    made: list = []
    make = recipes.make_scheduler
    monkeypatch.setattr(recipes, "make_scheduler", lambda *a, **k: made.append(make(*a, **k)) or made[-1])
    clock = [0.0]
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    totals: list[int] = []

    def on_epoch(epoch: int, total: int, row: dict) -> None:
        totals.append(total)
        clock[0] += 1.0

    batches: list[int] = []

    def run(recipe: TrainingRecipe = recipe, **box: object) -> list[dict]:
        clock[0] = 0.0
        totals.clear()
        batches.clear()
        return loop.train_model(assemble(arch), data, recipe, device=torch.device("cpu"), on_epoch=on_epoch,
                                should_stop=lambda: bool(batches.append(1)), time_up=lambda: clock[0] >= 6, **box)  # type: ignore[arg-type]

    cut = run()  # before: trained to the box, cut at the start of epoch 7, mid-schedule
    assert len(cut) == 6 and "schedule_epochs" not in cut[-1]
    assert made[-1][0].get_last_lr()[0] > 0.5 * recipe.lr
    annealed = run(time_left=lambda: 6 - clock[0])
    fit = 2 + int((6 - 2) / 1.0 - loop.ANNEAL_SPARE)  # decided before epoch 3: the 4 s left fit 3 epochs and a spare
    assert [r["epoch"] for r in annealed] == list(range(1, fit + 1)) and fit < 6
    assert [r.get("schedule_epochs") for r in annealed] == [None, None] + [fit] * (fit - 2)
    assert totals == [12, 12] + [fit] * (fit - 2)
    assert made[-1][0].get_last_lr()[0] < 1e-4 * recipe.lr  # the schedule ran to its end
    # with an EMA of the weights the schedule is not compressed; the run ends when not one more epoch fits, at the box's
    # edge, without starting a seventh epoch that the box would cut and drop (5 batches an epoch)
    cut = run(averaged)
    assert len(cut) == 6 and len(batches) == 6 * 5 + 1  # the box is seen at the seventh epoch's first batch
    ended = run(averaged, time_left=lambda: 6 - clock[0])
    assert len(ended) == 6 and len(batches) == 6 * 5 and not any("schedule_epochs" in r for r in ended)
    assert totals == [12] * 6
