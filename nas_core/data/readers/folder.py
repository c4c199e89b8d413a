"""A folder of class sub-folders of images."""

from __future__ import annotations

import os
import threading
from functools import partial
from pathlib import Path
from typing import Any

from nas_core.data.raw import RawDataset
from nas_core.data.readers.base import Reader, register_reader
from nas_core.data.readers.images import _ImageEntry, _images_to_raw, _read_file, _walk_folder


def _load_folder(root: Path, name: str, listing: list[tuple[Path, os.stat_result]]) -> RawDataset:
    entries = [
        _ImageEntry(label=f"file {str(p)!r}", parts=p.relative_to(root).parts, read=partial(_read_file, p))
        for p, _ in listing
    ]
    return _images_to_raw(entries, name=name, origin=str(root), source=f"{root} (folder of class sub-folders)")


_WALKED = threading.local()


@register_reader("folder")
class FolderReader(Reader):
    description = "a folder of class sub-folders"
    suffixes = ()

    def matches(self, path: Path) -> bool:
        return path.is_dir()

    def cache_key(self, path: Path) -> list[Any]:
        listing = sorted(_walk_folder(path))
        _WALKED.last = (path.resolve(), listing)  # read() right after, in this thread, reuses it: the folder is walked once
        return ["folder", str(path.resolve()), [[str(p.relative_to(path)), st.st_size, st.st_mtime_ns] for p, st in listing]]

    def read(self, path: Path, name: str) -> RawDataset:
        walked, _WALKED.last = getattr(_WALKED, "last", None), None
        listing = walked[1] if walked is not None and walked[0] == path.resolve() else sorted(_walk_folder(path))
        return _load_folder(path, name, listing)

    def write_example(self, folder: Path) -> Path:
        from PIL import Image

        out = folder / "example"
        for label, shade in (("dark", 40), ("light", 210)):
            (out / label).mkdir(parents=True, exist_ok=True)
            for i in range(10):
                Image.new("L", (8, 8), shade + i).save(out / label / f"{i}.png")
        return out
