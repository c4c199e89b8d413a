"""An .npz with arrays ``x`` (images or features) and ``y`` (labels), optionally ``x_test``/``y_test``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nas_core.data import raw
from nas_core.data.raw import RawDataset, _check_file_size, _encode_labels
from nas_core.data.readers.base import Reader, register_reader
from nas_core.errors import DatasetError


def _load_npz(path: Path, name: str) -> RawDataset:
    _check_file_size(path)
    try:
        with zipfile.ZipFile(path) as zf:
            unpacked = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path} is not an .npz archive ({exc}); save it with numpy.savez(path, x=..., y=...).") from exc
    if unpacked > raw._MAX_TOTAL_BYTES:
        raise DatasetError(f"{path} unpacks to {unpacked:,} bytes, over the 1 GiB limit; use a smaller subset.")
    try:
        with np.load(path, allow_pickle=False) as npz:  # pickles can run code: never allowed
            keys = {k.lower(): k for k in npz.files}
            if "x" not in keys or "y" not in keys:
                raise DatasetError(
                    f"{path} must hold arrays 'x' and 'y', but has {sorted(npz.files)}; "
                    "save it with numpy.savez(path, x=images, y=labels)."
                )
            x, y = npz[keys["x"]], npz[keys["y"]]
    except ValueError as exc:
        raise DatasetError(
            f"{path} cannot be read without unpickling ({exc}); store plain numeric arrays (no object dtype)."
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path} cannot be read ({exc}); save it again with numpy.savez.") from exc

    if x.dtype.kind not in "biuf":
        raise DatasetError(f"{path} array 'x' has dtype {x.dtype}; it must be numeric (uint8 pixels or floats).")
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> channels first
    else:
        raise DatasetError(
            f"{path} array 'x' has shape {x.shape}; use (N, F), (N, H, W), (N, H, W, C) or (N, C, H, W)."
        )
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if x.size and not np.all(np.isfinite(x)):
            raise DatasetError(f"{path} array 'x' contains NaN or infinity; clean the data first.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[0] and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        y = y.argmax(axis=1)  # one-hot rows
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(
            f"{path} has x of shape {x.shape} but y of shape {y.shape}; y must hold one label per sample."
        )
    if y.dtype.kind not in "biufUS":
        raise DatasetError(f"{path} array 'y' has dtype {y.dtype}; use integer or string labels.")
    labels, classes = _encode_labels(y, what=f"{path} array 'y'")
    return RawDataset(
        name=name,
        x=np.ascontiguousarray(x),
        y=labels,
        classes=classes,
        source=f"{path} (NPZ arrays x {tuple(x.shape)}, y)",
    )


@register_reader("npz")
class NpzReader(Reader):
    description = "an .npz with arrays x and y"
    suffixes = (".npz",)

    def read(self, path: Path, name: str) -> RawDataset:
        return _load_npz(path, name)

    def write_example(self, folder: Path) -> Path:
        out = folder / "example.npz"
        rng = np.random.default_rng(0)
        np.savez(out, x=rng.integers(0, 255, size=(20, 8, 8), dtype=np.uint8), y=np.repeat([0, 1], 10))
        return out
