"""The Search page's logic: registry choices, the budget plan, uploads, the space editor, live progress and scatter.

Part of :mod:`nas_core.views` (no Streamlit import); the pages reach it as ``nas_core.views.<name>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas_core import events as ev
from nas_core.errors import ConfigError, DatasetError
from nas_core.jobs import RetrainJob, get_retrain, start_retrain  # noqa: F401 - the pages call them here
from nas_core.schema.objectives import OBJECTIVES
from nas_core.schema.record import val_mark
from nas_core.views.plots import _scatter_with_front
from nas_core.views.studies import METRIC_LABELS, _per_state, _trials, load_study

log = logging.getLogger(__name__)

__all__ = ["sampler_names", "fidelity_names", "fidelity_help", "fidelity_page_options", "fidelity_uses_library", "pruner_names", "budget_plan", "device_note", "tile", "number_step", "dataset_label", "upload_types", "save_upload", "discard_upload", "new_study_name", "class_counts_frame", "param_caption", "space_edits", "space_data", "edited_space", "progress_values", "points_frame", "study_points", "live_scatter", "event_line", "event_lines"]


# --- Search page ---------------------------------------------------------------------------------


def sampler_names() -> list[str]:
    from nas_core.search import SAMPLERS

    return SAMPLERS.names()


def fidelity_names() -> list[str]:
    from nas_core.fidelities.base import FIDELITIES

    return FIDELITIES.names()


def fidelity_help() -> str:
    """One line per registered fidelity, for the Search page's fidelity choice."""
    from nas_core.fidelities.base import FIDELITIES

    return "; ".join(f"{name} = {FIDELITIES.get(name).summary or 'a plug-in fidelity'}" for name in FIDELITIES.names()) + "."


def fidelity_page_options(fidelity: str) -> tuple[Any, ...]:
    """The options the Search page renders for ``fidelity`` (:class:`nas_core.fidelities.FidelityOption`)."""
    from nas_core.fidelities.base import FIDELITIES

    return tuple(FIDELITIES.get(fidelity).page_options)


def fidelity_uses_library(fidelity: str) -> bool:
    from nas_core.fidelities.base import FIDELITIES

    return bool(FIDELITIES.get(fidelity).uses_library)


def pruner_names() -> list[str]:
    from nas_core.search import PRUNERS

    return PRUNERS.names()


def budget_plan(*, timeout: float | None, fidelity: str, options: dict[str, Any] | None = None) -> tuple[pd.DataFrame, str]:
    """The budget planner's split of ``timeout`` for this fidelity, as a (phase, budget) table and its one-line note."""
    from nas_core.fidelities.base import FIDELITIES
    from nas_core.schema.budget import plan_budget

    plan = plan_budget(timeout=timeout, two_phase=FIDELITIES.get(fidelity).has_final_phase, options=dict(options or {}))
    return pd.DataFrame(plan.rows(), columns=["phase", "budget"]), plan.note


def device_note() -> str:
    """Which accelerator ``device="auto"`` would pick here, for a caption under the device choice."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA available: {torch.cuda.get_device_name(0)} (auto uses it)."
    return "No CUDA GPU here: auto trains on the CPU."


def tile(image: np.ndarray, size: int = 64) -> np.ndarray:
    """A preview image scaled up by whole pixels (nearest neighbour) so 8x8 digits stay crisp in the browser."""
    img = np.asarray(image)
    side = max(img.shape[0], img.shape[1])
    k = max(1, size // max(1, side))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def number_step(p: Any) -> float:
    """A sensible step for a float range's number input (one decade below ``low`` on log scale)."""
    if p.log and p.low and p.low > 0:
        return float(10 ** math.floor(math.log10(p.low)))
    span = float(p.high) - float(p.low)
    return float(10 ** math.floor(math.log10(span / 5))) if span > 0 else 0.01


def dataset_label(info: Any) -> str:
    """``digits — 8x8 handwritten digits`` or ``mnist (unavailable)`` for a :class:`DatasetInfo`."""
    return f"{info.name} — {info.description}" if info.available else f"{info.name} (unavailable here)"


def upload_types() -> list[str]:
    """File types the dataset upload accepts: every registered reader's suffixes (:mod:`nas_core.data.readers`)."""
    from nas_core.data.readers import upload_suffixes

    return [s.lstrip(".") for s in upload_suffixes()]


def save_upload(workspace: str | Path, filename: str, data: bytes) -> Path:
    """Store an uploaded dataset under ``<workspace>/uploads/<content hash>/<name>`` and return its path.

    The content hash keeps two different files with one name apart, and the same file uploaded twice
    in one place (so its study name and data cache stay stable).
    """
    from nas_core.data.readers import upload_suffixes

    suffix = Path(filename).suffix.lower()
    if suffix not in upload_suffixes():
        raise DatasetError(
            f"uploaded file {filename!r} is not a .zip, .csv or .npz; upload a zip of class folders, a CSV with a "
            "label column, or an NPZ with arrays x and y."
        )
    if not data:
        raise DatasetError(f"uploaded file {filename!r} is empty; upload it again.")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(filename).stem).strip("-.") or "upload"
    digest = hashlib.sha256(data).hexdigest()[:12]
    path = Path(workspace) / "uploads" / digest / f"{stem[:60]}{suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def discard_upload(workspace: str | Path, path: str | Path, filename: str, message: str) -> str:
    """Delete a rejected upload (and its folder when empty) and return ``message`` naming the user's file, not our path."""
    p = Path(path)
    root = (Path(workspace) / "uploads").resolve()
    try:
        if p.resolve().is_relative_to(root):
            p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                p.parent.rmdir()
    except OSError:
        pass
    for text in (str(p), str(p.resolve()), str(p.parent), str(p.parent.resolve())):
        message = message.replace(text, filename)
    return message


def new_study_name(base: str, existing: Sequence[str]) -> str:
    """``base``, or ``base-2``, ``base-3``... : the first name that is not an existing study."""
    taken = set(existing)
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def class_counts_frame(preview: Any) -> pd.DataFrame:
    """Samples per class of a :class:`~nas_core.data.DatasetPreview`, in class order."""
    return pd.DataFrame({"class": list(preview.class_counts), "samples": list(preview.class_counts.values())})


def param_caption(p: Any) -> str:
    """What a space parameter means for the form: its help text, per-layer repeat and condition."""
    bits = [p.help] if p.help else []
    if p.repeat:
        bits.append(f"one value per layer of {p.repeat}")
    for cond, allowed in p.when.items():
        bits.append(f"only when {cond} is {', '.join(map(str, allowed))}")
    if p.log:
        bits.append("log scale")
    return "; ".join(bits)


def space_edits(space: Any, values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The changed fields of each parameter, as a ``{"params": ...}`` override of the preset.

    ``values`` maps a parameter name to what the form shows: ``{"low": .., "high": ..}`` for ranges and
    ``{"choices": [...]}`` for categorical or bool parameters. Unchanged parameters are left out, so an
    untouched form gives an empty dict (and the preset is used as it is).
    """
    edits: dict[str, dict[str, Any]] = {}
    for p in space.params:
        new = values.get(p.name)
        if not new:
            continue
        change: dict[str, Any] = {}
        if p.type in ("int", "float"):
            for key in ("low", "high"):
                if key in new and new[key] is not None and float(new[key]) != float(getattr(p, key)):
                    change[key] = int(new[key]) if p.type == "int" else float(new[key])
        else:
            default = [False, True] if p.type == "bool" else list(p.choices)
            chosen = list(new.get("choices", default))
            if not chosen:
                raise ConfigError(f"search-space parameter {p.name!r} needs at least one choice; tick one or more values.")
            if chosen != default:
                change["choices"] = [c for c in default if c in chosen] + [c for c in chosen if c not in default]
                if p.type == "bool":
                    change["type"] = "categorical"
        if change:
            edits[p.name] = change
    return edits


def space_data(space: Any, edits: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The ``SearchConfig.space_data`` for a preset plus edits (None when nothing was edited)."""
    if not edits:
        return None
    return {"base": space.name, "name": f"{space.name}-edited", "params": edits}


def edited_space(space: Any, edits: dict[str, dict[str, Any]]) -> Any:
    """The preset with the edits applied and validated (a bad range raises :class:`SearchSpaceError`)."""
    from nas_core.space import SearchSpace

    data = space_data(space, edits)
    return space if data is None else SearchSpace.from_dict(data, source="edited search space")


def progress_values(snapshot: Any) -> dict[str, Any]:
    """Fractions and captions of the two progress bars (trials overall, epochs of the current trial)."""
    s = snapshot
    counts = f"{s.n_complete} complete, {s.n_pruned} pruned, {s.n_failed} failed"
    if s.trials_total:
        overall = min(1.0, s.trials_done / s.trials_total)
        overall_text = f"{s.trials_done} / {s.trials_total} trials ({counts})"
    elif s.timeout_s:
        overall = min(1.0, s.elapsed_s / s.timeout_s)
        overall_text = f"{s.trials_done} trials, {s.elapsed_s:.0f} / {s.timeout_s:.0f} s ({counts})"
    else:
        overall, overall_text = 0.0, f"{s.trials_done} trials ({counts})"
    if s.timeout_s and s.trials_total:
        overall_text += f" — {s.elapsed_s:.0f} / {s.timeout_s:.0f} s"
    if s.current_trial is not None:
        epochs = max(1, s.epochs)
        epoch = min(1.0, s.epoch / epochs)
        epoch_text = f"trial {s.current_trial}: epoch {s.epoch} / {epochs}"
    else:
        epoch, epoch_text = (1.0 if s.status == "finished" else 0.0), "no trial running"
    return {"overall": overall, "overall_text": overall_text, "epoch": epoch, "epoch_text": epoch_text}


def points_frame(points: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Runner points (one dict per finished trial) as a frame with a ``pareto`` column."""
    df = pd.DataFrame(list(points))
    if df.empty:
        return pd.DataFrame(columns=["number", "state", "val_accuracy", "latency_ms", "params", "pareto"])
    return df


def study_points(workspace: str | Path, name: str) -> list[dict[str, Any]]:
    """The study's finished trials as live points (number, state, metrics), so a resumed study's live view shows its
    earlier trials too; empty while the study is not in storage yet. Memoised per study state."""
    try:
        study = load_study(workspace, name)
    except ConfigError:
        return []
    return _points(study)


@_per_state
def _points(study: Any) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [{"number": t.number, "state": t.state.name, **(t.user_attrs.get("metrics") or {})} for t in _trials(study, done)]


def live_scatter(points: Sequence[dict[str, Any]], *, objectives: Sequence[str] = ("accuracy", "latency_ms")) -> Any:
    """Accuracy vs the first cost objective of the finished trials so far, with the Pareto front drawn."""
    cost = next((OBJECTIVES[o].metric for o in objectives if o in OBJECTIVES and o != "accuracy"), "latency_ms")
    df = points_frame(points)
    df = df[df["state"] == "COMPLETE"] if "state" in df else df
    for col in ("val_accuracy", cost):
        if col not in df:
            df[col] = pd.Series(dtype=float)
    return _scatter_with_front(df, cost, "val_accuracy", title=f"live: accuracy vs {METRIC_LABELS.get(cost, cost)}")


def event_line(event: ev.Event) -> str:
    """One human line for a runner event, prefixed with its wall-clock time."""
    # Dispatch on the class name, not isinstance: a module reload (Streamlit's watcher in development) makes
    # new event classes while the running search still emits the old ones.
    e: Any = event
    kind = type(e).__name__
    stamp = time.strftime("%H:%M:%S", time.localtime(e.timestamp))
    if kind == "TrialStarted":
        text = f"trial {e.number} started: {e.summary}"
    elif kind == "EpochProgress":
        acc = e.metrics.get("val_accuracy")
        phase = f" ({e.metrics['phase']})" if isinstance(e.metrics.get("phase"), str) else ""
        loss = e.metrics.get("train_loss")
        text = f"trial {e.number}{phase} epoch {e.epoch}/{e.epochs}" + (
            f": val acc {acc:.4f}{val_mark(e.metrics)}" if acc is not None
            else f": train loss {loss:.4f}" if isinstance(loss, (int, float)) else "")  # the final refit does not validate
        if e.metrics.get("held_test_accuracy") is not None:  # a one training's hold (fidelities.train.Holder)
            text += f" — model held, test {e.metrics['held_test_accuracy']:.4f}: a Stop now keeps it"
    elif kind == "TrialFinished":
        m = e.metrics
        bits = [f"trial {e.number} {e.state} in {e.duration_s:.1f} s"]
        if "proxy_score" in m and "final_accuracy" not in m:  # a zero-cost score is not an accuracy: say which it is
            bits.append(f"proxy score {m['proxy_score']:.4g}, {m.get('latency_ms', float('nan')):.3f} ms, {int(m.get('params', 0)):,} params")
        elif "val_accuracy" in m:
            bits.append(f"val acc {m['val_accuracy']:.4f}{val_mark(m)}, {m.get('latency_ms', float('nan')):.3f} ms, {int(m.get('params', 0)):,} params")
        if e.reason:
            bits.append(e.reason)
        text = " — ".join(bits)
    elif kind == "StudyFinished":
        text = (f"study finished ({e.reason}): {e.n_complete} complete, {e.n_pruned} pruned, "
                f"{e.n_failed} failed in {e.wall_s:.1f} s")
    elif kind == "PlanMade":
        text = f"plan: {e.note}"
    elif kind == "SearchError":
        text = f"error: {e.message}"
    else:
        text = kind
    return f"{stamp}  {text}"


def event_lines(events: Sequence[ev.Event], *, limit: int = 40, epochs: bool = True) -> list[str]:
    """Newest first, at most ``limit`` lines; ``epochs=False`` leaves out per-epoch lines."""
    chosen = [e for e in events if epochs or type(e).__name__ != "EpochProgress"]
    return [event_line(e) for e in reversed(chosen[-limit:])]
