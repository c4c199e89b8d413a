"""The last phase of a timed search: the best candidate refit on train + validation, for as many epochs as the time left allows.

The trials of a search are short (``--epochs``, early stopping) so that many fit in the budget; the
model a user takes home deserves the rest of it. :func:`train_final` takes the candidate the best
config would be (highest validation accuracy on the front), fits its epoch count to the seconds left
from the per-epoch time its trial measured (at most :data:`nas_core.budget.FINAL_EPOCH_FACTOR` times
the search's epochs), and trains it from scratch with its own recipe and seed on the training *and*
validation splits (``train_split="train+val"``): the validation split has done its job (choosing the
candidate), and on small datasets the extra data is worth more than an early stop, which the
one-cycle / warm-up schedules do not need (they end annealed). The test split stays unseen. Its epochs are
not validated (it keeps the last, and validation would score images it trained on), so its epoch time is
the trial's without validation (``val_seconds``), and the time saved goes to more epochs.

The recipe it used (epochs and split included) is the best config's ``training``, so
``train --config best_config.json`` repeats the run exactly. The config's ``val_accuracy`` stays the
trial's (the refit has seen the validation split); ``test_accuracy`` is the refit's. The record goes to
the study attribute ``final_training`` (Optuna freezes finished trials);
:func:`nas_core.export.write_study_outputs` writes it as ``best_config.json``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace
from typing import Any

from nas_core.schema.budget import FINAL_EPOCH_FACTOR

__all__ = ["train_final", "fit_epochs", "MEASURE_S", "SLACK", "GRACE"]

MEASURE_S = 5.0  # seconds kept back for measuring the trained model (accuracy, FLOPs, latency) and writing it
# Of the time left, the share the fitted epochs may fill. The per-epoch time is the trial's own (same design, same
# machine, scaled by the images of train + validation), and a refit that runs slower is time-boxed at the cut below and
# keeps its last whole epoch, so little margin is needed. Fashion-MNIST hours on one VM, the refit's time against the
# planned: 1.04x (seed 14, the ResNet), 0.85x (seed 15), 1.03x (seed 16), 0.95x (seed 17). At 0.75 seed 15 left ~640 s
# of its hour unused; at 0.9 the slowest of these fills 94 % of the time left.
SLACK = 0.9
# A refit running slower than planned may overrun the deadline by this share of the final phase before it is cut. A cut
# run is kept (``cut_by_budget``), but its schedule did not end and ``train --config`` runs the whole of it, so the cut
# costs accuracy and an exact repeat: finishing it is worth more than the overrun.
GRACE = 0.25


def fit_epochs(*, seconds_left: float, seconds_per_epoch: float, search_epochs: int) -> int:
    """Epochs that fit in ``SLACK`` of ``seconds_left``, capped at FINAL_EPOCH_FACTOR x ``search_epochs``; 0 if none fit."""
    if seconds_per_epoch <= 0 or not math.isfinite(seconds_per_epoch):
        return search_epochs
    fit = int((seconds_left - MEASURE_S) * SLACK / seconds_per_epoch)
    return max(0, min(fit, FINAL_EPOCH_FACTOR * search_epochs))


def train_final(*, study: Any, config: Any, data: Any, device: Any, workspace: Any, emit: Any = None, stop_event: Any = None,
                deadline: float = math.inf) -> dict[str, Any] | None:
    """Train the best candidate once more within ``deadline`` (a ``time.perf_counter()`` value); returns the record or None."""
    from nas_core import events as ev
    from nas_core.deploy.config import trial_config
    from nas_core.model.assembly import assemble
    from nas_core.model.weights import save_weights
    from nas_core.results.tables import pareto_rows, refit_trial
    from nas_core.schema.config import ModelConfig
    from nas_core.training.loop import budget_cut, set_seed, train_model
    from nas_core.training.measure import measure_model
    from nas_core.training.stops import Diverged, StopRequested
    from nas_core.workspace import study_dir

    trials, metrics = pareto_rows(study)
    best = refit_trial(study, trials, metrics) if trials else None
    if best is None:
        return None
    cfg = ModelConfig.from_dict(best.user_attrs["config"])
    history = best.user_attrs.get("history") or []
    # the refit does not validate (it keeps its last epoch): its epoch is the trial's training part (rows written before
    # ``val_seconds`` was recorded count their validation too), over the longer split
    per_epoch = statistics.median([float(r["seconds"]) - float(r.get("val_seconds", 0.0)) for r in history if "seconds" in r] or [math.nan])
    per_epoch *= (len(data.y_train) + len(data.y_val)) / max(1, len(data.y_train))  # the refit's epochs are longer
    left = deadline - time.perf_counter()
    epochs = fit_epochs(seconds_left=left, seconds_per_epoch=per_epoch, search_epochs=int(config.epochs))
    cut_at = deadline + GRACE * max(0.0, left)
    trained = len(history)
    record: dict[str, Any] = {"trial": best.number, "search_epochs": trained, "seconds_per_epoch": per_epoch, "epochs": epochs}
    if epochs < max(1, trained):
        record.update(kept=False, reason=f"the time left fits {epochs} epoch(s), fewer than trial {best.number} trained ({trained}); "
                                         "the trial stays the result (raise --timeout)")
        study.set_user_attr("final_training", record)
        return record
    recipe = replace(cfg.training, epochs=epochs, patience=epochs, train_split="train+val")
    seed = int(cfg.provenance.get("seed", config.seed))
    user_stop = stop_event.is_set if stop_event is not None else (lambda: False)

    def on_epoch(epoch: int, total: int, row: dict[str, float]) -> None:
        if emit is not None:
            try:
                emit(ev.EpochProgress(study.study_name, number=best.number, epoch=epoch, epochs=total, metrics={**row, "phase": "final"}))  # type: ignore[dict-item]  # the phase label rides with the numbers
            except Exception:  # noqa: BLE001 - a broken listener must not break the final training
                pass

    set_seed(seed)
    model = assemble(cfg.architecture)
    t0 = time.perf_counter()
    try:
        # time-boxed at the cut: on a machine slower than the trial measured, the refit ends with its last whole epoch
        # (annealed first when its recipe allows, ``train_model(time_left=)``) and is kept, where the cut threw it away
        rows = train_model(model, data, recipe, device=device, seed=seed, on_epoch=on_epoch, should_stop=user_stop,
                           time_up=lambda: time.perf_counter() > cut_at, time_left=lambda: cut_at - time.perf_counter(), validate=False)
    except (StopRequested, Diverged) as exc:
        why = "stopped by the user" if user_stop() else str(exc) if isinstance(exc, Diverged) else "ran past --timeout before a whole epoch"
        record.update(kept=False, reason=f"final training ended early ({why}); the best trial stays the result")
        study.set_user_attr("final_training", record)
        return record
    wall = time.perf_counter() - t0
    measured = measure_model(model, data, device)
    trial_metrics = best.user_attrs.get("metrics", {})
    final = {**measured["metrics"], "train_seconds": wall, "epochs_trained": len(rows),
             # the refit has trained on the validation split: the config keeps the trial's held-out estimate
             "val_accuracy": float(trial_metrics.get("val_accuracy", math.nan)),
             "val_macro_f1": float(trial_metrics.get("val_macro_f1", math.nan)),
             "search_test_accuracy": float(trial_metrics.get("test_accuracy", math.nan)), "search_epochs": len(history)}
    record.update(seconds=wall, kept=True, metrics={k: v for k, v in final.items() if isinstance(v, (int, float))})
    prov = {k: v for k, v in cfg.provenance.items() if k not in ("created", "packages", "machine")}
    prov["final_training"] = {"from_trial": best.number, "epochs": epochs, "seconds": round(wall, 2)}
    if len(rows) < epochs:  # the time box ended it (no early stop: patience is its epochs)
        prov["cut_by_budget"] = record["cut_by_budget"] = budget_cut(
            rows, done=len(rows), planned=epochs,
            why="the time budget (--timeout) ended before the schedule did: this machine trained slower than the trial measured")
    candidate = replace(cfg, training=recipe, metrics={}, provenance={})
    out = trial_config(candidate, metrics=final, latency=measured["latency"], study=study.study_name, trial=best.number, seed=seed,
                       fidelity=str(cfg.provenance.get("fidelity", config.fidelity)), provenance=prov)
    weights = save_weights(model, study_dir(workspace, study.study_name) / "weights" / f"final_trial_{best.number}.safetensors")
    record.update(config=out.to_dict(), weights=weights.name)
    study.set_user_attr("final_training", record)
    return record
