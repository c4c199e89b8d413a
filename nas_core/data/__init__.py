"""Dataset registry and loaders: built-in, local files and uploads -> normalised tensors with deterministic splits.

Built-in datasets are registered loaders (`digits`, `mnist`, `fashion-mnist`, `cifar10`); anything
else is read as a path: a folder or a .zip of class sub-folders of images, a .csv with a label
column, or an .npz with arrays ``x`` and ``y``. Every source ends in the same `DatasetSplits`.

Example:
    >>> from nas_core.data import load_dataset
    >>> splits = load_dataset("digits", seed=0, train_samples=200)
    >>> tuple(splits.x_train.shape), splits.num_classes
    ((200, 1, 8, 8), 10)
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import math
import numbers
import operator
import os
import struct
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from nas_core.data import raw
from nas_core.data.raw import RawDataset, _file_stamp
from nas_core.data.readers import READERS, reader_for, upload_suffixes
from nas_core.errors import DatasetError
from nas_core.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetPreview",
    "DatasetSplits",
    "FASHION_MNIST_CLASSES",
    "RawDataset",
    "inspect_dataset",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]

# Bump when the parsing or split logic changes, so fingerprints and cache files from older code never match.
_FORMAT_VERSION = 1

_SYSTEM_DATASET_ROOT = Path("/usr/share/datasets")  # where Debian's dataset-* packages install

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_DIGIT_CLASSES = tuple(str(i) for i in range(10))


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous; identity is the useful equality
class DatasetSplits:
    """Train/val/test tensors ready for training: float32 (N, C, H, W) normalised by train statistics.

    ``fingerprint`` identifies the data content plus the split parameters: equal inputs give an
    equal fingerprint on any machine, so caches and reports can key on it.
    """

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_val: torch.Tensor = field(repr=False)
    y_val: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    fingerprint: str
    source: str
    mean: tuple[float, ...] = ()  # per channel, subtracted from every split; empty = not normalised
    std: tuple[float, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description for the UI, logs and exported configs."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "sizes": {
                "train": int(self.y_train.shape[0]),
                "val": int(self.y_val.shape[0]),
                "test": int(self.y_test.shape[0]),
            },
            "source": self.source,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset as the UI lists it: whether it can load here, and if not, why and how to fix it."""

    name: str
    available: bool
    reason: str
    description: str


@dataclass(frozen=True)
class DatasetPreview:
    """What the UI shows before a search: classes, how many samples each has, and a few images."""

    name: str
    classes: tuple[str, ...]
    class_counts: dict[str, int]
    input_shape: tuple[int, int, int]
    num_samples: int
    preview_images: list[np.ndarray]  # uint8, H x W (one channel) or H x W x 3
    preview_labels: list[str]
    source: str




DatasetLoader = Callable[..., RawDataset]  # called as loader(data_dir=..., cache_dir=...)
DatasetCheck = Callable[[str | None], str | None]


@dataclass(frozen=True)
class _DatasetMeta:
    description: str
    check: DatasetCheck


DATASETS: Registry[DatasetLoader] = Registry("dataset")
_META: dict[str, _DatasetMeta] = {}


def register_dataset(
    name: str, *, description: str, check: DatasetCheck
) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader ``loader(*, data_dir, cache_dir) -> RawDataset`` under ``name``.

    ``check(data_dir)`` must be cheap and never download: it returns None when the dataset can be
    loaded here, else a sentence saying why not and how to fix it.

    Example:
        >>> @register_dataset("blobs", description="two blobs", check=lambda data_dir: None)
        ... def _load_blobs(*, data_dir, cache_dir): ...  # doctest: +SKIP
    """

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        DATASETS.add(name, loader)  # raises RegistryError on a duplicate before we touch _META
        _META[name] = _DatasetMeta(description=description, check=check)
        return loader

    return decorator


def list_datasets(*, data_dir: str | None = None) -> list[DatasetInfo]:
    """Every registered dataset with whether it can be loaded here (never downloads anything)."""
    infos = []
    for name in DATASETS.names():
        meta = _META[name]
        try:
            reason = meta.check(data_dir)
        except DatasetError as exc:
            reason = str(exc)
        infos.append(
            DatasetInfo(name=name, available=reason is None, reason=reason or "", description=meta.description)
        )
    return infos


# --------------------------------------------------------------------------------------------
# Loading and splitting
# --------------------------------------------------------------------------------------------


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    seed: int = 0,
    data_dir: str | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    test_samples: int | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    cache_dir: str | Path | None = None,
) -> DatasetSplits:
    """Load a registered dataset or a local path and split it deterministically by ``seed``.

    Splits are stratified by class. With no official test set, ``test_fraction`` and
    ``val_fraction`` (of all samples) are held out; with one (MNIST, Fashion-MNIST, CIFAR-10) it is
    the test split and ``val_fraction`` of the official train set becomes validation. Then
    ``train_samples``/``val_samples``/``test_samples`` subsample each split (stratified); the
    splits themselves do not depend on them. Pixels are scaled to 0..1 and normalised with the
    per-channel mean/std of the (subsampled) train split.

    Example:
        >>> splits = load_dataset("digits", seed=1, val_samples=50)
        >>> splits.summary()["sizes"]["val"]
        50
    """
    seed = _check_seed(seed)
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise DatasetError(
            f"val_fraction + test_fraction must be below 1 to leave training data, but got "
            f"{val_fraction=} and {test_fraction=}; lower one of them (0.15 each is the default)."
        )
    train_samples = _check_samples("train_samples", train_samples)
    val_samples = _check_samples("val_samples", val_samples)
    test_samples = _check_samples("test_samples", test_samples)

    raw = _load_raw(name_or_path, data_dir=data_dir, cache_dir=cache_dir)
    _validate_raw(raw)

    if raw.x_test is not None and raw.y_test is not None:
        x_pool, y_pool = raw.x, raw.y
        x_test_pool, y_test_pool = raw.x_test, raw.y_test
        if len(y_pool) < 2:
            raise DatasetError(
                f"dataset {raw.name!r} needs at least 2 training samples to carve a validation split, "
                f"found {len(y_pool)}; add samples."
            )
        n_val = min(max(1, round(val_fraction * len(y_pool))), len(y_pool) - 1)
        val_pos, train_pos = _stratified_take(y_pool, n_val, _rng(seed, 2), cover="rest")
        train_idx, val_idx = train_pos, val_pos
        test_idx = np.arange(len(y_test_pool))
    else:
        x_pool, y_pool = raw.x, raw.y
        x_test_pool, y_test_pool = raw.x, raw.y
        n = len(y_pool)
        if n < 3:
            raise DatasetError(
                f"dataset {raw.name!r} needs at least 3 samples for train/val/test splits, found {n}; add samples."
            )
        n_test = min(max(1, round(test_fraction * n)), n - 2)
        test_idx, rest = _stratified_take(y_pool, n_test, _rng(seed, 1), cover="rest")
        n_val = min(max(1, round(val_fraction * n)), len(rest) - 1)
        val_pos, train_pos = _stratified_take(y_pool[rest], n_val, _rng(seed, 2), cover="rest")
        val_idx, train_idx = rest[val_pos], rest[train_pos]

    train_idx = _subsample(train_idx, y_pool, train_samples, _rng(seed, 3))
    val_idx = _subsample(val_idx, y_pool, val_samples, _rng(seed, 4))
    test_idx = _subsample(test_idx, y_test_pool, test_samples, _rng(seed, 5))

    x_train = _to_float(x_pool[train_idx])
    x_val = _to_float(x_pool[val_idx])
    x_test = _to_float(x_test_pool[test_idx])
    mean, std = _channel_stats(x_train)
    for x in (x_train, x_val, x_test):
        x -= mean[None, :, None, None]
        x /= std[None, :, None, None]

    params = {
        "seed": seed,
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "train_samples": train_samples,
        "val_samples": val_samples,
        "test_samples": test_samples,
    }
    fingerprint = hashlib.sha256(
        _content_digest(raw).encode() + json.dumps(params, sort_keys=True).encode()
    ).hexdigest()[:16]
    c, h, w = raw.x.shape[1:]
    return DatasetSplits(
        name=raw.name,
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_pool[train_idx].astype(np.int64)),
        x_val=torch.from_numpy(x_val),
        y_val=torch.from_numpy(y_pool[val_idx].astype(np.int64)),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test_pool[test_idx].astype(np.int64)),
        classes=raw.classes,
        input_shape=(int(c), int(h), int(w)),
        fingerprint=fingerprint,
        source=raw.source,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


def inspect_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    n_preview: int = 16,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> DatasetPreview:
    """Class counts over all samples and ``n_preview`` display images, drawn round-robin over classes.

    Example:
        >>> preview = inspect_dataset("digits", n_preview=4)
        >>> preview.preview_labels
        ['0', '1', '2', '3']
    """
    seed = _check_seed(seed)
    if isinstance(n_preview, bool) or not isinstance(n_preview, int) or n_preview < 0:
        raise DatasetError(f"n_preview must be a whole number >= 0, but got {n_preview!r}; pass e.g. n_preview=16.")
    raw = _load_raw(name_or_path, data_dir=data_dir, cache_dir=cache_dir)
    _validate_raw(raw)
    y_all = raw.y if raw.y_test is None else np.concatenate([raw.y, raw.y_test])
    counts = np.bincount(y_all, minlength=len(raw.classes))

    # Round-robin over classes so a preview of 16 shows every class, not 16 of the largest one.
    rng = _rng(seed, 6)
    per_class = [rng.permutation(np.flatnonzero(y_all == k)) for k in range(len(raw.classes))]
    picks: list[int] = []
    depth = 0
    while len(picks) < n_preview and any(depth < len(p) for p in per_class):
        picks.extend(int(p[depth]) for p in per_class if depth < len(p))
        depth += 1
    picks = picks[:n_preview]
    n_main = len(raw.y)
    images = []
    for i in picks:
        img = raw.x[i] if i < n_main else raw.x_test[i - n_main]  # type: ignore[index]
        images.append(_display_image(img))
    c, h, w = raw.x.shape[1:]
    return DatasetPreview(
        name=raw.name,
        classes=raw.classes,
        class_counts={cls: int(n) for cls, n in zip(raw.classes, counts)},
        input_shape=(int(c), int(h), int(w)),
        num_samples=int(len(y_all)),
        preview_images=images,
        preview_labels=[raw.classes[int(y_all[i])] for i in picks],
        source=raw.source,
    )


def _load_raw(
    name_or_path: str | os.PathLike[str], *, data_dir: str | None, cache_dir: str | Path | None
) -> RawDataset:
    """Resolve a registered name first, then a path; anything else is an unknown dataset."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DatasetError(
            f"dataset must be a name or a path, but got {name_or_path!r}; "
            f"use one of {_known_names()} or {_known_sources()}."
        )
    text = os.fspath(name_or_path).strip()
    if not text:
        raise DatasetError(f"dataset name is empty; use one of {_known_names()} or {_known_sources()}.")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    for candidate in (text, _canonical_name(text)):
        if candidate in DATASETS:
            return DATASETS.get(candidate)(data_dir=data_dir, cache_dir=cache)
    path = Path(text).expanduser()
    if not path.exists() and data_dir and not path.is_absolute():
        path = Path(data_dir).expanduser() / path  # "pets.zip" with --data-dir /data means /data/pets.zip
    if path.exists():
        return _load_path(path, cache)
    if _looks_like_path(text):
        raise DatasetError(
            f"dataset path {text!r} does not exist; check the path (relative paths start at "
            f"{Path.cwd()}) or upload the file again."
        )
    raise DatasetError(f"dataset {text!r} is unknown; use one of {_known_names()} or {_known_sources()}.")


def _known_sources() -> str:
    """How errors name the path formats: each registered reader's first suffix (a folder always works)."""
    primary = [READERS.get(n).suffixes[0] for n in READERS.names() if READERS.get(n).suffixes]
    return f"a path to a {'/'.join(primary)}/folder"


def _known_names() -> str:
    return ", ".join(DATASETS.names())


def _canonical_name(text: str) -> str:
    key = text.lower().replace("_", "-")
    aliases = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10"}
    return aliases.get(key, key)


def _looks_like_path(text: str) -> bool:
    return (
        "/" in text
        or os.sep in text
        or text.startswith(("~", "."))
        or text.lower().endswith(upload_suffixes())
    )


def _validate_raw(raw: RawDataset) -> None:
    """Rules every source must pass, whatever loader produced it."""
    if raw.x.ndim != 4 or raw.x.shape[0] != raw.y.shape[0]:
        raise DatasetError(
            f"dataset {raw.name!r} loader returned x of shape {raw.x.shape} and y of shape {raw.y.shape}; "
            "x must be (N, C, H, W) with one label per sample. Fix the loader."
        )
    if raw.y.dtype.kind not in "iu" or (raw.y_test is not None and raw.y_test.dtype.kind not in "iu"):
        raise DatasetError(
            f"dataset {raw.name!r} loader returned labels of dtype {raw.y.dtype}; return int64 class indices "
            "into `classes`. Fix the loader."
        )
    if raw.y.shape[0] == 0:
        raise DatasetError(f"dataset {raw.name!r} has no samples ({raw.source}); add labelled samples and try again.")
    if raw.y.size and (raw.y.min() < 0 or raw.y.max() >= len(raw.classes)):
        raise DatasetError(
            f"dataset {raw.name!r} has labels outside 0..{len(raw.classes) - 1} for classes {raw.classes}; "
            "fix the loader or the label files."
        )
    if raw.x_test is not None and raw.y_test is not None:
        if raw.x_test.shape[1:] != raw.x.shape[1:] or raw.x_test.shape[0] != raw.y_test.shape[0]:
            raise DatasetError(
                f"dataset {raw.name!r} test set has shape {raw.x_test.shape} but train has {raw.x.shape}; "
                "use matching train and test files."
            )
        if raw.y_test.size and (raw.y_test.min() < 0 or raw.y_test.max() >= len(raw.classes)):
            raise DatasetError(
                f"dataset {raw.name!r} test labels fall outside 0..{len(raw.classes) - 1}; use matching label files."
            )
    present = np.unique(raw.y)
    if len(present) < 2:
        found = ", ".join(repr(raw.classes[int(k)]) for k in present)
        raise DatasetError(
            f"dataset {raw.name!r} needs at least 2 classes, found {len(present)} ({found}); "
            "add samples of another class."
        )


def _check_seed(seed: int) -> int:
    try:
        value = operator.index(seed)
    except TypeError:
        value = -1
    if isinstance(seed, bool) or value < 0:
        raise DatasetError(f"seed must be a whole number >= 0, but got {seed!r}; pass e.g. seed=0.")
    return value


def _check_fraction(arg: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise DatasetError(f"{arg} must be a number between 0 and 1 (exclusive), but got {value!r}; try 0.15.")


def _check_samples(arg: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise DatasetError(f"{arg} must be a whole number > 0 or None for all samples, but got {value!r}.")
    return int(value)  # numpy integers would not survive json.dumps in the fingerprint


def _rng(seed: int, stage: int) -> np.random.Generator:
    # One independent stream per stage: changing train_samples never moves the val or test split.
    return np.random.default_rng([seed, stage])


def _subsample(idx: np.ndarray, labels: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or n >= len(idx):
        return idx
    taken, _ = _stratified_take(labels[idx], int(n), rng, cover="taken")
    return idx[taken]


def _stratified_take(
    labels: np.ndarray, k: int, rng: np.random.Generator, *, cover: Literal["taken", "rest"]
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions of ``k`` class-proportional picks and of the rest.

    ``cover`` names the side that should keep at least one sample of every class when the counts
    allow it (the training side), so rare classes are never split away from training. This is
    sklearn's stratified split without its import cost (~1 s) and without its failure on classes
    of one sample.
    """
    n = len(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    ideal = k * counts / n
    lo = np.zeros_like(counts)
    hi = counts.copy()
    if cover == "taken" and k >= len(classes):
        lo = np.ones_like(counts)
    if cover == "rest" and n - k >= len(classes):
        hi = counts - 1
    alloc = np.clip(np.floor(ideal).astype(counts.dtype), lo, hi)
    jitter = rng.random(len(classes)) * 1e-6  # seeded tie-break between equally deserving classes
    while alloc.sum() < k:
        gap = np.where(alloc < hi, ideal - alloc + jitter, -np.inf)
        alloc[int(np.argmax(gap))] += 1
    while alloc.sum() > k:
        gap = np.where(alloc > lo, ideal - alloc + jitter, np.inf)
        alloc[int(np.argmin(gap))] -= 1
    # Shuffle, then group by class keeping the shuffled order: each class's first alloc[c] are taken.
    order = rng.permutation(n)
    grouped = order[np.argsort(inverse[order], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[grouped] = np.arange(n) - starts[inverse[grouped]]
    taken = rank < alloc[inverse]
    return np.flatnonzero(taken), np.flatnonzero(~taken)


def _to_float(x: np.ndarray) -> np.ndarray:
    # Callers pass fancy-indexed copies, so normalising the result in place never touches the source.
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out *= np.float32(1 / 255)
        return out
    return np.ascontiguousarray(x, dtype=np.float32)


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = torch.from_numpy(x)
    var, mean = torch.var_mean(t.transpose(0, 1).reshape(t.shape[1], -1), dim=1, correction=0)
    std = var.sqrt()
    # A constant channel (e.g. a blank border) would divide by zero; leave it centred but unscaled.
    std = torch.where(std < 1e-8, torch.ones_like(std), std)
    return mean.numpy().astype(np.float32), std.numpy().astype(np.float32)


def _content_digest(raw: RawDataset) -> str:
    h = hashlib.sha256(f"moca-data-v{_FORMAT_VERSION}".encode())
    for arr in (raw.x, raw.y, raw.x_test, raw.y_test):
        if arr is None:
            h.update(b"none")
            continue
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))  # type: ignore[arg-type]  # numpy arrays are buffers; the stubs disagree
    h.update("\x00".join(raw.classes).encode())
    return h.hexdigest()


def _display_image(img: np.ndarray) -> np.ndarray:
    """(C, H, W) sample -> uint8 H x W or H x W x 3 for st.image; non-uint8 data is min-max scaled."""
    if img.dtype == np.uint8:
        out = img
    else:
        f = img.astype(np.float64)
        lo, hi = float(f.min()), float(f.max())
        out = ((f - lo) / (hi - lo) * 255).round().astype(np.uint8) if hi > lo else np.zeros(f.shape, np.uint8)
    if out.shape[0] == 3:
        return np.ascontiguousarray(out.transpose(1, 2, 0))
    return np.ascontiguousarray(out[0])


# --------------------------------------------------------------------------------------------
# Parsed-array cache
# --------------------------------------------------------------------------------------------




def _cached(cache_dir: Path | None, key_parts: Sequence[Any], build: Callable[[], RawDataset]) -> RawDataset:
    """Reuse parsed arrays from ``cache_dir`` when the source files (path, size, mtime) are unchanged."""
    if cache_dir is None:
        return build()
    key = hashlib.sha256(json.dumps([_FORMAT_VERSION, *key_parts], default=str).encode()).hexdigest()[:24]
    file = cache_dir / f"dataset-{key}.npz"
    if file.is_file():
        try:
            return _read_cache(file)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache file is rebuilt below, never trusted
    raw = build()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        arrays: dict[str, np.ndarray] = {
            "name": np.array(raw.name),
            "source": np.array(raw.source),
            "classes": np.array(raw.classes, dtype=str),
            "x": raw.x,
            "y": raw.y,
        }
        if raw.x_test is not None and raw.y_test is not None:
            arrays["x_test"], arrays["y_test"] = raw.x_test, raw.y_test
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, file)  # atomic: a concurrent reader sees the old state or the whole file
    except OSError as exc:
        warnings.warn(f"dataset cache {cache_dir} is not writable ({exc}); loading without a cache.", stacklevel=3)
    return raw


def _read_cache(file: Path) -> RawDataset:
    with np.load(file, allow_pickle=False) as npz:
        has_test = "x_test" in npz.files
        return RawDataset(
            name=str(npz["name"][()]),
            x=npz["x"],
            y=npz["y"].astype(np.int64),
            classes=tuple(str(c) for c in npz["classes"]),
            source=str(npz["source"][()]),
            x_test=npz["x_test"] if has_test else None,
            y_test=npz["y_test"].astype(np.int64) if has_test else None,
        )


# --------------------------------------------------------------------------------------------
# Built-in datasets
# --------------------------------------------------------------------------------------------


def _digits_csv() -> Path | None:
    # find_spec locates the package without importing it: importing sklearn.datasets costs ~1 s.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def _check_digits(data_dir: str | None) -> str | None:
    if _digits_csv() is None and importlib.util.find_spec("sklearn") is None:
        return "scikit-learn is not installed; install it with pip install scikit-learn."
    return None


@register_dataset(
    "digits",
    description="8x8 handwritten digits, 1,797 samples, 10 classes (scikit-learn, no download).",
    check=_check_digits,
)
def _load_digits(*, data_dir: str | None = None, cache_dir: Path | None = None) -> RawDataset:
    path = _digits_csv()
    if path is not None:
        data = np.loadtxt(path, delimiter=",", dtype=np.float32)  # the file sklearn's load_digits reads
        pixels, target = data[:, :-1], data[:, -1]
        source = "scikit-learn digits (bundled with scikit-learn: sklearn/datasets/data/digits.csv.gz)"
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise DatasetError(
                f"dataset 'digits' needs scikit-learn, which could not be imported ({exc}); pip install scikit-learn."
            ) from exc
        bunch = load_digits()
        pixels, target = bunch.data.astype(np.float32), bunch.target
        source = "scikit-learn digits"
    x = (pixels / np.float32(16)).reshape(-1, 1, 8, 8).astype(np.float32)  # pixels are counts 0..16
    return RawDataset(name="digits", x=x, y=target.astype(np.int64), classes=_DIGIT_CLASSES, source=source)


_IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _idx_dirs(name: str, data_dir: str | None) -> list[Path]:
    variants = [name, name.replace("-", "_"), name.replace("-", ""), _TORCHVISION_FOLDERS[name]]
    dirs: list[Path] = []
    if data_dir:
        base = Path(data_dir).expanduser()
        dirs.append(base)
        dirs.extend(base / v for v in variants)
        dirs.append(base / _TORCHVISION_FOLDERS[name] / "raw")  # torchvision's download layout
    dirs.extend(_SYSTEM_DATASET_ROOT / v for v in variants[:2])
    return list(dict.fromkeys(dirs))


def _idx_files_in(folder: Path) -> dict[str, Path] | None:
    found: dict[str, Path] = {}
    for role, stem in _IDX_STEMS.items():
        dotted = stem.replace("-idx", ".idx")  # the Kaggle copies name them train-images.idx3-ubyte
        for candidate in (stem, stem + ".gz", dotted, dotted + ".gz"):
            if (folder / candidate).is_file():
                found[role] = folder / candidate
                break
        else:
            return None
    return found


def _find_idx(name: str, data_dir: str | None) -> tuple[Path, dict[str, Path]] | None:
    for folder in _idx_dirs(name, data_dir):
        files = _idx_files_in(folder)
        if files is not None:
            return folder, files
    return None


def _idx_missing_reason(name: str, data_dir: str | None) -> str:
    looked = ", ".join(str(d) for d in _idx_dirs(name, data_dir))
    files = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (.gz or not)"
    if name == "fashion-mnist":
        fix = (
            "install the Debian package dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist) "
            "or pass --data-dir DIR with the IDX files"
        )
    else:
        fix = "pass --data-dir DIR with the IDX files (torchvision's MNIST download puts them in DIR/MNIST/raw)"
    return f"no {name} IDX files ({files}) found in {looked}; {fix}."


def _read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (LeCun's format: 2 zero bytes, dtype code, ndim, big-endian dims, data)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read(raw._MAX_TOTAL_BYTES + 1)  # bounded: a gzip bomb stops here
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"IDX file {path} cannot be read ({exc}); re-download or re-extract it.") from exc
    if len(data) > raw._MAX_TOTAL_BYTES:
        raise DatasetError(f"IDX file {path} holds more than 1 GiB of data; use a smaller file.")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DatasetError(
            f"IDX file {path} has a bad magic number {data[:4].hex() or '(empty file)'}; it is not an IDX file "
            "or it is corrupt. Re-download it (expected e.g. 00000803 for images, 00000801 for labels)."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"IDX file {path} is truncated inside its header; re-download it.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = math.prod(dims)
    if len(data) - header < count * dtype.itemsize:
        raise DatasetError(
            f"IDX file {path} is truncated: its header promises shape {dims} ({count * dtype.itemsize} bytes) "
            f"but only {len(data) - header} bytes follow; re-download it."
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)


def _load_idx_dataset(name: str, classes: tuple[str, ...], data_dir: str | None, cache_dir: Path | None) -> RawDataset:
    found = _find_idx(name, data_dir)
    if found is None:
        raise DatasetError(_idx_missing_reason(name, data_dir))
    folder, files = found

    def build() -> RawDataset:
        arrays = {role: _read_idx(path) for role, path in files.items()}
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.ndim != 3 or labels.ndim != 1 or images.dtype != np.uint8:
                raise DatasetError(
                    f"IDX files {files[f'{split}_images']} / {files[f'{split}_labels']} have shapes "
                    f"{images.shape} / {labels.shape}; expected uint8 images (N, H, W) and labels (N,). "
                    "Check that the files are not swapped."
                )
            if len(images) != len(labels):
                raise DatasetError(
                    f"IDX file {files[f'{split}_images']} has {len(images)} images but "
                    f"{files[f'{split}_labels']} has {len(labels)} labels; use files from the same release."
                )
            if labels.size and int(labels.max()) >= len(classes):
                raise DatasetError(
                    f"IDX file {files[f'{split}_labels']} has label {int(labels.max())}, but {name} has "
                    f"{len(classes)} classes; check that the files belong to {name}."
                )
        return RawDataset(
            name=name,
            x=arrays["train_images"][:, None],
            y=arrays["train_labels"].astype(np.int64),
            classes=classes,
            source=f"{folder} (IDX files; official t10k test set)",
            x_test=arrays["test_images"][:, None],
            y_test=arrays["test_labels"].astype(np.int64),
        )

    return _cached(cache_dir, [name, *(_file_stamp(p) for p in files.values())], build)


@register_dataset(
    "mnist",
    description="28x28 handwritten digits, 60,000 train + 10,000 test, 10 classes (IDX files).",
    check=lambda data_dir: None if _find_idx("mnist", data_dir) else _idx_missing_reason("mnist", data_dir),
)
def _load_mnist(*, data_dir: str | None = None, cache_dir: Path | None = None) -> RawDataset:
    return _load_idx_dataset("mnist", _DIGIT_CLASSES, data_dir, cache_dir)


@register_dataset(
    "fashion-mnist",
    description="28x28 clothing images, 60,000 train + 10,000 test, 10 classes (IDX files).",
    check=lambda data_dir: (
        None if _find_idx("fashion-mnist", data_dir) else _idx_missing_reason("fashion-mnist", data_dir)
    ),
)
def _load_fashion_mnist(*, data_dir: str | None = None, cache_dir: Path | None = None) -> RawDataset:
    return _load_idx_dataset("fashion-mnist", FASHION_MNIST_CLASSES, data_dir, cache_dir)


@lru_cache(maxsize=1)
def _torchvision_problem() -> str | None:
    """Why torchvision cannot be used here, or None; cached because a failing import is slow to repeat."""
    try:
        import torchvision  # noqa: F401  (lazy: on CPU-only machines its import can fail)
    except (ImportError, RuntimeError, OSError) as exc:
        return f"torchvision could not be imported ({type(exc).__name__}: {exc})"
    return None


def _torchvision_fix() -> str:
    return (
        f"install the torchvision release that matches torch {torch.__version__} "
        "(pip install torchvision with the same index URL you used for torch)"
    )


def _default_download_root() -> Path:
    # Same rule as nas_core.workspace.default_workspace(): downloads stay in the workspace.
    return Path(os.environ.get("MOCA_HOME") or "moca_runs") / "datasets"


def _check_cifar10(data_dir: str | None) -> str | None:
    problem = _torchvision_problem()
    if problem is not None:
        return f"{problem}; {_torchvision_fix()}, then place 'cifar-10-batches-py' in --data-dir or allow the download."
    return None


@register_dataset(
    "cifar10",
    description="32x32 colour images, 50,000 train + 10,000 test, 10 classes (torchvision; downloads ~170 MB once).",
    check=_check_cifar10,
)
def _load_cifar10(*, data_dir: str | None = None, cache_dir: Path | None = None) -> RawDataset:
    problem = _torchvision_problem()
    if problem is not None:
        raise DatasetError(f"dataset 'cifar10' is read through torchvision, but {problem}; {_torchvision_fix()}.")
    root = Path(cache_dir or data_dir or _default_download_root()).expanduser()
    try:
        from torchvision.datasets import CIFAR10

        train = CIFAR10(root=str(root), train=True, download=True)
        test = CIFAR10(root=str(root), train=False, download=True)
    except (ImportError, RuntimeError, OSError, ValueError) as exc:  # URLError is an OSError
        raise DatasetError(
            f"dataset 'cifar10' could not be downloaded or read into {root} ({type(exc).__name__}: {exc}); "
            "connect to the internet once, or place the extracted python-version folder "
            "'cifar-10-batches-py' in --data-dir."
        ) from exc
    return RawDataset(
        name="cifar10",
        x=np.ascontiguousarray(np.asarray(train.data, dtype=np.uint8).transpose(0, 3, 1, 2)),
        y=np.asarray(train.targets, dtype=np.int64),
        classes=tuple(train.classes),
        source=f"{root} (torchvision CIFAR-10; official test set)",
        x_test=np.ascontiguousarray(np.asarray(test.data, dtype=np.uint8).transpose(0, 3, 1, 2)),
        y_test=np.asarray(test.targets, dtype=np.int64),
    )


# --------------------------------------------------------------------------------------------
# Custom paths: folders and zips of class folders, CSV, NPZ
# --------------------------------------------------------------------------------------------


def _load_path(path: Path, cache_dir: Path | None) -> RawDataset:
    """Read a path with the registered reader that takes it (:mod:`nas_core.data.readers`), through the parse cache."""
    name = path.stem if path.is_file() else path.resolve().name
    reader = reader_for(path)
    return _cached(cache_dir, reader.cache_key(path), partial(reader.read, path, name))




































