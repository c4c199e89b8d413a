"""The budget planner and the final training it pays for: the split, the fitted epochs, and train --config repeating the result."""

from __future__ import annotations

import io
import json
import statistics
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from nas_core.budget import FINAL_EPOCH_FACTOR, FINAL_SHARE, ONE_TRAINING_FIT, one_training_epochs, plan_budget
from nas_core.final_training import MEASURE_S, SLACK, fit_epochs
from nas_core.search import SearchConfig, run_search

# searches with --timeout budgets of seconds and a planner that times epochs here: run alone (scripts/test.sh), not beside
# another test process that changes the pace mid-run
pytestmark = pytest.mark.serial


def test_the_train_fidelity_keeps_the_end_of_the_timeout_for_the_final_training() -> None:
    plan = plan_budget(timeout=100, two_phase=False)
    assert (plan.search_s, plan.finalists_s, plan.final_s) == pytest.approx((100 * (1 - FINAL_SHARE), 0.0, 100 * FINAL_SHARE))
    rows = dict(plan.rows())
    assert rows["search (trials)"] == "60 s (60%)" and rows["final training of the best"] == "40 s (40%)"
    assert "| final training of the best | 40 s (40%) |" in plan.markdown()


def test_two_phase_fidelities_give_the_fine_tune_their_share() -> None:
    plan = plan_budget(timeout=100, two_phase=True, options={"finetune_share": 0.3})
    assert (plan.search_s, plan.finalists_s, plan.final_s) == pytest.approx((70.0, 30.0, 0.0))
    plan = plan_budget(timeout=100, two_phase=True, options={"finetune_seconds": 25})
    assert (plan.search_s, plan.finalists_s, plan.final_s) == (100.0, 25.0, 0.0)


def test_no_timeout_plans_nothing() -> None:
    plan = plan_budget(timeout=None, two_phase=False)
    assert plan.search_s is None and plan.final_s == 0.0 and "No --timeout" in plan.note
    assert dict(plan.rows())["search (trials)"] == "no limit"


@pytest.mark.parametrize(
    "left, per_epoch, search_epochs, want",
    [
        (1000.0, 1.0, 20, 100),  # capped at FINAL_EPOCH_FACTOR x the search epochs
        (25.0, 1.0, 20, int((25 - MEASURE_S) * SLACK)),
        (5.5, 1.0, 20, 0),  # nothing fits once the measurement is kept back
        (100.0, float("nan"), 7, 7),  # no timing known: the search's epochs
    ],
)
def test_final_epochs_fit_the_time_left(left: float, per_epoch: float, search_epochs: int, want: int) -> None:
    assert FINAL_EPOCH_FACTOR == 5
    assert fit_epochs(seconds_left=left, seconds_per_epoch=per_epoch, search_epochs=search_epochs) == want


def test_a_timed_search_refits_its_best_and_train_config_repeats_it_exactly(tmp_path: Path) -> None:
    from nas_core.cli import main

    # no --val-samples: `train --config` rebuilds the splits from the config's provenance and --train-samples
    cfg = SearchConfig(dataset="digits", trials=2, epochs=2, patience=2, train_samples=300, seed=0, device="cpu",
                       workspace=str(tmp_path), study="timed", tracking=False, timeout=300)
    result = run_search(cfg)
    best = json.loads(Path(result.best_config).read_text())
    training, metrics, prov = best["training"], best["metrics"], best["provenance"]
    assert training["train_split"] == "train+val" and training["epochs"] == FINAL_EPOCH_FACTOR * 2
    assert prov["final_training"]["epochs"] == training["epochs"]
    assert metrics["epochs_trained"] == training["epochs"] and "search_test_accuracy" in metrics
    summary = (tmp_path / "timed" / "summary.md").read_text()
    assert "## Budget" in summary and "## Final training" in summary and "refit on train + validation" in summary
    assert (tmp_path / "timed" / "best_weights.safetensors").exists()

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["train", "--config", result.best_config, "--workspace", str(tmp_path), "--train-samples", "300",
                     "--device", "cpu", "--quiet"]) == 0
    again = json.loads(out.getvalue().strip().splitlines()[-1])
    assert again["test_accuracy"] == metrics["test_accuracy"] and again["params"] == metrics["params"]
    # the refit trained on the validation split too: it counts in the training size, and no validation score is claimed
    from nas_core.data import load_dataset

    assert again["train_size"] == 300 + len(load_dataset("digits", seed=0).y_val)
    assert again["val_accuracy"] is None and again["val_macro_f1"] is None
    assert again["epochs_trained"] == training["epochs"]
    # the refit's epoch time was planned from its trial's epochs without their validation (the refit does not validate)
    study = optuna.load_study(study_name="timed", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    final = study.user_attrs["final_training"]
    from nas_core.schema.record import trial_record

    rows = trial_record(study.trials[final["trial"]])["history"]
    assert all(0 < r["val_seconds"] < r["seconds"] for r in rows)
    data = load_dataset("digits", seed=0, train_samples=300)
    want = statistics.median(r["seconds"] - r["val_seconds"] for r in rows) * (300 + len(data.y_val)) / 300
    assert final["seconds_per_epoch"] == pytest.approx(want)


def test_a_refit_skips_validation_and_trains_the_same_weights() -> None:
    """A refit on train + validation keeps its last epoch, so its validation (of images it trained on) is skipped; the
    weights are the same as with it, so `train --config`, which validates, repeats the refit exactly."""
    from dataclasses import replace

    from nas_core.data import load_dataset
    from nas_core.model.assembly import assemble
    from nas_core.search.seeds import known_good_designs, replay
    from nas_core.training.loop import train_model

    data = load_dataset("digits", seed=0, train_samples=300)
    space = SearchConfig(dataset="digits").search_space()
    arch, recipe = space.build(replay(space, known_good_designs("seed-cnn", (1, 8, 8))[0][1]), input_shape=(1, 8, 8), num_classes=10, epochs=3)
    with pytest.raises(ValueError, match="refit on train"):
        train_model(assemble(arch), data, recipe, device=torch.device("cpu"), validate=False)
    refit = replace(recipe, train_split="train+val", patience=3)
    models, histories = [], []
    for validate in (True, False):
        torch.manual_seed(0)
        model = assemble(arch)
        histories.append(train_model(model, data, refit, device=torch.device("cpu"), seed=0, validate=validate))
        models.append(model.state_dict())
    checked, skipped = histories
    assert [r["epoch"] for r in skipped] == [1, 2, 3] and all("val_accuracy" not in r for r in skipped)
    assert all("val_accuracy" in r and r["val_seconds"] > 0 for r in checked)
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])


def test_a_search_without_timeout_has_no_final_training(tiny_study) -> None:  # type: ignore[no-untyped-def]
    best = json.loads(tiny_study.best_config.read_text())
    assert best["training"]["train_split"] == "train" and "final_training" not in best["provenance"]
    summary = (tiny_study.workspace / tiny_study.study / "summary.md").read_text()
    assert "No --timeout" in summary and "## Final training" not in summary


@pytest.mark.parametrize(
    ("left", "per_epoch", "epochs", "want"),
    [
        (3600.0, 120.0, 20, 25),  # Fashion-MNIST on one CPU thread: one 20-epoch trial takes 2,400 s
        # two 20-epoch trials (3,400 s) fit the hour but not the trials' 2,160 s: measured, the second was cut at the
        # search's deadline and the 1,440 s left fitted a 12-epoch refit, not kept; the hour ended with one 20-epoch trial
        (3600.0, 85.0, 20, 36),
        (1000.0, 14.0, 20, 60),  # two trials fit the trials' 600 s, a 20-epoch refit (448 s planned) not the final 400 s
        (1000.0, 10.0, 20, None),  # both fit
        (90.0, 0.7, 20, None),  # digits: many trials fit, the search runs as usual
        (100.0, 1.0, 60, 85),  # 1.7 trials of 60 epochs fit: one training of 85
        (10.0, 100.0, 20, 1),  # not even one epoch fits: one epoch rather than a trial cut by the deadline
        (100.0, float("nan"), 20, None),  # no timing: search as usual
    ],
)
def test_a_budget_that_fits_too_few_trials_is_one_training(left: float, per_epoch: float, epochs: int, want: int | None) -> None:
    assert ONE_TRAINING_FIT == 2
    assert one_training_epochs(left_s=left, seconds_per_epoch=per_epoch, epochs=epochs) == want


def test_a_timeout_too_short_for_a_search_trains_the_first_known_good_design_once(tmp_path: Path) -> None:
    """500 epochs a trial cannot fit twice in 15 s even on 300 digits: the 4-conv design trains once, for the epochs that fit."""
    cfg = SearchConfig(dataset="digits", trials=5, epochs=500, patience=2, train_samples=300, seed=0, device="cpu",
                       workspace=str(tmp_path), study="one", tracking=False, timeout=15)
    result = run_search(cfg)
    study = optuna.load_study(study_name="one", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    one = study.user_attrs["one_training"]
    assert one["design"] == "4-conv BN CNN" and 1 <= one["epochs"] <= 1000 and one["seconds_per_epoch"] > 0
    assert study.user_attrs["budget_plan"]["note"].startswith("One training") and study.user_attrs["budget_plan"]["final_s"] == 0
    assert [t.user_attrs.get("known_good") for t in study.trials] == ["4-conv BN CNN"]  # no other trial started
    assert result.n_complete == 1 and "final_training" not in study.user_attrs
    best = json.loads(Path(result.best_config).read_text())
    # `train --config` repeats it: on the training and validation splits, with no other design for the validation split to
    # choose among; its validation score is then marked as not held out wherever it is shown
    assert best["training"]["epochs"] == one["epochs"] and best["training"]["train_split"] == one["train_split"] == "train+val"
    assert best["metrics"]["val_trained_on"] == 1.0
    summary = (tmp_path / "one" / "summary.md").read_text()
    assert f"val {best['metrics']['val_accuracy']:.4f} (trained on), test" in summary and "is not held out" in summary
    assert "on the training and validation splits" in study.user_attrs["budget_plan"]["note"]
    pareto = (tmp_path / "one" / "pareto.csv").read_text().splitlines()
    assert pareto[0].endswith(",val_held_out") and pareto[1].endswith(",false")
    from nas_core.views import trials_frame

    frame = trials_frame(study)  # the Results page's table: a "val held out" column, unticked, beside val acc
    assert frame["val_held_out"].tolist() == [False] and list(frame.columns).index("val_held_out") == list(frame.columns).index("val_accuracy") + 1
    # the pages a user opens: the Results table's column and the Best Model page's label say it, with no error
    from conftest import open_app

    at = open_app(tmp_path, "results")
    assert any("val_held_out" in df.value.columns and df.value["val_held_out"].tolist() == [False] for df in at.dataframe)
    at.switch_page("app_pages/best_model.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Val accuracy (trained on)" in [m.label for m in at.metric]
    # no early stop (patience 2 asked for the search's trials): the schedule runs to its annealed end, unless this machine
    # turned slower than timed and the deadline cut it, which the config then says (on a quiet machine it is not cut)
    assert best["training"]["patience"] == one["epochs"]
    cut = best["provenance"].get("cut_by_budget")
    assert best["metrics"]["epochs_trained"] == (cut["after_epoch"] if cut else one["epochs"]) and (cut is None or cut["of"] == one["epochs"])
    assert any(w.startswith("One training") for w in result.warnings)


def test_a_one_training_the_machine_turns_too_slow_for_keeps_the_model_of_its_last_whole_epoch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one training's epochs are fitted to a timing; when the machine then runs slower (other work on its cores), the
    deadline ends it with the model it has, recorded as cut, not an hour's training that yields nothing. Made slow on
    purpose: an epoch timed at 0.05 s, each real one made >= 0.25 s by a listener that sleeps on every epoch's report."""
    import time

    from nas_core.data import load_dataset
    from nas_core.events import EpochProgress
    from nas_core.schema.record import trial_record
    from nas_core.training import loop

    monkeypatch.setattr(loop, "time_epoch", lambda *args, **kwargs: 0.05)
    cfg = SearchConfig(dataset="digits", trials=5, epochs=500, patience=2, train_samples=300, seed=0, device="cpu",
                       workspace=str(tmp_path), study="slow", tracking=False, timeout=10)
    result = run_search(cfg, emit=lambda event: time.sleep(0.25) if isinstance(event, EpochProgress) else None)
    study = optuna.load_study(study_name="slow", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    one = study.user_attrs["one_training"]
    # it trains on the training and validation splits (300 + ~270 images): an epoch ~1.9x the 0.05 s given for the training
    # split, ~89 epochs planned; ~40 fit at >= 0.25 s
    grow = 0.05 * (300 + len(load_dataset("digits", seed=0, train_samples=300).y_val)) / 300
    assert one["design"] == "4-conv BN CNN" and one["seconds_per_epoch"] == round(grow, 3) and one["epochs"] >= 60
    assert [t.state.name for t in study.trials] == ["COMPLETE"] and result.n_complete == 1
    metrics = trial_record(study.trials[0])["metrics"]
    assert 1 <= metrics["epochs_trained"] < one["epochs"] and metrics["test_accuracy"] > 0.5  # a trained model, not nothing
    best = json.loads(Path(result.best_config).read_text())
    assert best["provenance"]["cut_by_budget"]["after_epoch"] == metrics["epochs_trained"] == best["metrics"]["epochs_trained"]
    assert best["provenance"]["cut_by_budget"]["of"] == one["epochs"] == best["training"]["epochs"]  # train --config: the whole schedule
    assert any("was cut by the time budget" in w for w in result.warnings)
    # the design's recipe averages its weights (EMA), so its schedule is not compressed (train_model(time_left=))
    history = trial_record(study.trials[0])["history"]
    assert best["provenance"]["cut_by_budget"]["annealed"] is False and not any("schedule_epochs" in r for r in history)


def test_a_final_training_the_machine_turns_too_slow_for_is_kept_with_its_last_whole_epoch(tmp_path: Path) -> None:
    """The final refit's epochs are fitted to its trial's pace; when the machine then runs slower, it used to run into its
    cut and be thrown away (the trial stayed the result). Now the cut is its time box: it ends with its last whole epoch
    and is kept, recorded as cut. Made slow on purpose: a listener sleeps 1.5 s on each of the refit's epochs (~0.05 s
    each), so its 15 epochs need 22.5 s, more than the cut allows even when the search left it all 15 s (15 s + a quarter).
    (With 1 s a quiet machine fitted all 15 inside the cut.)"""
    import time

    from nas_core.events import EpochProgress

    cfg = SearchConfig(dataset="digits", trials=1, epochs=3, patience=3, train_samples=300, seed=0, device="cpu",
                       workspace=str(tmp_path), study="slow-final", tracking=False, timeout=15)
    result = run_search(cfg, emit=lambda e: time.sleep(1.5) if isinstance(e, EpochProgress) and e.metrics.get("phase") == "final" else None)
    study = optuna.load_study(study_name="slow-final", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    final = study.user_attrs["final_training"]
    assert final["epochs"] == 15, final  # FINAL_EPOCH_FACTOR x --epochs fit at the trial's pace: 15 s at the slowed one
    assert final["kept"], final
    cut = final["cut_by_budget"]
    assert 2 < cut["after_epoch"] < cut["of"] == 15
    best = json.loads(Path(result.best_config).read_text())
    assert best["provenance"]["cut_by_budget"] == cut and best["training"]["epochs"] == 15  # train --config: the whole schedule
    assert best["metrics"]["epochs_trained"] == cut["after_epoch"] and best["metrics"]["test_accuracy"] > 0.5
    assert cut["annealed"] is False  # the design's recipe averages its weights: not compressed
    assert any(w.startswith("The final training") and "it keeps its last whole epoch" in w for w in result.warnings)
    assert "the time budget ended it with its last whole epoch" in (tmp_path / "slow-final" / "summary.md").read_text()


def test_a_time_box_before_the_first_whole_epoch_is_a_stop() -> None:
    """A time-boxed training keeps its last whole epoch; with none yet there is nothing to keep, and it stops as a Stop does."""
    from nas_core.data import load_dataset
    from nas_core.model.assembly import assemble
    from nas_core.search.seeds import known_good_designs, replay
    from nas_core.training.loop import train_model
    from nas_core.training.stops import StopRequested

    data = load_dataset("digits", seed=0, train_samples=300)
    space = SearchConfig(dataset="digits").search_space()
    arch, recipe = space.build(replay(space, known_good_designs("seed-cnn", (1, 8, 8))[0][1]), input_shape=(1, 8, 8), num_classes=10, epochs=3)
    with pytest.raises(StopRequested, match="before a whole epoch"):
        train_model(assemble(arch), data, recipe, device=torch.device("cpu"), time_up=lambda: True)
    boxes: list[int] = []
    history = train_model(assemble(arch), data, recipe, device=torch.device("cpu"),
                          time_up=lambda: bool(boxes.append(1)) or len(boxes) > 7)  # 5 batches of 64 an epoch: cut in the second
    assert [row["epoch"] for row in history] == [1]


def test_the_epoch_timing_answers_a_stop_at_a_batch_boundary() -> None:
    """The one-training planner times the first design before the trials; a Stop pressed then is heard, not made to wait."""
    from nas_core.data import load_dataset
    from nas_core.model.assembly import assemble
    from nas_core.schema.config import TrainingRecipe
    from nas_core.search.seeds import known_good_designs, replay
    from nas_core.training.loop import time_epoch
    from nas_core.training.stops import StopRequested

    data = load_dataset("digits", seed=0, train_samples=300)
    space = SearchConfig(dataset="digits").search_space()
    arch, recipe = space.build(replay(space, known_good_designs("seed-cnn", (1, 8, 8))[0][1]), input_shape=(1, 8, 8), num_classes=10, epochs=3)
    assert isinstance(recipe, TrainingRecipe)
    assert time_epoch(assemble(arch), data, recipe, device=torch.device("cpu")) > 0
    calls = []
    with pytest.raises(StopRequested):
        time_epoch(assemble(arch), data, recipe, device=torch.device("cpu"), should_stop=lambda: bool(calls.append(1)) or len(calls) > 2)
    assert len(calls) == 3  # stopped at the third batch, not after two epochs


def test_the_epoch_timing_is_not_thrown_by_one_slow_epoch() -> None:
    """A burst of other work during one slice epoch (a tracking process starting, another job loading data) must not
    become the plan: the fastest epoch after the first is the one scaled up."""
    import time

    from nas_core.data import load_dataset
    from nas_core.model.assembly import assemble
    from nas_core.search.seeds import known_good_designs, replay
    from nas_core.training.loop import time_epoch

    data = load_dataset("digits", seed=0, train_samples=320)  # 5 batches of 64 an epoch
    space = SearchConfig(dataset="digits").search_space()
    arch, recipe = space.build(replay(space, known_good_designs("seed-cnn", (1, 8, 8))[0][1]), input_shape=(1, 8, 8), num_classes=10, epochs=3)
    calls: list[int] = []

    def busy_second_epoch() -> bool:  # should_stop is asked before every batch: calls 6-10 are the second epoch's
        calls.append(1)
        if 6 <= len(calls) <= 10:
            time.sleep(0.5)
        return False

    quiet = time_epoch(assemble(arch), data, recipe, device=torch.device("cpu"))
    burst = time_epoch(assemble(arch), data, recipe, device=torch.device("cpu"), should_stop=busy_second_epoch)
    assert len(calls) == 15  # three epochs were timed
    # the second epoch was 2.5 s slower; the estimate did not take it (the margin is for the load on a shared machine:
    # 0.5 s failed once with both cores busy and a third process on them)
    assert burst < quiet + 1.0


def test_a_timed_trial_that_cannot_finish_is_pruned_after_an_epoch_and_the_search_goes_on(tmp_path: Path) -> None:
    """5,000 epochs of any candidate cannot fit in 60 s: each trial is pruned after its first epoch, with the reason,
    instead of holding the budget until the deadline cuts it; the trials budget then ends the search, long before --timeout."""
    from nas_core.schema.record import trial_record
    from nas_core.search import FIT_MARGIN

    cfg = SearchConfig(dataset="digits", trials=3, epochs=5000, patience=5000, train_samples=300, seed=0, device="cpu", sampler="random",
                       workspace=str(tmp_path), study="unfit", tracking=False, timeout=60, known_good=False)
    result = run_search(cfg)
    study = optuna.load_study(study_name="unfit", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 3
    for t in study.trials:
        assert trial_record(t)["reason"].startswith("would not finish within --timeout"), trial_record(t)["reason"]
    assert result.reason == "no trials completed" and result.wall_s < 60 / FIT_MARGIN


@pytest.mark.parametrize("second_screen_s", [None, 1000.0])
def test_a_known_good_design_whose_screen_pace_cannot_finish_is_not_trained_once_a_trial_has_completed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second_screen_s: float | None) -> None:
    """Digits, the two known-good designs, 3 epochs, 600 s (the search's share: 360 s). The first trains in full. The
    second's screen epoch is reported at 1,000 s here (its 3 epochs then need ~3,000 s): it ends right after its screen,
    with the reason, instead of training until the share's end cuts it, and no trial starts after it (a sampled one
    would take the final training's time). At its real pace (about a second) it trains in full and the third trial, a
    sampled candidate, runs. (The budget is far from both, so a loaded machine does not change the outcome.)"""
    from nas_core.schema.record import trial_record
    from nas_core.training import screening

    real = screening.screen_candidate
    calls: list[int] = []

    def screen(*args: object, **kwargs: object) -> dict[str, object]:
        row = real(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == 2 and second_screen_s is not None:
            row["seconds"] = second_screen_s  # this machine's pace, as a slower machine would time it
        return row

    monkeypatch.setattr(screening, "screen_candidate", screen)
    cfg = SearchConfig(dataset="digits", trials=3, epochs=3, patience=3, train_samples=300, seed=0, device="cpu", sampler="random",
                       workspace=str(tmp_path), study="kg", tracking=False, timeout=600)
    run_search(cfg)
    study = optuna.load_study(study_name="kg", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    first, second = study.trials[:2]
    assert first.user_attrs["known_good"] == "4-conv BN CNN" and first.state == optuna.trial.TrialState.COMPLETE
    assert second.user_attrs["known_good"] == "small ResNet"
    if second_screen_s is None:
        assert second.state == optuna.trial.TrialState.COMPLETE and trial_record(second)["screen"]["promoted"] is True
        assert len(study.trials) == 3 and "known_good" not in study.trials[2].user_attrs
        return
    assert len(study.trials) == 2 and len(calls) == 2  # the trials ended with it
    assert second.state == optuna.trial.TrialState.PRUNED
    reason = trial_record(second)["reason"]
    assert reason.startswith("would not finish within the search's share of --timeout: small ResNet's screen epoch took 1000.0 s"), reason
    assert "3 epochs need ~3000 s" in reason
    assert not trial_record(second).get("history")  # not one full epoch ran
    # its screen row tells the same: not promoted, with that reason (summary.md counts it as screened out)
    assert trial_record(second)["screen"]["promoted"] is False and trial_record(second)["screen"]["reason"] == reason


@pytest.mark.parametrize(("wide_s", "timeout", "want", "n_timed"),
                         [(5.0, 40, "4-conv BN CNN, wide", 2), (10.0, 40, "4-conv BN CNN", 2), (5.0, 16, "4-conv BN CNN", 1)])
def test_the_one_training_takes_the_wider_design_when_the_budget_fits_its_epochs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wide_s: float, timeout: int, want: str, n_timed: int) -> None:
    """28x28 images: the planner times the 4-conv design and its wider variant; the wider one trains once when at least
    ONE_TRAINING_WIDER_EPOCHS of it fit. The timings are given here and the bar lowered to 5 epochs (of ~40 s), so the
    choice does not depend on this machine's speed and the training stays short. A timing costs three slice epochs, so
    the wider variant is not timed when the budget does not fit 5 epochs even of the 4-conv net (16 s: 3), nor the small
    companion when the time the one training would leave cannot fit its 12 epochs at 0.3 of the 4-conv net's epoch."""
    from nas_core.schema import budget
    from nas_core.schema.record import trial_record
    from nas_core.search.seeds import COMPANION

    monkeypatch.setattr(budget, "ONE_TRAINING_WIDER_EPOCHS", 5)
    monkeypatch.setattr(budget, "ONE_TRAINING_WIDER_RESERVE", 0)  # the bar alone (the reserve for the companion: below)
    # 40 s fits 8 epochs of the 4-conv design at the 4 s given here (real ones take ~0.5 s); 16 s fits 3
    timed, result, study = _one_training_on_squares(tmp_path, monkeypatch, "wide", timeout, wide=wide_s)
    one = study.user_attrs["one_training"]
    assert len(timed) == n_timed and timed[-1] == max(timed)  # the first design, then its wider variant if timed; not the companion
    if want.endswith("wide"):  # the small design trains from scratch, and 12 epochs of it do not fit
        assert "companion" not in one and [t.user_attrs.get("known_good") for t in study.trials] == [want]
    else:  # it has the 4-conv net's body: its head is fitted on it after (no timing), a second trial
        assert one["companion"]["mode"] == "head"
        assert [t.user_attrs.get("known_good") for t in study.trials] == [want, COMPANION]
    assert one["design"] == want
    assert result.best_config is not None, [(t.state.name, t.user_attrs.get("moca_record", {}).get("reason")) for t in study.trials]
    best = trial_record(study.trials[0])["config"]  # the one training's (the small design may be as accurate)
    assert best["training"]["epochs"] == one["epochs"] == best["metrics"]["epochs_trained"]
    convs = [b["params"]["out_channels"] for stage in best["architecture"]["stages"] for b in stage if b["kind"] == "conv"]
    if want.endswith("wide"):
        assert convs == [32, 64, 64, 128] and one["instead_of"] == {"design": "4-conv BN CNN", "seconds_per_epoch": 4.0}
        assert 5 <= one["epochs"] <= int(timeout * budget.ONE_TRAINING_SLACK / wide_s)
        assert "wider variant, 4-conv BN CNN, wide" in study.user_attrs["budget_plan"]["note"]
    else:  # 10 s an epoch fits fewer than 5 epochs of it: the 4-conv net trains
        assert convs == [32, 32, 64, 64] and "instead_of" not in one and one["epochs"] > (5 if timeout == 40 else 0)
        if n_timed == 2:  # timed and passed over: the plan says why, with the timing
            over = one["passed_over"]
            assert over["design"] == "4-conv BN CNN, wide" and over["seconds_per_epoch"] == wide_s and over["epochs_that_fit"] < 5
            assert "4-conv BN CNN, wide, takes ~10 s an epoch here" in study.user_attrs["budget_plan"]["note"]
            assert "fewer than 5, so it does not train" in study.user_attrs["budget_plan"]["note"]
        else:
            assert "passed_over" not in one


def _squares(tmp_path: Path) -> str:
    """100 28x28 images in two classes (a bright square or not), as an .npz dataset."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(100) % 2
    x = rng.integers(0, 60, (100, 28, 28), dtype=np.uint8)
    x[y == 1, 8:20, 8:20] = 255
    np.savez(tmp_path / "squares.npz", x=x, y=y)
    return str(tmp_path / "squares.npz")


def _one_training_on_squares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, study: str, timeout: float, *, wide: float,
                             small: float = 4.0) -> tuple[list[int], Any, optuna.Study]:
    """A search on :func:`_squares` that --epochs 500 turns into the one training, with each design's epoch timing given
    by its size (the wide net has ~0.9M parameters, the 4-conv net ~0.47M at 4 s, the small design ~97K) so the plan does
    not depend on this machine's speed: the parameter counts of the designs timed, in order, the result and the study."""
    from nas_core.training import loop

    timed: list[int] = []

    def fake_time_epoch(model: torch.nn.Module, *args: object, **kwargs: object) -> float:
        params = sum(p.numel() for p in model.parameters())
        timed.append(params)
        return wide if params > 600_000 else 4.0 if params > 100_000 else small

    monkeypatch.setattr(loop, "time_epoch", fake_time_epoch)
    cfg = SearchConfig(dataset=_squares(tmp_path), trials=5, epochs=500, patience=2, seed=0, device="cpu",
                       workspace=str(tmp_path), study=study, tracking=False, timeout=timeout)
    result = run_search(cfg)
    return timed, result, optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_the_time_the_wide_one_training_leaves_trains_the_small_companion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """28x28 images: after the one training of the wide net (whose body is not the small design's), the time it left fits
    enough epochs of the small design (given timings, the bars lowered to 5 and 3 epochs): it trains next from scratch
    with its epochs fitted to that time, a <= 100K-parameter point of the front; then nothing else starts. The one
    training's own result is unchanged by it."""
    from nas_core.schema import budget
    from nas_core.schema.record import trial_record
    from nas_core.search.seeds import COMPANION

    monkeypatch.setattr(budget, "ONE_TRAINING_WIDER_EPOCHS", 5)
    monkeypatch.setattr(budget, "ONE_TRAINING_COMPANION_EPOCHS", 3)
    monkeypatch.setattr(budget, "ONE_TRAINING_WIDER_RESERVE", 3)  # 6 s kept for the companion: 5 epochs of the wide net still fit
    timeout = 50  # 7 epochs of the wide design at the 5 s given; real ones take ~1 s, so ~35 s are left
    _, result, study = _one_training_on_squares(tmp_path, monkeypatch, "pair", timeout, wide=5.0, small=2.0)  # the wide net fits
    one = study.user_attrs["one_training"]
    assert [t.user_attrs.get("known_good") for t in study.trials] == ["4-conv BN CNN, wide", COMPANION]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    companion = one["companion"]
    assert companion["design"] == COMPANION and companion["seconds_per_epoch"] == 2.0 and "mode" not in companion
    assert companion["reserved_s"] == 6.0 and one["epochs"] <= int((timeout - 6.0) * budget.ONE_TRAINING_SLACK / 5.0)
    assert 3 <= companion["epochs"] <= int(timeout * budget.ONE_TRAINING_SLACK / 2.0)
    main, small = (trial_record(t)["metrics"] for t in study.trials)
    assert main["epochs_trained"] == one["epochs"] and small["epochs_trained"] == companion["epochs"]  # both schedules run out
    assert small["params"] <= 100_000 < main["params"]
    assert "body_from" not in trial_record(study.trials[1])["config"]["provenance"]
    assert any("left time for" in w for w in result.warnings) and result.n_complete == 2
    assert f"trains the small design {COMPANION}" in study.user_attrs["budget_plan"]["note"]  # the plan the pages show


def test_the_wide_net_trains_only_when_the_budget_also_keeps_the_small_companions_epochs_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """28x28 images: the wide net's bar (lowered to 5 epochs) fits the budget on its own (60 s at 5 s an epoch, once the
    set-up has taken up to ~30 s), but its body is not the small design's, so the small design would train from scratch
    after it: the planner times the small design and keeps ONE_TRAINING_WIDER_RESERVE (20) epochs of it, 40 s, after the
    wide net; then 5 epochs of the wide net cannot fit, so the 4-conv net trains and the small design's head is fitted on
    its body. The plan says why."""
    from nas_core.schema import budget
    from nas_core.search.seeds import COMPANION

    monkeypatch.setattr(budget, "ONE_TRAINING_WIDER_EPOCHS", 5)
    monkeypatch.setattr(budget, "ONE_TRAINING_WIDER_RESERVE", 20)
    timed, result, study = _one_training_on_squares(tmp_path, monkeypatch, "reserve", 60, wide=5.0, small=2.0)
    one = study.user_attrs["one_training"]
    assert len(timed) == 3 and min(timed) < 100_000  # the 4-conv net, the wide net, then the small design for the reserve
    assert one["design"] == "4-conv BN CNN" and "instead_of" not in one
    over = one["passed_over"]
    assert over["design"] == "4-conv BN CNN, wide" and over["companion_reserve_s"] == 40.0 and over["epochs_that_fit"] < 5
    assert one["companion"]["mode"] == "head" and result.n_complete == 2
    assert [t.user_attrs.get("known_good") for t in study.trials] == ["4-conv BN CNN", COMPANION]
    note = study.user_attrs["budget_plan"]["note"]
    assert f"less ~40 s kept after it for 20 epochs of the small design {COMPANION} from scratch" in note, note
    assert "fewer than 5, so it does not train" in note


def test_the_small_companion_with_the_one_trainings_body_fits_only_its_head_and_train_repeats_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """28x28 images, the 4-conv net as the one training (the wide net timed too slow): the small design has its body, so
    after it, that body is frozen and only the small design's head trains, on its features (no timing of the small
    design, no augmentation). Its weights keep the trained body bit for bit (batch-norm statistics included); its config
    names the body's trial and config; and `train --config` on it retrains that network, then the head, to the same
    test accuracy."""
    from safetensors.torch import load_file

    from nas_core.cli import main
    from nas_core.schema import budget
    from nas_core.schema.record import trial_record
    from nas_core.search.seeds import COMPANION
    from nas_core.training.frozen import HEAD_EPOCHS

    monkeypatch.setattr(budget, "ONE_TRAINING_WIDER_EPOCHS", 5)
    # the wide net does not fit 5 epochs; the 4-conv net trains
    timed, result, study = _one_training_on_squares(tmp_path, monkeypatch, "head", 40, wide=10.0)
    one = study.user_attrs["one_training"]
    assert len(timed) == 2 and max(timed) > 600_000  # the 4-conv net and the wide one; the small design is not timed
    assert [t.user_attrs.get("known_good") for t in study.trials] == ["4-conv BN CNN", COMPANION]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], [trial_record(t).get("reason") for t in study.trials]
    companion = one["companion"]
    assert companion["mode"] == "head" and companion["body_of"] == "4-conv BN CNN" and one["body_trial"] == 0
    assert companion["epochs"] == HEAD_EPOCHS and companion["seconds"] > 0 and companion["due"]
    main_rec, small_rec = (trial_record(t) for t in study.trials)
    small = small_rec["metrics"]
    assert small["params"] <= 100_000 < main_rec["metrics"]["params"] and small["epochs_trained"] == HEAD_EPOCHS
    # its body trained on the validation split (the one training's train + validation): neither score is held out
    assert main_rec["config"]["training"]["train_split"] == "train+val" and small["val_trained_on"] == main_rec["metrics"]["val_trained_on"] == 1.0
    assert small_rec["config"]["training"]["augmentation"] == "none"
    assert small_rec["fidelity_extra"]["frozen_body"] is True and small_rec["fidelity_extra"]["trainable_params"] < 100_000
    body_from = small_rec["config"]["provenance"]["body_from"]
    assert body_from["trial"] == 0 and body_from["design"] == "4-conv BN CNN" and body_from["frozen"] is True
    assert body_from["config"]["architecture"] == main_rec["config"]["architecture"]
    trained, fitted = (load_file(str(tmp_path / "head" / "weights" / f"trial_{n}.safetensors")) for n in (0, 1))
    body_keys = [k for k in trained if k.startswith("body.")]
    assert body_keys and all(torch.equal(trained[k], fitted[k]) for k in body_keys)  # frozen: the same body, statistics too
    assert not torch.equal(trained["head.3.weight"][:, :10], fitted["head.1.weight"][:, :10])  # its own head
    assert "has the same body" in study.user_attrs["budget_plan"]["note"]
    summary = (tmp_path / "head" / "summary.md").read_text()
    assert "(its head fitted on trial 0's body, frozen)" in summary  # the small point says how it was made
    # the default objectives (accuracy, latency): it is on the written front whatever the latencies measured, and Smallest
    assert (tmp_path / "head" / "pareto" / "trial_1.json").exists() and "- **Smallest**: trial 1 " in summary
    assert result.n_complete == 2

    path = tmp_path / "small.json"
    path.write_text(json.dumps(small_rec["config"]))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["train", "--config", str(path), "--workspace", str(tmp_path), "--device", "cpu", "--quiet"]) == 0
    again = json.loads(out.getvalue().strip().splitlines()[-1])
    assert again["params"] == small["params"] and again["epochs_trained"] == HEAD_EPOCHS
    assert again["init"].startswith("the body of 4-conv BN CNN, retrained from its config for")
    assert again["test_accuracy"] == small["test_accuracy"]
    repeated = load_file(again["weights"])  # the same network, bit for bit: the body's retraining and the head's
    assert all(torch.equal(repeated[k], fitted[k]) for k in fitted), [k for k in fitted if not torch.equal(repeated[k], fitted[k])]

    # the Best Model page's "Retrain longer" (a background job): the body's network first, then the head, counted as one
    from nas_core.jobs import start_retrain
    from nas_core.schema.config import ModelConfig

    job = start_retrain(ModelConfig.from_dict(small_rec["config"]), workspace=tmp_path, study="head", trial=1, epochs=2, device="cpu")
    assert job.wait(timeout=300) and job.status == "finished", job.error
    frac, text = job.progress()
    assert job.body_epochs == one["epochs"] and frac == 1.0 and text.startswith("the head: epoch 2 / 2"), text
    assert job.result["epochs_trained"] == 2 and job.result["init"].startswith("the body of 4-conv BN CNN")


def test_the_designs_are_timed_after_mlflow_has_set_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-training planner times its designs only once MLflow's writer has opened the study's run: its imports and
    store migrations would otherwise share the CPU with the timed epochs and shrink the plan (a Fashion-MNIST epoch timed
    beside them looked 168 s where the full ones took 116-125 s)."""
    import sqlite3

    from nas_core.training import loop

    runs_seen: list[int] = []

    def fake_time_epoch(*args: object, **kwargs: object) -> float:
        db = tmp_path / "mlflow.db"
        with sqlite3.connect(db) if db.exists() else sqlite3.connect(":memory:") as con:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            runs_seen.append(con.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0)
        return 1.0

    monkeypatch.setattr(loop, "time_epoch", fake_time_epoch)
    cfg = SearchConfig(dataset="digits", trials=2, epochs=500, patience=2, train_samples=200, val_samples=100, seed=0, device="cpu",
                       workspace=str(tmp_path), study="mlflow-first", tracking=True, timeout=6)
    run_search(cfg)
    assert runs_seen and all(n >= 1 for n in runs_seen), runs_seen  # the study's parent run existed at every timing


def test_the_plan_made_at_run_time_is_shown_as_it_is_made_and_the_bar_counts_its_trials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The one training is decided after the designs are timed, so the Budget plan shown before the run (60 % trials,
    40 % refit) is not what runs: `search` prints the plan made at run time before its trial starts, its bar counts the
    plan's one trial instead of --trials, and the plan is not repeated as a warning at the end; the runner's snapshot,
    which the Search page shows, carries it too."""
    from nas_core.cli import main
    from nas_core.jobs import SearchRunner
    from nas_core.training import loop

    monkeypatch.setattr(loop, "time_epoch", lambda *args, **kwargs: 0.05)  # ~100 epochs planned: the deadline cuts it
    events = tmp_path / "events.jsonl"
    argv = ["search", "--dataset", "digits", "--trials", "5", "--epochs", "500", "--patience", "2", "--train-samples", "300",
            "--seed", "0", "--device", "cpu", "--workspace", str(tmp_path), "--study", "plan", "--no-tracking", "--timeout", "6",
            "--events-jsonl", str(events)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    kinds = [json.loads(line) for line in events.read_text().splitlines()]
    made = [e for e in kinds if e["kind"] == "PlanMade"]
    assert len(made) == 1 and made[0]["trials"] == 1 and made[0]["note"].startswith("One training")
    assert kinds.index(made[0]) < next(i for i, e in enumerate(kinds) if e["kind"] == "TrialStarted")
    assert err.count(f"plan: {made[0]['note']}") == 1 and "warning: One training" not in err
    assert "1/1 [" in err and "/5 [" not in err  # the bar: the plan's one trial, not --trials 5

    runner = SearchRunner(SearchConfig(dataset="digits", trials=5, epochs=500, patience=2, train_samples=300, seed=0, device="cpu",
                                       workspace=str(tmp_path), study="plan-page", tracking=False, timeout=6))
    runner.start()
    assert runner.wait(120)
    snap = runner.snapshot()
    assert snap.status == "finished" and snap.trials_total == 1 and snap.plan_note.startswith("One training")


def test_the_usual_plan_fits_the_small_companions_head_on_the_first_designs_body_right_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """28x28 images, a budget the usual plan fits (an epoch timed at 0.01 s): the small companion, last in the known-good
    queue, has the 4-conv net's body, so once the 4-conv trial completes its head is fitted on that body, frozen, as the
    next trial (seed 14's Fashion-MNIST hour ran two trials and never reached the companion: no <= 100K point). Its body is
    the trial's bit for bit; its validation score is held out (the body trained on the training split); and it is never
    the best-accuracy pick that the final training refits from scratch."""
    from safetensors.torch import load_file

    from nas_core.schema.record import trial_record
    from nas_core.search.seeds import COMPANION
    from nas_core.training import loop
    from nas_core.training.frozen import HEAD_EPOCHS

    monkeypatch.setattr(loop, "time_epoch", lambda *args, **kwargs: 0.01)
    cfg = SearchConfig(dataset=_squares(tmp_path), trials=2, epochs=2, patience=2, seed=0, device="cpu",
                       workspace=str(tmp_path), study="usual", tracking=False, timeout=120)
    result = run_search(cfg)
    study = optuna.load_study(study_name="usual", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert "one_training" not in study.user_attrs and study.user_attrs["budget_plan"]["final_s"] > 0  # the usual plan
    assert [t.user_attrs.get("known_good") for t in study.trials] == ["4-conv BN CNN", COMPANION]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], [trial_record(t).get("reason") for t in study.trials]
    body, small = (trial_record(t) for t in study.trials)
    assert small["config"]["provenance"]["body_from"]["trial"] == 0 and small["config"]["provenance"]["body_from"]["design"] == "4-conv BN CNN"
    assert small["fidelity_extra"]["frozen_body"] is True and small["metrics"]["head_on_body"] == 1.0
    assert small["metrics"]["params"] <= 100_000 < body["metrics"]["params"] and small["metrics"]["epochs_trained"] == HEAD_EPOCHS
    assert small["config"]["training"]["augmentation"] == "none" and "val_trained_on" not in small["metrics"]
    trained, fitted = (load_file(str(tmp_path / "usual" / "weights" / f"trial_{n}.safetensors")) for n in (0, 1))
    body_keys = [k for k in trained if k.startswith("body.")]
    assert body_keys and all(torch.equal(trained[k], fitted[k]) for k in body_keys)
    assert any("has the body of trial 0" in w for w in result.warnings)
    final = study.user_attrs.get("final_training")
    assert final is not None and final["trial"] == 0  # the refit retrains the 4-conv net, never the head on its body
    best = json.loads(Path(result.best_config).read_text())
    assert "body_from" not in best["provenance"] and "(its head fitted on trial 0's body, frozen)" in (tmp_path / "usual" / "summary.md").read_text()


def test_the_refit_weighs_a_front_heads_body_beside_the_whole_networks_left_on_the_front() -> None:
    """A head fitted on a frozen body (the small companion) can dominate that body's trial off the front while another
    whole network stays on it. The refit, and the best_config.json that holds it, take the better of the two by
    validation accuracy (the body here), not the front's whole network only; with no whole network on the front and no
    body found, every complete whole network competes; with none at all, nothing is refit."""
    from nas_core.results.pareto import pick_points
    from nas_core.results.tables import pareto_rows, refit_trial

    def add(study: optuna.Study, val: float, ms: float, params: int, metrics: dict[str, float] | None = None,
            config: dict[str, Any] | None = None) -> None:
        row = {"val_accuracy": val, "test_accuracy": val, "latency_ms": ms, "params": params, **(metrics or {})}
        study.add_trial(optuna.trial.create_trial(values=[val, ms], user_attrs={"metrics": row, "config": config or {}}))

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "latency_ms"])
    add(study, 0.9476, 2.05, 468_010)  # 0: the 4-conv net, the body
    add(study, 0.9460, 1.00, 318_090)  # 1: the ResNet, faster: on the front
    add(study, 0.9480, 2.04, 96_554, metrics={"head_on_body": 1.0}, config={"provenance": {"body_from": {"trial": 0}}})  # 2: its head
    trials, metrics = pareto_rows(study)
    assert sorted(t.number for t in trials) == [1, 2]  # the head pushed its body off the front
    assert trials[pick_points(metrics)["best_accuracy"]].number == 1  # the front's best whole network
    best = refit_trial(study, trials, metrics)
    assert best is not None and best.number == 0

    lone = optuna.create_study(directions=["maximize", "minimize"])
    lone.set_user_attr("objectives", ["accuracy", "latency_ms"])
    add(lone, 0.90, 3.0, 400_000)
    add(lone, 0.93, 2.5, 300_000)
    add(lone, 0.95, 1.0, 90_000, metrics={"head_on_body": 1.0}, config={"provenance": {}})  # a head whose body is not named
    trials, metrics = pareto_rows(lone)
    assert [t.number for t in trials] == [2]
    best = refit_trial(lone, trials, metrics)
    assert best is not None and best.number == 1

    heads = optuna.create_study(directions=["maximize", "minimize"])
    heads.set_user_attr("objectives", ["accuracy", "latency_ms"])
    add(heads, 0.95, 1.0, 90_000, metrics={"head_on_body": 1.0})
    assert refit_trial(heads, *pareto_rows(heads)) is None
