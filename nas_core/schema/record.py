"""The trial record: what a finished trial stores, as one versioned user attribute written once, and its one reader.

A trial used to store about a dozen user attributes, each its own storage write, set in three modules and
read in four with nothing declaring them. Now the search writes one attribute, :data:`RECORD_KEY`, when the
trial ends (:func:`record_attr`), and every reader goes through :func:`trial_record` / :func:`with_record`,
which also read the per-key attributes of studies written before the record (and the ``reason`` another
process sets when it reclaims a dead worker's trial).

Two attributes stay outside the record on purpose, written when the trial starts, because other processes
read them while it runs: ``owner`` (which process holds it: crash reclaim) and ``summary`` (what it is: the
dashboard's live table). The multi-objective pruner's rung values (``mo_rung_N``, ``mo_costs``) and the screen row
(``moca_screen``, ``training.screening``; the record keeps a copy as ``screen``) are likewise read by the other trials
during the search.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from nas_core.errors import ConfigError

__all__ = ["LIVE_KEYS", "RECORD_FIELDS", "RECORD_KEY", "SCREEN_KEY", "RECORD_VERSION", "VAL_SEEN", "VAL_SEEN_MARK", "HEAD_ON_BODY", "record_attr", "trial_record", "val_mark",
           "with_record", "with_records"]

RECORD_KEY = "moca_record"
RECORD_VERSION = 1
RECORD_FIELDS = ("candidate_hash", "duplicate_of", "metrics", "history", "latency", "confusion", "per_class_accuracy", "config",
                 "fidelity_extra", "mlflow_run_id", "reason", "screen")
SCREEN_KEY = "moca_screen"  # the screen row (training.screening), written when the screen ends
LIVE_KEYS = ("owner", "summary", SCREEN_KEY)
# A metric set (1.0) when the model trained on the validation split (the one training on train + validation, and a head
# fitted on its body): its ``val_accuracy`` is then not a held-out score, and every page and file that shows it says so.
VAL_SEEN = "val_trained_on"
VAL_SEEN_MARK = " (trained on)"
# A metric set (1.0) for a head fitted on another trial's frozen body (the small companion): a point of the front, never
# the best-accuracy pick that the final refit retrains from scratch and best_config.json holds (results.pareto.pick_points).
HEAD_ON_BODY = "head_on_body"


def val_mark(metrics: dict[str, Any] | None) -> str:
    """What follows a validation score in text: :data:`VAL_SEEN_MARK` when ``metrics`` says the model trained on that split.

    Example:
        >>> val_mark({"val_accuracy": 0.97, VAL_SEEN: 1.0}), val_mark({"val_accuracy": 0.94})
        (' (trained on)', '')
    """
    return VAL_SEEN_MARK if (metrics or {}).get(VAL_SEEN) else ""


def record_attr(fields: dict[str, Any]) -> dict[str, Any]:
    """The value of the one record attribute for ``fields`` (a subset of :data:`RECORD_FIELDS`)."""
    unknown = sorted(set(fields) - set(RECORD_FIELDS))
    if unknown:
        raise ConfigError(f"a trial record has no field(s) {', '.join(unknown)}; the fields are {', '.join(RECORD_FIELDS)}.")
    return {"version": RECORD_VERSION, **fields}


def trial_record(trial: Any) -> dict[str, Any]:
    """Every recorded value of a trial by name: its record laid over its other user attributes (old studies have only those)."""
    attrs = trial.user_attrs
    record = attrs.get(RECORD_KEY)
    if record is None:
        return dict(attrs)
    version = record.get("version", 0) if isinstance(record, dict) else None
    if not isinstance(version, int) or version > RECORD_VERSION:
        raise ConfigError(f"trial {getattr(trial, 'number', '?')} was recorded by a newer MoCA-NAS (record version {version!r}, this one "
                          f"reads up to {RECORD_VERSION}); upgrade nas_core to read this study.")
    return {**{k: v for k, v in attrs.items() if k != RECORD_KEY}, **{k: v for k, v in record.items() if k != "version"}}


def with_record(trial: Any) -> Any:
    """The trial itself, or a shallow copy whose ``user_attrs`` are :func:`trial_record` (what tables and outputs read)."""
    if RECORD_KEY not in trial.user_attrs:
        return trial
    out = copy.copy(trial)
    out.user_attrs = trial_record(trial)
    return out


def with_records(trials: Iterable[Any]) -> list[Any]:
    return [with_record(t) for t in trials]
