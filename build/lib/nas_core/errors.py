"""One family of errors: every problem a user can fix is a `NasCoreError` with the rule, the value and the fix."""

from __future__ import annotations

__all__ = [
    "NasCoreError",
    "ConfigError",
    "DatasetError",
    "SearchSpaceError",
    "RegistryError",
    "LibraryError",
    "ExportError",
    "TunnelError",
    "SearchBusyError",
    "StorageError",
    "WorkspaceError",
]


class NasCoreError(Exception):
    """Base of every error the CLI and the UI turn into one readable line."""


class ConfigError(NasCoreError, ValueError):
    """A configuration (architecture JSON, search config, CLI argument) breaks a rule."""


class DatasetError(NasCoreError):
    """A dataset is unknown, missing, corrupt, hostile or unusable (empty, one class)."""


class SearchSpaceError(ConfigError):
    """A search-space definition is malformed."""


class RegistryError(NasCoreError, KeyError):
    """A name is unknown to a registry, or registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text.
        return str(self.args[0]) if self.args else ""


class LibraryError(NasCoreError):
    """A module-library block is missing, malformed or fails its checksum."""


class ExportError(NasCoreError):
    """An export format is unavailable or failed."""


class TunnelError(NasCoreError):
    """The ngrok tunnel cannot be opened (no token, no binary, no network)."""


class SearchBusyError(NasCoreError):
    """A search is already running for this study."""


class StorageError(NasCoreError):
    """The study storage cannot be read or written (locked, corrupt, disk full); recorded trials are kept."""


class WorkspaceError(NasCoreError, OSError):
    """The workspace folder cannot be written (disk full, read-only, a file where a folder belongs)."""
