"""What a reader returns before splitting (RawDataset), the limits every reader enforces, and helpers readers share."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.errors import DatasetError

_MAX_MEMBERS = 200_000
_MAX_MEMBER_BYTES = 100 * 2**20
_MAX_TOTAL_BYTES = 2**30
_MAX_IMAGE_PIXELS = 40_000_000
_MAX_SIDE = 64  # search trains many models; larger images cost time without changing which one wins
_IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_LABEL_COLUMNS = ("label", "class", "target", "y")


@dataclass(frozen=True, eq=False)
class RawDataset:
    """What a loader returns, before splitting: uint8 pixels are later scaled by 1/255, other dtypes used as given.

    ``x`` is (N, C, H, W); ``y`` holds int64 class indices into ``classes``. ``x_test``/``y_test``
    are the official test set when the source has one (then only validation is carved from ``x``).
    """

    name: str
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    classes: tuple[str, ...]
    source: str
    x_test: np.ndarray | None = field(default=None, repr=False)
    y_test: np.ndarray | None = field(default=None, repr=False)


def _file_stamp(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _encode_labels(values: np.ndarray, *, what: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map original labels to 0..K-1; classes are the labels as text, in numeric order when all are numbers."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise DatasetError(f"labels in {what} include NaN or infinity; give every sample a label.")
        if np.all(values == np.round(values)):
            values = values.astype(np.int64)
    if values.dtype.kind in "iub":
        uniq = np.unique(values.astype(np.int64))
        y = np.searchsorted(uniq, values.astype(np.int64))
        return y.astype(np.int64), tuple(str(int(u)) for u in uniq)
    if values.dtype.kind == "f":
        uniq_f = np.unique(values)
        return np.searchsorted(uniq_f, values).astype(np.int64), tuple(repr(float(u)) for u in uniq_f)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", errors="replace")
    text = np.array([str(v).strip() for v in values.tolist()], dtype=str)
    names = sorted(set(text.tolist()))
    if all(re.fullmatch(r"[+-]?\d+", s) for s in names):
        names.sort(key=int)  # folders 0..10 read as numbers, not "0, 1, 10, 2"
    index = {s: i for i, s in enumerate(names)}
    return np.array([index[s] for s in text.tolist()], dtype=np.int64), tuple(names)


def _check_file_size(path: Path) -> None:
    size = path.stat().st_size
    if size > _MAX_TOTAL_BYTES:
        raise DatasetError(f"dataset file {path} is {size:,} bytes, over the 1 GiB limit; use a smaller subset.")


def _feature_shape(n_features: int) -> tuple[int, int, int]:
    side = math.isqrt(n_features)
    if side * side == n_features:
        return (1, side, side)
    if n_features % 3 == 0 and math.isqrt(n_features // 3) ** 2 == n_features // 3:
        side = math.isqrt(n_features // 3)
        return (3, side, side)  # channel-planar, as CIFAR's binary rows: all R, then G, then B
    return (1, 1, n_features)  # tabular data: a 1 x F "image"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
