"""Dataset file formats, one reader per file: folder, zip, csv, npz (see :mod:`nas_core.data.readers.base`)."""

from __future__ import annotations

# ruff: noqa: I001 - the import order is the registration order (how errors list the formats)
from nas_core.data.readers.base import READERS, Reader, describe_formats, list_readers, reader_for, register_reader, upload_suffixes
from nas_core.data.readers import zip, csv, npz, folder  # noqa: F401 - registers the built-in readers

__all__ = ["READERS", "Reader", "describe_formats", "list_readers", "reader_for", "register_reader", "upload_suffixes"]
