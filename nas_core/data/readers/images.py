"""Images in class folders (a folder or a zip): walking, decoding with Pillow, resizing, into one RawDataset."""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.data import raw
from nas_core.data.raw import RawDataset, _encode_labels
from nas_core.errors import DatasetError


def _is_hidden(parts: Sequence[str]) -> bool:
    # Finder and Explorer litter archives with these; they are never data.
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in raw._IMAGE_SUFFIXES


@dataclass(frozen=True)
class _ImageEntry:
    label: str  # how errors name it: "member 'a/b.png' of 'x.zip'" or a file path
    parts: tuple[str, ...]
    read: Callable[[], bytes]


def _walk_folder(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    count = total = 0
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a link loop cannot hang us
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden([d]))
        for fname in sorted(filenames):
            if _is_hidden([fname]) or not _is_image_name(fname):
                continue
            path = Path(dirpath) / fname
            if not path.is_file():
                continue  # a dangling link is not a sample
            st = path.stat()
            count += 1
            total += st.st_size
            if st.st_size > raw._MAX_MEMBER_BYTES:
                raise DatasetError(f"image {path} is {st.st_size:,} bytes, over the 100 MiB limit; shrink it or remove it.")
            if count > raw._MAX_MEMBERS or total > raw._MAX_TOTAL_BYTES:
                raise DatasetError(
                    f"folder {root} holds more than {raw._MAX_MEMBERS:,} images or 1 GiB of them; use a smaller subset."
                )
            yield path, st


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"file {str(path)!r} cannot be read ({exc}); check its permissions.") from exc


def _open_image(entry: _ImageEntry) -> Any:
    """PIL image with only its header read; refuses oversize images before any pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    data = entry.read()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"{entry.label} is too large to decode safely ({exc}); shrink the image.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL's "cannot identify image file <_io.BytesIO object at 0x...>" says nothing useful to a user.
        detail = "unknown or unsupported format" if isinstance(exc, UnidentifiedImageError) else f"{exc}"
        raise DatasetError(
            f"{entry.label} is not a valid image ({detail}); remove it or replace it with a PNG or JPEG file."
        ) from exc
    w, h = im.size
    if w * h > raw._MAX_IMAGE_PIXELS:
        raise DatasetError(
            f"{entry.label} is {w}x{h} = {w * h:,} pixels, more than the {raw._MAX_IMAGE_PIXELS:,} allowed; shrink it."
        )
    return im


def _decode_rgb(entry: _ImageEntry, size: tuple[int, int]) -> np.ndarray:
    """Decode, resize to ``size`` (W, H) and return H x W x 3 uint8."""
    from PIL import Image

    im = _open_image(entry)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.seek(0)  # animated GIF/TIFF: the first frame is the sample
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                # 16-bit and float scans: stretch to 8 bits, PIL's convert would clip them to white.
                arr = np.asarray(im, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
                im = Image.fromarray(arr.round().astype(np.uint8), mode="L")
            im = im.convert("RGB")
            if im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"{entry.label} is too large to decode safely ({exc}); shrink the image.") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DatasetError(
            f"{entry.label} is not a valid image ({exc}); remove it or replace it with a PNG or JPEG file."
        ) from exc


def _images_to_raw(entries: list[_ImageEntry], *, name: str, origin: str, source: str) -> RawDataset:
    entries = sorted((e for e in entries if not _is_hidden(e.parts)), key=lambda e: e.parts)
    layout = f"{origin}/<class>/<image>.png"
    if not entries:
        raise DatasetError(f"dataset {origin!r} has no samples: no images found; expected the layout {layout}.")
    # Allow one wrapping folder (how most zip tools pack a folder): data/cat/1.png -> cat/1.png.
    while all(len(e.parts) >= 3 for e in entries) and len({e.parts[0] for e in entries}) == 1:
        entries = [_ImageEntry(e.label, e.parts[1:], e.read) for e in entries]
    classed = [e for e in entries if len(e.parts) >= 2]
    loose = len(entries) - len(classed)
    if not classed:
        raise DatasetError(
            f"dataset {origin!r} has {loose} images but none inside a class sub-folder; "
            f"expected the layout {layout} (the folder name is the class)."
        )
    sizes = Counter(_open_image(e).size for e in classed)
    w, h = sizes.most_common(1)[0][0]  # entries are sorted, so ties resolve the same way every run
    if max(w, h) > raw._MAX_SIDE:
        scale = raw._MAX_SIDE / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    stack = np.stack([_decode_rgb(e, (w, h)) for e in classed])  # (N, H, W, 3)
    gray = bool(np.array_equal(stack[..., 0], stack[..., 1]) and np.array_equal(stack[..., 0], stack[..., 2]))
    x = stack[..., :1] if gray else stack
    y, classes = _encode_labels(np.array([e.parts[0] for e in classed]), what=f"class folders of {origin!r}")
    note = f"; ignored {loose} image(s) outside class folders" if loose else ""
    return RawDataset(
        name=name,
        x=np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
        y=y,
        classes=classes,
        source=f"{source}{note}",
    )
