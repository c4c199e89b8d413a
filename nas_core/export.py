"""Outputs of a study and everything done with a config afterwards: best-config JSON, Pareto files, summary,
rebuild, retrain, TorchScript / ONNX / safetensors export.
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import json
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas_core.errors import ConfigError, ExportError
from nas_core.genotype import Architecture, ModelConfig

__all__ = [
    "trial_config",
    "with_final_results",
    "load_config",
    "build_model",
    "load_weights",
    "save_weights",
    "study_rows",
    "pareto_rows",
    "write_study_outputs",
    "summary_markdown",
    "export_model",
    "EXPORT_FORMATS",
    "retrain",
    "package_versions",
    "rebuild_snippet",
]

EXPORT_FORMATS = ("torchscript", "onnx", "safetensors")


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "optuna", "mlflow", "numpy", "scikit-learn", "streamlit"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    from nas_core import __version__

    out["moca-nas"] = __version__
    return tuple(out.items())


def package_versions() -> dict[str, str]:
    """Versions recorded in every config's provenance (read once: metadata lookups cost ~25 ms)."""
    return dict(_package_versions())


def trial_config(candidate: ModelConfig, *, metrics: dict[str, Any], latency: dict[str, Any], study: str, trial: int, seed: int,
                 fidelity: str, extra: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None) -> ModelConfig:
    """The downloadable config of one trial: metrics (with how latency was measured) and provenance filled in."""
    m = dict(metrics)
    m["latency_measurement"] = {k: v for k, v in latency.items() if k != "latency_ms"}
    m["flops_note"] = "torch.utils.flop_counter, batch 1, multiply-add = 2 FLOPs"
    for key in ("proxy", "proxy_accuracy", "final_accuracy"):
        if extra and key in extra:
            m[key] = extra[key]
    prov = {
        "study": study,
        "trial": trial,
        "seed": seed,
        "fidelity": fidelity,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}",
        "packages": package_versions(),
        **(provenance or {}),
    }
    if extra and "library_blocks" in extra:
        prov["library_blocks"] = extra["library_blocks"]
    return candidate.with_metrics(**m).__class__(
        dataset=candidate.dataset, architecture=candidate.architecture, training=candidate.training, metrics=m, provenance=prov
    )


def load_config(path: str | Path) -> ModelConfig:
    """Read and validate a best-config JSON; every problem is a one-line :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass the path of a best_config.json (see `search` output).")
    if p.stat().st_size > 20_000_000:
        raise ConfigError(f"config file {p} is {p.stat().st_size / 1e6:.0f} MB; a MoCA-NAS config is a few KB, is this the right file?")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text; pass a best_config.json.") from None
    return ModelConfig.from_json(text, source=f"config file {p.name}")


def build_model(config: ModelConfig | Architecture | str | Path, *, weights: str | Path | None = None) -> Any:
    """Rebuild the network of a config (same parameter count on any machine); optionally load safetensors weights."""
    from nas_core.assemble import assemble

    if isinstance(config, (str, Path)):
        config = load_config(config)
    arch = config.architecture if isinstance(config, ModelConfig) else config
    model = assemble(arch)
    if isinstance(config, ModelConfig) and "params" in config.metrics:
        from nas_core.evaluate import count_params

        if count_params(model) != int(config.metrics["params"]):
            raise ConfigError(
                f"rebuilt network has {count_params(model)} parameters but the config records {config.metrics['params']}; "
                "the config was edited or written by an incompatible version."
            )
    if weights is not None:
        load_weights(model, weights)
    return model


def save_weights(model: Any, path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def load_weights(model: Any, path: str | Path) -> Any:
    """Load safetensors weights (never pickle); a mismatch is a clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"weights file {path} cannot be read as safetensors ({exc}); re-download it.") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"weights file {path} does not fit this architecture (missing {len(missing)}, unexpected {len(unexpected)} tensors).")
    return model


# --- study tables and outputs ----------------------------------------------------------------


def with_final_results(study: Any, trials: list[Any]) -> list[Any]:
    """Trials with their post-search records laid over their user attributes.

    Optuna freezes a finished trial, so a fidelity's second phase (e.g. the cached fidelity's
    end-to-end fine-tune) stores each trial's final ``metrics``/``config`` in the study user
    attribute ``final_results`` ({trial number: {...}}), and the quiet latency re-measurement of the
    front (:func:`remeasure_latencies`) stores its figures in ``latency_remeasured``; every table and
    output reads them through here.
    """
    attrs = study.user_attrs
    final = attrs.get("final_results") or {}
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

    from nas_core.evaluate import StopRequested, measure_latency
    from nas_core.pareto import nondominated_sort
    from nas_core.search import OBJECTIVES

    trials = [t for t in with_final_results(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
              if "metrics" in t.user_attrs and "config" in t.user_attrs and "duplicate_of" not in t.user_attrs]
    final = study.user_attrs.get("final_results") or {}
    if final:
        trials = [t for t in trials if str(t.number) in final] or trials
    if not trials:
        return {}
    objectives = study.user_attrs.get("objectives") or ["accuracy"]
    if len(objectives) < 2:
        objectives = ["accuracy", "latency_ms"]
    keys = [OBJECTIVES[o].metric for o in objectives]
    rank = nondominated_sort([[float(t.user_attrs["metrics"][k]) for k in keys] for t in trials], [OBJECTIVES[o].direction for o in objectives])
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
        for k, v in t.params.items():
            row[f"param_{k}"] = v
        rows.append(row)
    return rows


def pareto_rows(study: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    """(trials, metric dicts) of the accuracy-cost Pareto front of the complete trials.

    Multi-objective studies use their own objectives; a single-objective study is shown against latency
    so "best and fastest" still has a front. Once a fidelity's second phase has trained finalists
    (``final_results``), the front is over them only: the other trials hold proxy values (for the
    zero-cost fidelity a score, not an accuracy) that must not compete with measured accuracies.
    """
    from optuna.trial import TrialState

    from nas_core.pareto import pareto_front
    from nas_core.search import OBJECTIVES

    trials = [t for t in with_final_results(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) if "metrics" in t.user_attrs]
    final = study.user_attrs.get("final_results") or {}
    if final:
        trials = [t for t in trials if str(t.number) in final] or trials
    if not trials:
        return [], []
    objectives = study.user_attrs.get("objectives") or ["accuracy"]
    if len(objectives) < 2:
        objectives = ["accuracy", "latency_ms"]
    keys = [OBJECTIVES[o].metric for o in objectives]
    dirs = [OBJECTIVES[o].direction for o in objectives]
    metrics = [t.user_attrs["metrics"] for t in trials]
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


def final_training(study: Any, trial: int | None = None) -> dict[str, Any] | None:
    """The kept record of the search's final training (``nas_core.final_training``), if it trained ``trial`` (any when None)."""
    record = study.user_attrs.get("final_training") or {}
    if not record.get("kept") or "config" not in record or (trial is not None and record.get("trial") != trial):
        return None
    return record


def write_study_outputs(study: Any, *, workspace: str | Path) -> Path | None:
    """Write best_config.json, pareto/trial_N.json, pareto.csv and summary.md; returns the best config's path."""
    from nas_core.pareto import pick_points
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
    final = final_training(study, best_trial.number)
    best_cfg = final["config"] if final else best_trial.user_attrs["config"]
    best_path = ModelConfig.from_dict(best_cfg).save(out / "best_config.json")
    weights = out / "weights" / (final["weights"] if final else f"trial_{best_trial.number}.safetensors")
    if weights.exists():
        shutil.copyfile(weights, out / "best_weights.safetensors")
    cols = ["trial", "summary", "val_accuracy", "test_accuracy", "macro_f1", "latency_ms", "params", "flops", "size_mb"]
    tmp = out / "pareto.csv.tmp"
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for t, m in zip(trials, metrics):
            w.writerow([t.number, t.user_attrs.get("summary", "")] + [m.get(c, "") for c in cols[2:]])
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
            f"- **{label}**: trial {t.number} — val {m['val_accuracy']:.4f}, test {m['test_accuracy']:.4f}, "
            f"{m['latency_ms']:.3f} ms, {int(m['params']):,} params — `{t.user_attrs.get('summary', '')}`"
        )
    lines += ["", "## Pareto front", "", "| trial | val acc | test acc | macro F1 | latency ms | params | MFLOPs | architecture |",
              "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for t, m in zip(trials, metrics):
        lines.append(
            f"| {t.number} | {m['val_accuracy']:.4f} | {m['test_accuracy']:.4f} | {m.get('macro_f1', 0):.4f} | {m['latency_ms']:.3f} | "
            f"{int(m['params']):,} | {m['flops'] / 1e6:.2f} | `{t.user_attrs.get('summary', '')}` |"
        )
    lat = trials[0].user_attrs.get("latency", {}).get("how", "")
    lines += ["", f"Latency: {lat}. Test accuracy is reported only; selection used validation accuracy.", ""]
    lines += _budget_markdown(study)
    return "\n".join(lines)


def _budget_markdown(study: Any) -> list[str]:
    """The budget plan and what the final training did, for summary.md."""
    from nas_core.budget import BudgetPlan

    lines: list[str] = []
    plan = study.user_attrs.get("budget_plan")
    if plan:
        lines += ["## Budget", "", BudgetPlan.from_dict(plan).markdown(), ""]
    record = study.user_attrs.get("final_training")
    if record:
        lines += ["## Final training", ""]
        m = record.get("metrics") or {}
        if record.get("kept"):
            lines.append(f"Trial {record['trial']} refit on train + validation for {record['epochs']} epochs (its trial: "
                         f"{record['search_epochs']}) in {record.get('seconds', 0):.1f} s: test {m.get('test_accuracy', 0):.4f} "
                         f"(the trial: {m.get('search_test_accuracy', 0):.4f}; validation {m.get('val_accuracy', 0):.4f} is the trial's, "
                         "as the refit has seen that split). `best_config.json` is this run; `train --config best_config.json` repeats it.")
        else:
            lines.append(f"Trial {record.get('trial')}: not kept — {record.get('reason', '')}.")
        lines.append("")
    known = study.user_attrs.get("known_good")
    if known:
        lines += ["## Known-good designs", "", "The study started from: " + ", ".join(known) + " (`nas_core.seeds`).", ""]
    return lines


# --- export -----------------------------------------------------------------------------------


def export_model(config: ModelConfig | str | Path, *, fmt: str, out: str | Path, weights: str | Path | None = None) -> Path:
    """Write the network as TorchScript, ONNX (checked with onnxruntime when installed) or safetensors weights."""
    import torch

    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}.")
    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    model = build_model(cfg, weights=weights).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, *cfg.architecture.input_shape)
    if fmt == "safetensors":
        return save_weights(model, out)
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        traced.save(str(out))
        return out
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the optional package onnx: pip install onnx onnxruntime") from None
    try:
        with torch.no_grad():
            torch.onnx.export(model, (example,), str(out), dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    except Exception as exc:  # noqa: BLE001 - exporter failures vary by torch version; report in one line
        raise ExportError(f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); TorchScript export still works.") from None
    try:
        import numpy as np
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        x = torch.randn(2, *cfg.architecture.input_shape)
        got = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        if not np.allclose(got, want, atol=1e-3, rtol=1e-3):
            raise ExportError("ONNX export does not reproduce the PyTorch outputs (max diff "
                              f"{float(np.abs(got - want).max()):.2e}); use TorchScript instead.")
    except ImportError:
        pass
    return out


def rebuild_snippet(config_name: str = "best_config.json", weights_name: str | None = "best_weights.safetensors") -> str:
    lines = [
        "from nas_core.export import load_config, build_model",
        "",
        f'config = load_config("{config_name}")',
        f'model = build_model(config{", weights=" + repr(weights_name) if weights_name else ""}).eval()',
        "print(config.architecture.summary(), sum(p.numel() for p in model.parameters()), 'params')",
    ]
    return "\n".join(lines)


def retrain(
    config: ModelConfig | str | Path,
    *,
    workspace: str | Path,
    epochs: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    seed: int | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    patience: int | None = None,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Rebuild the config's network (identical parameter count) and train it again; returns the measured metrics.

    The dataset is the one the config was found on (its provenance records how it was given), on its
    full training split unless ``train_samples`` says otherwise. Library blocks referenced by id are
    loaded when the module library is present; otherwise the network trains from scratch and the
    result says so.
    """
    from dataclasses import replace

    from nas_core.data import load_dataset
    from nas_core.evaluate import count_params, cpu_threads, measure_model, resolve_device, set_seed, threads, train_model

    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    prov = cfg.provenance
    seed = int(prov.get("seed", 0)) if seed is None else seed
    dev = resolve_device(device)
    data = load_dataset(
        dataset or prov.get("dataset_arg") or cfg.dataset.name,
        seed=int(prov.get("split_seed", seed)),
        data_dir=data_dir or prov.get("data_dir"),
        train_samples=train_samples,
        val_samples=val_samples,
        cache_dir=Path(workspace) / "cache" / "data",
    )
    if tuple(data.input_shape) != tuple(cfg.dataset.input_shape) or data.num_classes != cfg.dataset.num_classes:
        raise ConfigError(
            f"dataset {data.name} has input {list(data.input_shape)} and {data.num_classes} classes, but the config was made for "
            f"{list(cfg.dataset.input_shape)} and {cfg.dataset.num_classes}; pass the dataset it was searched on (--dataset)."
        )
    set_seed(seed)
    model = build_model(cfg)
    notes = []
    init = "from scratch"
    if any(b.library_id for b in cfg.architecture.blocks()):
        try:
            from nas_core.library import load_library_weights

            loaded = load_library_weights(model, cfg, workspace=workspace)
            init = f"library weights for {loaded} block(s)"
        except Exception as exc:  # noqa: BLE001 - no library here: train from scratch and say so
            notes.append(f"module library not available ({str(exc).splitlines()[0]}); trained from scratch instead")
    recipe = cfg.training
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, but got {epochs}.")
        recipe = replace(recipe, epochs=epochs)
    if patience is not None:
        recipe = replace(recipe, patience=patience)
    start = time.perf_counter()
    with threads(cpu_threads(tuple(data.input_shape), dev)):  # the search's thread rule: the same arithmetic
        history = train_model(model, data, recipe, device=dev, seed=seed, on_epoch=on_epoch, should_stop=should_stop)
        wall = time.perf_counter() - start
        measured = measure_model(model, data, dev)
    ws = Path(workspace)
    weights_path = save_weights(model, ws / "retrained" / f"{cfg.candidate_hash()}.safetensors")
    metrics = measured["metrics"]
    return {
        **metrics,
        "params": count_params(model),
        "epochs_trained": len(history),
        "wall_s": wall,
        "dataset": data.name,
        "train_size": len(data.y_train),
        "test_size": len(data.y_test),
        "init": init,
        "notes": notes,
        "weights": str(weights_path),
        "history": history,
        "confusion": measured["confusion"],
        "latency_measurement": measured["latency"]["how"],
    }
