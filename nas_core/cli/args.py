"""Argument types and defaults the subcommands share (argparse ``type=`` functions, the --workspace rule)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas_core.workspace import default_workspace


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_number(unit: str) -> Callable[[str], float]:
    """An argparse type: a finite number > 0, with ``unit`` named in its messages."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a positive number of {unit}, got {text}")
        return value

    return parse


_positive_float = positive_number("seconds")


def _fidelity_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON (numbers, true/false, lists) or else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not key.strip().replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. cached_epochs=2)")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def workspace_arg(arg: str | None) -> Path:
    """The --workspace flag, or $MOCA_HOME / ./moca_runs."""
    return Path(arg) if arg else default_workspace()
