"""The Reader protocol: a file format a dataset path can be in, chosen by suffix (or by :meth:`Reader.matches`).

A reader is one :class:`Reader` subclass in one file, registered with :func:`register_reader`; ``load_dataset``
picks it for a path, the Search page's upload accepts its suffixes, and errors list every registered one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from nas_core.data.raw import RawDataset, _file_stamp
from nas_core.errors import DatasetError
from nas_core.registry import Registry

__all__ = ["READERS", "Reader", "list_readers", "reader_for", "register_reader", "upload_suffixes"]


class Reader(abc.ABC):
    """One dataset file format. Subclass it, set ``suffixes`` and ``description``, implement :meth:`read`.

    Example (one file; ``docs/extending.md`` runs it as a test)::

        @register_reader("json-pixels")
        class JsonPixels(Reader):
            description = "a .json list of {label, pixels}"
            suffixes = (".json",)

            def read(self, path, name):
                ...  # -> RawDataset
    """

    name: str = ""  # set by register_reader
    description: ClassVar[str] = ""  # how error messages name the format ("a .csv with a label column")
    suffixes: ClassVar[tuple[str, ...]] = ()  # lower-case, with the dot; empty for a reader that matches otherwise

    def matches(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in self.suffixes

    def cache_key(self, path: Path) -> list[Any]:
        """What decides whether parsed arrays cached for ``path`` are still valid (default: path, size, mtime)."""
        return [self.name, _file_stamp(path)]

    @abc.abstractmethod
    def read(self, path: Path, name: str) -> RawDataset:
        """Parse ``path`` into a RawDataset named ``name``; raise DatasetError naming the file, the problem and the fix."""

    @abc.abstractmethod
    def write_example(self, folder: Path) -> Path:
        """Write a small valid dataset in this format into ``folder`` (2 classes, >= 10 samples each); return its path.

        The conformance test reads every registered reader's example, and the docs show one.
        """


READERS: Registry[Reader] = Registry("dataset reader")
R = TypeVar("R", bound=type[Reader])


def register_reader(name: str) -> Callable[[R], R]:
    """Class decorator: register one instance of the Reader subclass under ``name`` (a duplicate name is an error)."""
    return READERS.register_instance(name)


def list_readers() -> list[str]:
    return READERS.names()


def upload_suffixes() -> tuple[str, ...]:
    """Every suffix a registered reader accepts (an upload keeps its suffix, so this is what uploads may be)."""
    return tuple(s for name in READERS.names() for s in READERS.get(name).suffixes)


def describe_formats() -> str:
    return ", ".join(READERS.get(n).description for n in READERS.names())


def reader_for(path: Path) -> Reader:
    for name in READERS.names():
        reader = READERS.get(name)
        if reader.matches(path):
            return reader
    suffix = path.suffix.lower()
    raise DatasetError(
        f"dataset file {str(path)!r} has an unsupported type {suffix or '(no extension)'!r}; use {describe_formats()}."
    )
