"""How training ends early: a user stop or a diverged loss (both raised by the loop and the measurements)."""

from __future__ import annotations

from nas_core.errors import NasCoreError


class StopRequested(Exception):
    """Raised at a batch boundary when the user pressed Stop; the trial is recorded, not lost."""


class Diverged(NasCoreError):
    """Training produced a NaN/inf loss."""
