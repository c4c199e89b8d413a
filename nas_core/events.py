"""Typed progress events a search emits: small dataclasses with a timestamp, safe to hand to another thread."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Event", "TrialStarted", "EpochProgress", "TrialFinished", "StudyFinished", "SearchError", "event_to_dict"]


@dataclass(frozen=True)
class Event:
    study: str
    timestamp: float = field(default_factory=time.time, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class TrialStarted(Event):
    number: int
    params: dict[str, Any]
    summary: str = ""


@dataclass(frozen=True)
class EpochProgress(Event):
    number: int
    epoch: int
    epochs: int
    metrics: dict[str, Any]  # per-epoch figures, and a ``phase`` name for a fine-tune


@dataclass(frozen=True)
class TrialFinished(Event):
    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    values: tuple[float, ...] | None
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0


@dataclass(frozen=True)
class PlanMade(Event):
    """The budget's plan, decided at run time after timing the designs (the one training): a note for people and the
    trials it runs (``None``: as many as ``--trials`` and ``--timeout`` allow)."""

    note: str
    trials: int | None = None


@dataclass(frozen=True)
class StudyFinished(Event):
    n_complete: int
    n_pruned: int
    n_failed: int
    best_config: str | None
    reason: str  # "budget" | "timeout" | "stopped" | "no trials completed"
    wall_s: float


@dataclass(frozen=True)
class SearchError(Event):
    message: str


def event_to_dict(event: Event) -> dict[str, Any]:
    return {"kind": event.kind, **asdict(event)}
