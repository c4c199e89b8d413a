"""A study's tables and output files: trial rows, the Pareto front, latency re-measurement, best_config.json, summary.md."""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas_core.deploy.config import build_model
from nas_core.schema.config import ModelConfig
from nas_core.schema.record import HEAD_ON_BODY, VAL_SEEN_MARK, val_mark, with_records

FINAL_RESULT_PREFIX = "final_result."


def final_results(study: Any) -> dict[str, dict[str, Any]]:
    """{trial number as text: its post-search record} for every finalist.

    Each finalist's record is its own study attribute ``final_result.<number>``, written once by the process that
    fine-tuned it (Optuna freezes finished trials, so it cannot go on the trial itself); studies made before that
    kept them all in one attribute ``final_results``, which is still read (a per-trial record wins).
    """
    attrs = study.user_attrs
    out = dict(attrs.get("final_results") or {})
    for key, value in attrs.items():
        if key.startswith(FINAL_RESULT_PREFIX) and isinstance(value, dict):
            out[key[len(FINAL_RESULT_PREFIX):]] = value
    return out


def record_final_result(study: Any, number: int, record: dict[str, Any]) -> None:
    """Store one finalist's record under its own key: two writers never rewrite each other's results."""
    study.set_user_attr(f"{FINAL_RESULT_PREFIX}{number}", record)


def with_final_results(study: Any, trials: list[Any]) -> list[Any]:
    """Trials with their post-search records laid over their user attributes.

    Optuna freezes a finished trial, so a fidelity's second phase (e.g. the cached fidelity's
    end-to-end fine-tune) stores each trial's final ``metrics``/``config`` in a study user
    attribute of its own (:func:`final_results`), and the quiet latency re-measurement of the
    front (:func:`remeasure_latencies`) stores its figures in ``latency_remeasured``; every table and
    output reads them through here.
    """
    trials = with_records(trials)  # every reader sees a trial's record fields by name (schema.record)
    attrs = study.user_attrs
    final = final_results(study)
    latency = attrs.get("latency_remeasured") or {}
    if not final and not latency:
        return trials
    import copy

    out = []
    for t in trials:
        record = final.get(str(t.number))
        lat = latency.get(str(t.number))
        if record or lat:
            t = copy.copy(t)
            t.user_attrs = {**t.user_attrs, **(record or {})}
            if lat:
                t.user_attrs = _with_latency(t.user_attrs, lat)
        out.append(t)
    return out


def _with_latency(attrs: dict[str, Any], lat: dict[str, Any]) -> dict[str, Any]:
    """User attributes with a re-measured latency in the metrics, the latency record and the config's metrics."""
    out = dict(attrs)
    out["metrics"] = {**out.get("metrics", {}), "latency_ms": lat["latency_ms"], "latency_in_search_ms": out.get("metrics", {}).get("latency_ms")}
    out["latency"] = dict(lat)
    if "config" in out:
        cfg = dict(out["config"])
        m = dict(cfg.get("metrics", {}))
        m["latency_in_search_ms"] = m.get("latency_ms")
        m["latency_ms"] = lat["latency_ms"]
        m["latency_measurement"] = {k: v for k, v in lat.items() if k != "latency_ms"}
        cfg["metrics"] = m
        out["config"] = cfg
    return out


def remeasure_latencies(study: Any, *, limit: int = 12, ranks: int = 3, budget_s: float = 6.0,
                        should_stop: Any = lambda: False) -> dict[str, dict[str, Any]]:
    """Re-measure, one after another in one quiet batch, the latency of the trials that can reach the front.

    During the search each latency is measured between trainings, on a machine busy with them (one trial recorded
    35.6 ms where a quiet measure of its config gave 1.49 ms), so the picks would follow that noise. The candidates
    of :func:`pareto_rows`'s set within ``ranks`` non-dominated fronts (at most ``limit``, best first) are rebuilt
    from their configs and measured with :func:`nas_core.evaluate.measure_latency`; the figures go to the study
    attribute ``latency_remeasured`` (the in-search figure stays in the trial as ``latency_in_search_ms``).
    The batch takes at most about ``budget_s`` (0.5 s a network), so it adds little past ``--timeout``; candidates
    it did not reach keep their in-search figure. A stop (``should_stop()``) ends the batch at once, keeping what it measured.
    """
    from optuna.trial import TrialState

    from nas_core.results.pareto import nondominated_sort
    from nas_core.training.measure import measure_latency
    from nas_core.training.stops import StopRequested

    trials = [t for t in with_final_results(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
              if "metrics" in t.user_attrs and "config" in t.user_attrs and "duplicate_of" not in t.user_attrs]
    final = final_results(study)
    if final:
        trials = [t for t in trials if str(t.number) in final] or trials
    if not trials:
        return {}
    keys, dirs = front_axes(study, [t.user_attrs["metrics"] for t in trials])
    rank = nondominated_sort([[float(t.user_attrs["metrics"][k]) for k in keys] for t in trials], dirs)
    order = sorted((i for i in range(len(trials)) if rank[i] < ranks),
                   key=lambda i: (rank[i], -float(trials[i].user_attrs["metrics"].get("val_accuracy", 0.0)), trials[i].number))[:limit]
    done = dict(study.user_attrs.get("latency_remeasured") or {})
    end = time.perf_counter() + budget_s
    for i in order:
        if time.perf_counter() > end:
            break
        t = trials[i]
        config = ModelConfig.from_dict(t.user_attrs["config"])
        try:
            lat = measure_latency(build_model(config), tuple(config.dataset.input_shape), budget_s=0.5, should_stop=should_stop)
        except StopRequested:
            break
        lat["how"] = lat["how"] + "; re-measured after the search in one quiet batch"
        done[str(t.number)] = json.loads(json.dumps(lat))
    study.set_user_attr("latency_remeasured", done)
    return done


def study_rows(study: Any) -> list[dict[str, Any]]:
    """One flat dict per trial: number, state, values, metrics, params, duration, reason, MLflow run id."""
    objectives = study.user_attrs.get("objectives") or [f"value_{i}" for i in range(len(study.directions))]
    rows = []
    for t in with_final_results(study, study.get_trials(deepcopy=False)):
        metrics = t.user_attrs.get("metrics", {})
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "summary": t.user_attrs.get("summary", ""),
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "reason": t.user_attrs.get("reason", "") or (f"duplicate of trial {t.user_attrs['duplicate_of']}" if "duplicate_of" in t.user_attrs else ""),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
            "datetime_start": t.datetime_start,
            "datetime_complete": t.datetime_complete,
        }
        for i, name in enumerate(objectives):
            row[f"objective_{name}"] = t.values[i] if t.values is not None and i < len(t.values) else None
        for k in ("val_accuracy", "test_accuracy", "macro_f1", "params", "flops", "latency_ms", "size_mb", "epochs_trained", "proxy_accuracy", "final_accuracy", "proxy_score"):
            if k in metrics:
                row[k] = metrics[k]
        if "val_accuracy" in metrics:  # false where the model trained on the validation split (schema.record.VAL_SEEN)
            row["val_held_out"] = not val_mark(metrics)
        for k, v in t.params.items():
            row[f"param_{k}"] = v
        rows.append(row)
    return rows


def front_axes(study: Any, metrics: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(metric keys, directions) the front of :func:`pareto_rows` is taken over: the study's objectives, and the parameter
    count as a cost of its own when no objective is one (and every trial has it).

    A single-objective study is shown against latency, so "best and fastest" still has a front. The parameter count
    joins because the picks name the smallest network and a user wants a model a fifth the size offered even when its
    batch-1 latency is no lower: the small design's head on a Fashion-MNIST one training's body (96,554 params against
    468,010, test 0.9408 against 0.9429) measured 2.15 ms against 2.04 ms in one quiet batch, noise on networks whose
    convolutions are the same, and fell off an accuracy-latency front.
    """
    from nas_core.schema.objectives import OBJECTIVES

    objectives = study.user_attrs.get("objectives") or ["accuracy"]
    if len(objectives) < 2:
        objectives = ["accuracy", "latency_ms"]
    keys = [OBJECTIVES[o].metric for o in objectives]
    dirs = [OBJECTIVES[o].direction for o in objectives]
    if "params" not in keys and all("params" in m for m in metrics):
        keys.append("params")
        dirs.append("minimize")
    return keys, dirs


def pareto_rows(study: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    """(trials, metric dicts) of the accuracy-cost Pareto front of the complete trials.

    The front is over the study's objectives and the parameter count (:func:`front_axes`). Once a fidelity's second
    phase has trained finalists (:func:`final_results`), the front is over them only: the other trials hold proxy values
    (for the zero-cost fidelity a score, not an accuracy) that must not compete with measured accuracies.
    """
    from optuna.trial import TrialState

    from nas_core.results.pareto import pareto_front

    trials = [t for t in with_final_results(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) if "metrics" in t.user_attrs]
    final = final_results(study)
    if final:
        trials = [t for t in trials if str(t.number) in final] or trials
    if not trials:
        return [], []
    metrics = [t.user_attrs["metrics"] for t in trials]
    keys, dirs = front_axes(study, metrics)
    front = pareto_front([[float(m[k]) for k in keys] for m in metrics], dirs)
    # Duplicates share values; keep the first trial of each candidate on the front.
    seen: set[str] = set()
    picked = []
    for i in sorted(front, key=lambda i: trials[i].number):
        h = trials[i].user_attrs.get("candidate_hash", str(i))
        if h not in seen:
            seen.add(h)
            picked.append(i)
    picked.sort(key=lambda i: (-float(metrics[i].get("val_accuracy", 0)), float(metrics[i].get("latency_ms", 0))))
    return [trials[i] for i in picked], [metrics[i] for i in picked]


def refit_trial(study: Any, trials: Sequence[Any], metrics: Sequence[dict[str, Any]]) -> Any | None:
    """The trial the final training refits from scratch (``search.final_training.train_final``) and whose refit
    ``best_config.json`` holds (:func:`write_study_outputs`), given the front's ``trials`` and ``metrics``
    (:func:`pareto_rows`); None when the study has no whole network.

    The highest validation accuracy, ties to lower latency, then fewer parameters, among the front's whole networks and
    the bodies the front's heads were fitted on (``provenance.body_from``): a head on another trial's frozen body (the
    small companion, metric ``head_on_body``) cannot be retrained from scratch, and it may dominate its body's trial off
    the front, which then competes beside the networks that stayed on it. With neither, every complete whole network.
    """
    from optuna.trial import TrialState

    def whole(t: Any) -> bool:
        return "config" in t.user_attrs and not t.user_attrs.get("metrics", {}).get(HEAD_ON_BODY)

    bodies: set[int] = set()
    for t, m in zip(trials, metrics):
        body = ((t.user_attrs.get("config") or {}).get("provenance") or {}).get("body_from") or {}
        if m.get(HEAD_ON_BODY) and "trial" in body:
            bodies.add(int(body["trial"]))
    pool = [t for t in trials if whole(t)]
    off_front = bodies - {t.number for t in pool}  # bodies their heads pushed off the front
    if off_front or not pool:  # only then are the other complete trials read (pareto_rows has read them once already)
        complete = [t for t in with_final_results(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) if whole(t)]
        pool = pool + [t for t in complete if t.number in off_front] or complete
    if not pool:
        return None

    def rank(t: Any) -> tuple[float, float, float, int]:
        m = t.user_attrs.get("metrics", {})
        return (-float(m.get("val_accuracy", 0.0)), float(m.get("latency_ms", 0.0)), float(m.get("params", 0.0)), t.number)

    return min(pool, key=rank)


def final_training(study: Any, trial: int | None = None) -> dict[str, Any] | None:
    """The kept record of the search's final training (``nas_core.final_training``), if it trained ``trial`` (any when None)."""
    record = study.user_attrs.get("final_training") or {}
    if not record.get("kept") or "config" not in record or (trial is not None and record.get("trial") != trial):
        return None
    return record


def write_study_outputs(study: Any, *, workspace: str | Path) -> Path | None:
    """Write best_config.json, pareto/trial_N.json, pareto.csv and summary.md; returns the best config's path."""
    from nas_core.results.pareto import pick_points
    from nas_core.workspace import study_dir

    out = study_dir(workspace, study.study_name)
    out.mkdir(parents=True, exist_ok=True)
    trials, metrics = pareto_rows(study)
    if not trials:
        return None
    pareto_dir = out / "pareto"
    if pareto_dir.exists():
        shutil.rmtree(pareto_dir)  # points that left the front must not linger
    pareto_dir.mkdir()
    for t in trials:
        (pareto_dir / f"trial_{t.number}.json").write_text(json.dumps(t.user_attrs["config"], indent=2))
    picks = pick_points(metrics)
    best_trial = trials[picks["best_accuracy"]]
    # the final training refits a whole network, the one refit_trial picks (on the front, or a front head's body off it)
    refit = refit_trial(study, trials, metrics)
    final = final_training(study, refit.number) if refit is not None else None
    best_cfg = final["config"] if final else best_trial.user_attrs["config"]
    best_path = ModelConfig.from_dict(best_cfg).save(out / "best_config.json")
    weights = out / "weights" / (final["weights"] if final else f"trial_{best_trial.number}.safetensors")
    if weights.exists():
        shutil.copyfile(weights, out / "best_weights.safetensors")
    # val_held_out: false where the model trained on the validation split (schema.record.VAL_SEEN)
    cols = ["trial", "summary", "val_accuracy", "test_accuracy", "macro_f1", "latency_ms", "params", "flops", "size_mb", "val_held_out"]
    tmp = out / "pareto.csv.tmp"
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for t, m in zip(trials, metrics):
            w.writerow([t.number, t.user_attrs.get("summary", "")] + [m.get(c, "") for c in cols[2:-1]] + [str(not val_mark(m)).lower()])
    tmp.replace(out / "pareto.csv")
    (out / "summary.md").write_text(summary_markdown(study, trials, metrics, picks))
    return best_path


def summary_markdown(study: Any, trials: list[Any], metrics: list[dict[str, Any]], picks: dict[str, int]) -> str:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    ds = study.user_attrs.get("dataset", {})
    lines = [
        f"# MoCA-NAS study `{study.study_name}`",
        "",
        f"Dataset **{ds.get('name', '?')}** (input {ds.get('input_shape', '?')}, {ds.get('num_classes', '?')} classes); "
        f"objectives {', '.join(study.user_attrs.get('objectives', []))}; "
        f"{states.count(TrialState.COMPLETE)} complete, {states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} failed trials.",
        "",
        "## Picks",
        "",
    ]
    names = {
        "best_accuracy": "Best accuracy",
        "fastest_within_1pt": "Fastest within 1 point of best",
        "knee": "Knee / balanced",
        "smallest": "Smallest",
    }
    for key, label in names.items():
        m, t = metrics[picks[key]], trials[picks[key]]
        lines.append(
            f"- **{label}**: trial {t.number} — val {m['val_accuracy']:.4f}{val_mark(m)}, test {m['test_accuracy']:.4f}, "
            f"{m['latency_ms']:.3f} ms, {int(m['params']):,} params — `{t.user_attrs.get('summary', '')}`{_made(t)}"
        )
    from nas_core.schema.objectives import OBJECTIVES

    labels = {o.metric: o.label for o in OBJECTIVES.values()}
    over = ", ".join(labels.get(k, k) for k in front_axes(study, metrics)[0])
    lines += ["", "## Pareto front", "", f"Non-dominated in {over}.", "", "| trial | val acc | test acc | macro F1 | latency ms | params | MFLOPs | architecture |",
              "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for t, m in zip(trials, metrics):
        lines.append(
            f"| {t.number} | {m['val_accuracy']:.4f}{val_mark(m)} | {m['test_accuracy']:.4f} | {m.get('macro_f1', 0):.4f} | {m['latency_ms']:.3f} | "
            f"{int(m['params']):,} | {m['flops'] / 1e6:.2f} | `{t.user_attrs.get('summary', '')}`{_made(t)} |"
        )
    lat = trials[0].user_attrs.get("latency", {}).get("how", "")
    lines += ["", f"Latency: {lat}. Test accuracy is reported only; selection used validation accuracy.", ""]
    if any(val_mark(m) for m in metrics):
        lines[-1:] = [f"A validation accuracy marked{VAL_SEEN_MARK} is not held out: that model trained on the validation split "
                      "(the one training trains on the training and validation splits, and a head fitted on its body sees it "
                      "through that body). Its test accuracy is the held-out figure.", ""]
    lines += _budget_markdown(study)
    return "\n".join(lines)


def _made(trial: Any) -> str:
    """How a trial's network was made, when not by a training of its own: a head fitted on another trial's frozen body."""
    from nas_core.schema.record import trial_record

    body_from = ((trial_record(trial).get("config") or {}).get("provenance") or {}).get("body_from")
    return f" (its head fitted on trial {body_from.get('trial')}'s body, frozen)" if isinstance(body_from, dict) else ""


def _screening_markdown(study: Any) -> list[str]:
    """How many candidates the screen saw and promoted (``training.screening``), and how well it ranked, for summary.md."""
    from nas_core.training.screening import screen_pool

    trials = study.get_trials(deepcopy=False)
    pool = screen_pool(trials)
    if not pool:
        return []
    promoted = sum(1 for r in pool if r.get("promoted"))
    lines = ["## Screening", "",
             f"{len(pool)} candidate(s) trained one epoch with their schedule compressed into it before anything else; {promoted} "
             f"(the known-good designs and the best by the mean rank of that accuracy and their FLOPs) went on to their full training, "
             f"and {len(pool) - promoted} screened out (pruned, with the reason). `--fidelity-option screen=off` trains every "
             "candidate in full."]
    from nas_core.ranking import ranking_quality

    for check in ranking_quality(with_records(trials)):
        if check.signal.startswith("screen"):
            lo, hi = check.ci95
            lines.append(f"Over the {check.n} trained in full, the screen score ranks their final validation accuracy at Kendall tau "
                         f"{check.kendall:.2f} (95 % {lo:.2f} to {hi:.2f}): {check.verdict}.")
    return [*lines, ""]


def _stopped_markdown(study: Any) -> list[str]:
    """A line for each trial a Stop ended that kept the model it held (the one training: ``fidelities.train.Holder``)."""
    from optuna.trial import TrialState

    from nas_core.schema.record import trial_record

    lines = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = trial_record(t)
        stop = ((record.get("config") or {}).get("provenance") or {}).get("stopped_early")
        if stop:
            test = (record.get("metrics") or {}).get("test_accuracy", 0.0)
            lines.append(f"Trial {t.number} was stopped ({stop.get('why', 'by the user')}) and keeps the model it held at epoch "
                         f"{stop['after_epoch']} of its {stop['of']}, measured then (test {test:.4f}). `train --config` on its config "
                         "runs the whole schedule.")
    return [*lines, ""] if lines else []


def _budget_markdown(study: Any) -> list[str]:
    """The budget plan and what the final training did, for summary.md."""
    from nas_core.schema.budget import BudgetPlan

    lines: list[str] = []
    plan = study.user_attrs.get("budget_plan")
    if plan:
        lines += ["## Budget", "", BudgetPlan.from_dict(plan).markdown(), ""]
    lines += _stopped_markdown(study)
    record = study.user_attrs.get("final_training")
    if record:
        lines += ["## Final training", ""]
        m = record.get("metrics") or {}
        cut = record.get("cut_by_budget")
        if record.get("kept") and cut:
            lines.append(f"Trial {record['trial']} refit on train + validation for {cut['after_epoch']} of its planned {record['epochs']} "
                         f"epochs (its trial: {record['search_epochs']}) in {record.get('seconds', 0):.1f} s: this machine trained slower "
                         "than the trial measured, and the time budget ended it"
                         f"{' (its schedule compressed to end annealed)' if cut.get('annealed') else ' with its last whole epoch'}. Test "
                         f"{m.get('test_accuracy', 0):.4f} (the trial: {m.get('search_test_accuracy', 0):.4f}; validation "
                         f"{m.get('val_accuracy', 0):.4f} is the trial's). `train --config best_config.json` runs all {record['epochs']} epochs.")
        elif record.get("kept"):
            lines.append(f"Trial {record['trial']} refit on train + validation for {record['epochs']} epochs (its trial: "
                         f"{record['search_epochs']}) in {record.get('seconds', 0):.1f} s: test {m.get('test_accuracy', 0):.4f} "
                         f"(the trial: {m.get('search_test_accuracy', 0):.4f}; validation {m.get('val_accuracy', 0):.4f} is the trial's, "
                         "as the refit has seen that split). `best_config.json` is this run; `train --config best_config.json` repeats it.")
        else:
            lines.append(f"Trial {record.get('trial')}: not kept — {record.get('reason', '')}.")
        lines.append("")
    lines += _screening_markdown(study)
    known = study.user_attrs.get("known_good")
    if known:
        lines += ["## Known-good designs", "", "The study started from: " + ", ".join(known) + " (`nas_core.seeds`).", ""]
    return lines
