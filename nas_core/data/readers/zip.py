"""A .zip of class folders of images (members checked: size, count, paths, links, before anything is decoded)."""

from __future__ import annotations

import io
import re
import stat
import zipfile
import zlib
from functools import partial
from pathlib import Path

from nas_core.data import raw
from nas_core.data.raw import RawDataset
from nas_core.data.readers.base import Reader, register_reader
from nas_core.data.readers.images import _ImageEntry, _images_to_raw, _is_hidden, _is_image_name
from nas_core.errors import DatasetError


def _load_zip(path: Path, name: str) -> RawDataset:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{str(path)!r} is not a readable zip archive ({exc}); re-create it with a zip tool.") from exc
    with zf:
        entries = _zip_entries(zf, path.name)
        return _images_to_raw(entries, name=name, origin=path.name, source=f"{path} (zip of class sub-folders)")


def _zip_entries(zf: zipfile.ZipFile, archive: str) -> list[_ImageEntry]:
    """Validate every member name and size, then list the image members; nothing is extracted to disk."""
    infos = zf.infolist()
    if len(infos) > raw._MAX_MEMBERS:
        raise DatasetError(
            f"archive {archive!r} has {len(infos):,} members, more than the {raw._MAX_MEMBERS:,} allowed; use a smaller subset."
        )
    entries = []
    total = 0
    for info in infos:
        member = info.filename
        parts = [p for p in re.split(r"[\\/]+", member) if p not in ("", ".")]
        # Even though members are only read in memory, a name that would escape an extraction root
        # marks a hostile or broken archive; refusing it keeps every consumer of the file safe.
        if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member) or ".." in parts:
            raise DatasetError(
                f"archive {archive!r} has member {member!r} with an unsafe path (absolute or containing '..'); "
                "the archive is refused. Re-create it with relative paths such as cats/001.png."
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DatasetError(
                f"archive {archive!r} has member {member!r} that is a symbolic link; the archive is refused. "
                "Re-create it with real files (zip without --symlinks)."
            )
        if info.is_dir():
            continue
        if info.file_size > raw._MAX_MEMBER_BYTES:
            raise DatasetError(
                f"archive {archive!r} member {member!r} unpacks to {info.file_size:,} bytes, over the 100 MiB "
                "limit; remove or shrink it."
            )
        total += info.file_size
        if total > raw._MAX_TOTAL_BYTES:
            raise DatasetError(
                f"archive {archive!r} unpacks to more than 1 GiB; the archive is refused. Use a smaller subset."
            )
        if _is_hidden(parts) or not _is_image_name(member):
            continue
        entries.append(
            _ImageEntry(label=f"member {member!r} of {archive!r}", parts=tuple(parts), read=partial(_read_member, zf, info))
        )
    return entries


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with zf.open(info) as fh:
            return fh.read(raw._MAX_MEMBER_BYTES + 1)  # zipfile stops at the declared size; this is a backstop
    except (RuntimeError, NotImplementedError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"member {info.filename!r} cannot be read ({exc}); the archive may be encrypted or corrupt. "
            "Re-create it without a password."
        ) from exc


@register_reader("zip")
class ZipReader(Reader):
    description = "a .zip of class folders"
    suffixes = (".zip",)

    def read(self, path: Path, name: str) -> RawDataset:
        return _load_zip(path, name)

    def write_example(self, folder: Path) -> Path:
        from PIL import Image

        out = folder / "example.zip"
        with zipfile.ZipFile(out, "w") as zf:
            for label, shade in (("dark", 40), ("light", 210)):
                for i in range(10):
                    buf = io.BytesIO()
                    Image.new("L", (8, 8), shade + i).save(buf, format="PNG")
                    zf.writestr(f"{label}/{i}.png", buf.getvalue())
        return out
