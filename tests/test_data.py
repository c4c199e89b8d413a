"""Tests for nas_core.data: every source (built-in, IDX, folder, zip, CSV, NPZ) on real small data."""

from __future__ import annotations

import gzip
import io
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas_core import data
from nas_core.data import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    DatasetSplits,
    RawDataset,
    inspect_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from nas_core.errors import DatasetError, NasCoreError, RegistryError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------------
# Helpers that build real small datasets on disk
# ---------------------------------------------------------------------------------------------


def _png(value: int | tuple[int, int, int], *, size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    """A PNG whose pixels hold ``value`` plus a gradient, so images differ and resizing has work to do."""
    w, h = size
    ramp = (np.arange(w * h).reshape(h, w) % 7).astype(np.int64)
    if mode == "L":
        arr = np.clip(int(value) + ramp, 0, 255).astype(np.uint8)  # type: ignore[arg-type]
    else:
        arr = np.clip(np.array(value)[None, None, :] + ramp[..., None], 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _class_files(counts: dict[str, int], *, mode: str = "L", size: tuple[int, int] = (8, 8)) -> dict[str, bytes]:
    files = {}
    for k, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            value: int | tuple[int, int, int] = 40 * k + i if mode == "L" else (40 * k, 10 * i, 200 - 40 * k)
            files[f"{cls}/{i:03d}.png"] = _png(value, size=size, mode=mode)
    return files


def _write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, payload in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
    return root


def _write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in files.items():
            zf.writestr(name, payload)
    return path


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _write_mnist(folder: Path, *, n_train: int = 40, n_test: int = 12, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 6, 5)))
        _write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", np.arange(n) % 10)
    return folder


def _assert_readable(exc: pytest.ExceptionInfo[DatasetError], *needles: str) -> None:
    """A user-facing message: one line of plain text naming what is wrong."""
    message = str(exc.value)
    assert isinstance(exc.value, NasCoreError)
    assert "Traceback" not in message and message.strip() == message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def _all_rows(splits: DatasetSplits) -> np.ndarray:
    """Undo normalisation and return every split's samples as rows (digits pixels 0..16)."""
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    xs = [x * std + mean for x in (splits.x_train, splits.x_val, splits.x_test)]
    return np.rint(torch.cat(xs).reshape(-1, 64).numpy() * 16).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# digits: shapes, disjoint splits, determinism, subsampling, normalisation
# ---------------------------------------------------------------------------------------------


def test_digits_splits_partition_the_dataset_with_expected_shapes() -> None:
    from sklearn.datasets import load_digits

    splits = load_dataset("digits", seed=0)
    reference = load_digits()
    n = len(reference.target)

    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 10
    assert splits.classes == tuple(str(i) for i in range(10))
    sizes = splits.summary()["sizes"]
    assert sizes == {"train": n - 2 * round(0.15 * n), "val": round(0.15 * n), "test": round(0.15 * n)}
    for x, y in ((splits.x_train, splits.y_train), (splits.x_val, splits.y_val), (splits.x_test, splits.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and x.shape[0] == y.shape[0]
        assert set(y.unique().tolist()) == set(range(10))  # stratified: every class in every split
    # Together the splits are exactly the dataset (as a multiset), so they are disjoint and complete.
    rows = _all_rows(splits)
    labels = torch.cat([splits.y_train, splits.y_val, splits.y_test]).numpy()
    got = sorted(map(tuple, np.column_stack([rows, labels]).tolist()))
    want = sorted(map(tuple, np.column_stack([reference.data.astype(np.int64), reference.target]).tolist()))
    assert got == want


def test_digits_is_deterministic_by_seed() -> None:
    a = load_dataset("digits", seed=3)
    b = load_dataset("digits", seed=3)
    c = load_dataset("digits", seed=4)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) >= 16
    assert not torch.equal(a.y_train, c.y_train)
    assert a.fingerprint != c.fingerprint


def test_digits_normalised_with_train_statistics() -> None:
    splits = load_dataset("digits", seed=0)
    assert len(splits.mean) == len(splits.std) == 1
    assert abs(float(splits.x_train.mean())) < 1e-4
    assert abs(float(splits.x_train.std(unbiased=False)) - 1) < 1e-3
    assert 0 < splits.mean[0] < 1 and 0 < splits.std[0] < 1  # statistics of pixels scaled to 0..1


def test_subsampling_counts_are_stratified_and_leave_splits_in_place() -> None:
    full = load_dataset("digits", seed=1)
    small = load_dataset("digits", seed=1, train_samples=100, val_samples=50, test_samples=30)
    assert small.summary()["sizes"] == {"train": 100, "val": 50, "test": 30}
    assert torch.bincount(small.y_train, minlength=10).min() >= 9  # proportional: ~10 per class
    assert small.fingerprint != full.fingerprint
    # Subsampling train does not move the val split (the val split is carved first).
    only_train = load_dataset("digits", seed=1, train_samples=100)
    assert torch.equal(only_train.y_val, full.y_val)
    # Asking for more than exists keeps everything.
    assert load_dataset("digits", seed=1, train_samples=10**6).y_train.shape == full.y_train.shape


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        pytest.param({"train_samples": 0}, "train_samples", id="zero-train"),
        pytest.param({"val_samples": -5}, "val_samples", id="negative-val"),
        pytest.param({"val_fraction": 0.0}, "val_fraction", id="zero-val-fraction"),
        pytest.param({"test_fraction": 1.5}, "test_fraction", id="big-test-fraction"),
        pytest.param({"val_fraction": 0.6, "test_fraction": 0.5}, "below 1", id="fractions-sum"),
        pytest.param({"seed": -1}, "seed", id="negative-seed"),
    ],
)
def test_bad_split_arguments_are_refused(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("digits", **kwargs)  # type: ignore[arg-type]
    _assert_readable(exc, needle)


# ---------------------------------------------------------------------------------------------
# IDX: Fashion-MNIST from the Debian package, tiny MNIST written here
# ---------------------------------------------------------------------------------------------


def test_fashion_mnist_from_debian_package() -> None:
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} missing (Debian package dataset-fashion-mnist not installed)")
    splits = load_dataset("fashion-mnist", train_samples=500, val_samples=200, test_samples=300)
    assert splits.classes == FASHION_MNIST_CLASSES and splits.classes[0] == "T-shirt/top"
    assert splits.input_shape == (1, 28, 28)
    assert splits.summary()["sizes"] == {"train": 500, "val": 200, "test": 300}
    assert set(splits.y_train.tolist()) == set(range(10))
    assert str(FASHION_DIR) in splits.source and "test" in splits.source


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("subdir", ["", "mnist", "MNIST/raw"], ids=["data-dir", "named-subdir", "torchvision-layout"])
def test_mnist_idx_from_data_dir(tmp_path: Path, gz: bool, subdir: str) -> None:
    _write_mnist(tmp_path / subdir, n_train=40, n_test=12, gz=gz)
    splits = load_dataset("mnist", data_dir=str(tmp_path), seed=0)
    assert splits.input_shape == (1, 6, 5)
    assert splits.y_test.shape == (12,)  # the official t10k set is the test split, untouched
    assert splits.y_train.shape[0] + splits.y_val.shape[0] == 40
    assert splits.y_val.shape[0] == 6  # round(0.15 * 40)
    assert splits.classes == tuple(str(i) for i in range(10))
    assert next(d for d in list_datasets(data_dir=str(tmp_path)) if d.name == "mnist").available


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        pytest.param(b"\x12\x34\x08\x03" + b"\x00" * 20, "bad magic number", id="bad-magic"),
        pytest.param(b"", "bad magic number", id="empty"),
        pytest.param(bytes([0, 0, 8, 3]) + struct.pack(">3I", 40, 6, 5) + b"\x00" * 10, "truncated", id="short"),
    ],
)
def test_corrupt_idx_file_names_the_file(tmp_path: Path, payload: bytes, needle: str) -> None:
    _write_mnist(tmp_path, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(payload)
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", data_dir=str(tmp_path))
    _assert_readable(exc, str(bad), needle)


def test_missing_idx_files_explain_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_SYSTEM_DATASET_ROOT", tmp_path / "nothing-here")
    infos = {d.name: d for d in list_datasets(data_dir=str(tmp_path))}
    assert not infos["fashion-mnist"].available
    assert "sudo apt-get install dataset-fashion-mnist" in infos["fashion-mnist"].reason
    assert "--data-dir" in infos["mnist"].reason
    with pytest.raises(DatasetError) as exc:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    _assert_readable(exc, "dataset-fashion-mnist", "--data-dir")


def test_cache_dir_reuses_parsed_arrays(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "mnist")
    cache = tmp_path / "cache"
    first = load_dataset("mnist", data_dir=str(tmp_path), cache_dir=cache)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1
    second = load_dataset("mnist", data_dir=str(tmp_path), cache_dir=cache)
    assert second.fingerprint == first.fingerprint and torch.equal(second.x_train, first.x_train)
    files[0].write_bytes(b"not an npz")  # a damaged cache is rebuilt, not trusted
    third = load_dataset("mnist", data_dir=str(tmp_path), cache_dir=cache)
    assert third.fingerprint == first.fingerprint


# ---------------------------------------------------------------------------------------------
# Folders and zips of class sub-folders
# ---------------------------------------------------------------------------------------------


def test_folder_of_class_folders(tmp_path: Path) -> None:
    files = _class_files({"cat": 6, "dog": 5, "owl": 4})
    files["dog/notes.txt"] = b"ignored: not an image"
    files[".hidden/000.png"] = _png(0)
    root = _write_tree(tmp_path / "pets", files)
    splits = load_dataset(str(root), seed=0)
    assert splits.name == "pets"
    assert splits.classes == ("cat", "dog", "owl")
    assert splits.input_shape == (1, 8, 8)  # all grayscale -> one channel
    assert sum(splits.summary()["sizes"].values()) == 15
    assert set(splits.y_train.tolist()) == {0, 1, 2}


def test_zip_with_wrapper_folder_rgb_and_mixed_sizes(tmp_path: Path) -> None:
    files = {f"shapes/{k}": v for k, v in _class_files({"red": 4, "blue": 4}, mode="RGB", size=(10, 12)).items()}
    files["shapes/red/big.png"] = _png((255, 0, 0), size=(100, 120), mode="RGB")  # resized to the common size
    files["__MACOSX/shapes/red/._000.png"] = b"resource fork junk"
    archive = _write_zip(tmp_path / "shapes.zip", files)
    splits = load_dataset(str(archive), seed=0)
    assert splits.name == "shapes" and splits.classes == ("blue", "red")
    assert splits.input_shape == (3, 12, 10)  # (C, H, W) of the most common 10x12 (W x H) size
    assert sum(splits.summary()["sizes"].values()) == 9


def test_large_images_are_capped_at_64_pixels(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "big", _class_files({"a": 3, "b": 3}, size=(128, 96)))
    splits = load_dataset(str(root))
    assert splits.input_shape == (1, 48, 64)


def test_numeric_class_folders_sort_as_numbers(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "nums", _class_files({"10": 3, "2": 3, "1": 3}))
    assert load_dataset(str(root)).classes == ("1", "2", "10")


def _symlink_zip(path: Path) -> Path:
    info = zipfile.ZipInfo("cats/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in _class_files({"cats": 2, "dogs": 2}).items():
            zf.writestr(name, payload)
        zf.writestr(info, "/etc/passwd")
    return path


def _huge_png() -> bytes:
    """A real PNG header claiming 10000 x 10000 pixels: refused before any pixel is decoded."""
    png = _png(0, size=(4, 4))
    ihdr_start = 8 + 4  # signature, then chunk length
    body = bytearray(png[ihdr_start : ihdr_start + 4 + 13])  # b"IHDR" + 13 data bytes
    body[4:12] = struct.pack(">II", 10_000, 10_000)
    crc = struct.pack(">I", zlib.crc32(bytes(body)) & 0xFFFFFFFF)
    return png[:ihdr_start] + bytes(body) + crc + png[ihdr_start + 4 + 13 + 4 :]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        pytest.param({"../evil.png": _png(0)}, ["../evil.png", "unsafe path"], id="dot-dot"),
        pytest.param({"/abs/evil.png": _png(0)}, ["/abs/evil.png", "unsafe path"], id="absolute"),
        pytest.param({"cats\\..\\..\\evil.png": _png(0)}, ["evil.png", "unsafe path"], id="backslash-dot-dot"),
        pytest.param({"cats/x.png": b"this is text, not a PNG"}, ["cats/x.png", "not a valid image"], id="text-as-png"),
        pytest.param({"cats/trunc.png": _png(0)[:40]}, ["cats/trunc.png", "not a valid image"], id="truncated-png"),
        pytest.param({"cats/huge.png": _huge_png()}, ["cats/huge.png", "pixels"], id="pixel-bomb"),
    ],
)
def test_hostile_or_broken_zip_is_refused(tmp_path: Path, extra: dict[str, bytes], needles: list[str]) -> None:
    archive = _write_zip(tmp_path / "bad.zip", {**_class_files({"cats": 2, "dogs": 2}), **extra})
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(archive))
    _assert_readable(exc, *needles)
    assert not (tmp_path / "evil.png").exists() and not Path("/abs/evil.png").exists()


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(_symlink_zip(tmp_path / "link.zip")))
    _assert_readable(exc, "cats/link.png", "symbolic link")


@pytest.mark.parametrize(
    ("limit", "value", "needle"),
    [
        pytest.param("_MAX_MEMBERS", 3, "members", id="too-many-members"),
        pytest.param("_MAX_MEMBER_BYTES", 50, "100 MiB", id="member-too-big"),
        pytest.param("_MAX_TOTAL_BYTES", 100, "1 GiB", id="archive-too-big"),
    ],
)
def test_zip_size_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str, value: int, needle: str) -> None:
    archive = _write_zip(tmp_path / "many.zip", _class_files({"cats": 2, "dogs": 2}))
    monkeypatch.setattr(data.raw, limit, value)  # the limits every reader enforces live in nas_core.data.raw
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(archive))
    _assert_readable(exc, "many.zip", needle)


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_text("hello")
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(fake))
    _assert_readable(exc, "fake.zip", "not a readable zip")


def test_inspect_zip_gives_counts_and_preview(tmp_path: Path) -> None:
    archive = _write_zip(tmp_path / "pets.zip", _class_files({"cat": 5, "dog": 3}, mode="RGB"))
    preview = inspect_dataset(str(archive), n_preview=4)
    assert preview.classes == ("cat", "dog")
    assert preview.class_counts == {"cat": 5, "dog": 3} and preview.num_samples == 8
    assert preview.input_shape == (3, 8, 8)
    assert len(preview.preview_images) == len(preview.preview_labels) == 4
    assert set(preview.preview_labels) == {"cat", "dog"}  # round-robin shows every class
    for img in preview.preview_images:
        assert img.dtype == np.uint8 and img.shape == (8, 8, 3)


def test_inspect_grayscale_preview_is_2d() -> None:
    preview = inspect_dataset("digits", n_preview=3)
    assert [img.shape for img in preview.preview_images] == [(8, 8)] * 3
    assert preview.preview_images[0].dtype == np.uint8 and preview.num_samples == 1797


# ---------------------------------------------------------------------------------------------
# CSV and NPZ
# ---------------------------------------------------------------------------------------------


def _csv_text(n_features: int, *, label_first: bool = False, header: bool = True, n_rows: int = 12) -> str:
    rng = np.random.default_rng(0)
    names = [f"px{i}" for i in range(n_features)]
    rows = []
    for r in range(n_rows):
        feats = [str(int(v)) for v in rng.integers(0, 255, n_features)]
        label = ["cat", "dog", "owl"][r % 3]
        rows.append(",".join([label, *feats] if label_first else [*feats[:1], label, *feats[1:]]))
    head = ",".join(["label", *names] if label_first else [names[0], "label", *names[1:]])
    return "\n".join(([head] if header else []) + rows) + "\n"


@pytest.mark.parametrize(
    ("n_features", "shape"),
    [
        pytest.param(16, (1, 4, 4), id="square"),
        pytest.param(12, (3, 2, 2), id="rgb"),
        pytest.param(5, (1, 1, 5), id="tabular"),
    ],
)
def test_csv_label_column_and_shapes(tmp_path: Path, n_features: int, shape: tuple[int, int, int]) -> None:
    path = tmp_path / "table.csv"
    path.write_text(_csv_text(n_features))  # "label" is the second column: found by name
    splits = load_dataset(str(path))
    assert splits.input_shape == shape
    assert splits.classes == ("cat", "dog", "owl")
    assert sum(splits.summary()["sizes"].values()) == 12


def test_csv_without_header_uses_first_column_as_label(tmp_path: Path) -> None:
    path = tmp_path / "raw.csv"
    path.write_text("\n".join(f"{i % 2},{i},{i * 2},{i * 3},{i * 4}" for i in range(10)) + "\n")
    splits = load_dataset(str(path))
    assert splits.classes == ("0", "1") and splits.input_shape == (1, 2, 2)
    assert sum(splits.summary()["sizes"].values()) == 10  # the first row is data, not a header


def test_csv_non_numeric_feature_names_the_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("label,a,colour\n0,1,red\n1,2,blue\n0,3,red\n1,4,blue\n")
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(path))
    _assert_readable(exc, "'colour'", "not numeric", "'red'")


def _npz_x(layout: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    shapes = {"NHW": (n, 6, 5), "NHWC": (n, 6, 5, 3), "NHW1": (n, 6, 5, 1), "NCHW": (n, 3, 6, 5), "NF": (n, 7)}
    return rng.integers(0, 256, shapes[layout]).astype(np.uint8)


@pytest.mark.parametrize(
    ("layout", "shape"),
    [
        pytest.param("NHW", (1, 6, 5), id="NHW"),
        pytest.param("NHWC", (3, 6, 5), id="NHWC"),
        pytest.param("NHW1", (1, 6, 5), id="NHW1"),
        pytest.param("NCHW", (3, 6, 5), id="NCHW"),
        pytest.param("NF", (1, 1, 7), id="NF"),
    ],
)
def test_npz_layouts(tmp_path: Path, layout: str, shape: tuple[int, int, int]) -> None:
    path = tmp_path / "arrays.npz"
    np.savez(path, x=_npz_x(layout, 20), y=np.array(["a", "b"] * 10))
    splits = load_dataset(str(path), seed=2)
    assert splits.input_shape == shape and splits.classes == ("a", "b")
    assert sum(splits.summary()["sizes"].values()) == 20


def test_npz_channels_last_keeps_pixels(tmp_path: Path) -> None:
    x = _npz_x("NHWC", 20)
    path = tmp_path / "rgb.npz"
    np.savez(path, x=x, y=np.arange(20) % 2)
    preview = inspect_dataset(str(path), n_preview=20)
    shown = sorted(img.tobytes() for img in preview.preview_images)
    assert shown == sorted(img.tobytes() for img in x)  # transposed to CHW and back, not scrambled


def test_npz_missing_key_lists_keys_found(tmp_path: Path) -> None:
    path = tmp_path / "keys.npz"
    np.savez(path, images=_npz_x("NHW", 4), labels=np.arange(4))
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(path))
    _assert_readable(exc, "'x'", "'y'", "images", "labels")


def test_npz_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "pickle.npz"
    np.savez(path, x=_npz_x("NHW", 4), y=np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(path))
    _assert_readable(exc, "pickle.npz", "unpickling")


# ---------------------------------------------------------------------------------------------
# Rules every source shares: no samples, one class, unknown names, missing paths
# ---------------------------------------------------------------------------------------------


def _empty_csv(tmp_path: Path) -> str:
    (tmp_path / "empty.csv").write_text("label,a,b\n")
    return str(tmp_path / "empty.csv")


def _empty_npz(tmp_path: Path) -> str:
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0, np.int64))
    return str(tmp_path / "empty.npz")


def _empty_folder(tmp_path: Path) -> str:
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    return str(tmp_path / "empty")


def _empty_zip(tmp_path: Path) -> str:
    return str(_write_zip(tmp_path / "empty.zip", {"readme.txt": b"no images"}))


@pytest.mark.parametrize("make", [_empty_csv, _empty_npz, _empty_folder, _empty_zip], ids=["csv", "npz", "folder", "zip"])
def test_empty_data_says_no_samples(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DatasetError) as exc:
        load_dataset(make(tmp_path))
    _assert_readable(exc, "no samples")


def test_one_class_is_refused_naming_the_class(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "solo", _class_files({"cat": 4}))
    for source in (str(root), str(_write_zip(tmp_path / "solo.zip", _class_files({"cat": 4})))):
        with pytest.raises(DatasetError) as exc:
            load_dataset(source)
        _assert_readable(exc, "needs at least 2 classes, found 1 ('cat')")


def test_class_with_one_sample_does_not_break_splits(tmp_path: Path) -> None:
    path = tmp_path / "rare.npz"
    y = np.array([0] * 10 + [1] * 10 + [2])
    np.savez(path, x=np.arange(21 * 4, dtype=np.float32).reshape(21, 2, 2), y=y)
    splits = load_dataset(str(path), seed=0, train_samples=5)
    assert 2 in load_dataset(str(path), seed=0).y_train.tolist()  # the single sample stays in training
    assert splits.num_classes == 3 and splits.y_train.shape == (5,)


def test_tiny_dataset_needs_three_samples(tmp_path: Path) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, x=np.zeros((2, 2, 2), np.float32), y=np.array([0, 1]))
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(path))
    _assert_readable(exc, "at least 3 samples", "found 2")


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("imagenet-21k")
    _assert_readable(exc, "'imagenet-21k' is unknown", "digits", "fashion-mnist", ".zip/.csv/.npz/folder")


@pytest.mark.parametrize("missing", ["no/such/dir", "nothing.zip", "./gone.csv"])
def test_missing_path_says_it_does_not_exist(missing: str) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset(missing)
    _assert_readable(exc, repr(missing), "does not exist")


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = tmp_path / "notes.pdf"
    path.write_bytes(b"%PDF")
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(path))
    _assert_readable(exc, "'.pdf'", "unsupported")


def test_names_are_case_and_separator_insensitive() -> None:
    assert load_dataset("Digits", train_samples=20).name == "digits"


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


def test_list_datasets_reports_availability() -> None:
    infos = {info.name: info for info in list_datasets()}
    assert {"digits", "mnist", "fashion-mnist", "cifar10"} <= set(infos)
    assert infos["digits"].available and infos["digits"].reason == ""
    for info in infos.values():
        assert info.description
        assert info.available or info.reason.strip(), f"{info.name} unavailable without a reason"


def test_cifar10_without_torchvision_explains_the_fix() -> None:
    if data._torchvision_problem() is None:
        pytest.skip("torchvision imports here; the failure path cannot be shown")
    info = next(i for i in list_datasets() if i.name == "cifar10")
    assert not info.available and "torchvision" in info.reason
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10")
    _assert_readable(exc, "torchvision", "install")


@pytest.fixture
def blobs_dataset():  # type: ignore[no-untyped-def]
    name = "test-blobs"

    def check(data_dir: str | None) -> str | None:
        return None if data_dir is None else f"blobs ignore data_dir {data_dir!r}; pass none."

    @register_dataset(name, description="two Gaussian blobs", check=check)
    def _load(*, data_dir: str | None = None, cache_dir: Path | None = None) -> RawDataset:
        rng = np.random.default_rng(0)
        x = np.concatenate([rng.normal(0, 1, (20, 1, 2, 2)), rng.normal(3, 1, (20, 1, 2, 2))]).astype(np.float32)
        return RawDataset(name=name, x=x, y=np.repeat([0, 1], 20), classes=("low", "high"), source="generated")

    yield name
    # The registry is global; leave it as the other tests expect it.
    DATASETS._entries.pop(name, None)
    data._META.pop(name, None)


def test_registered_dataset_loads_and_lists(blobs_dataset: str) -> None:
    splits = load_dataset(blobs_dataset)
    assert splits.classes == ("low", "high") and splits.input_shape == (1, 2, 2)
    infos = {i.name: i for i in list_datasets(data_dir="/somewhere")}
    assert not infos[blobs_dataset].available and "data_dir" in infos[blobs_dataset].reason
    with pytest.raises(RegistryError):
        register_dataset(blobs_dataset, description="again", check=lambda d: None)(lambda **kw: None)  # type: ignore[arg-type,return-value]
