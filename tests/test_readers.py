"""Conformance of every registered dataset reader: its example reads back, its suffixes choose it, bad bytes give one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas_core.data import load_dataset
from nas_core.data.raw import RawDataset
from nas_core.data.readers import READERS, Reader, reader_for, upload_suffixes
from nas_core.errors import DatasetError

NAMES = READERS.names()


def test_the_built_ins_are_registered() -> None:
    assert NAMES[:4] == ["zip", "csv", "npz", "folder"]
    assert {".zip", ".csv", ".npz"} <= set(upload_suffixes())


@pytest.mark.parametrize("name", NAMES)
def test_declarations(name: str) -> None:
    reader = READERS.get(name)
    assert isinstance(reader, Reader) and reader.name == name and reader.description
    assert all(s.startswith(".") and s == s.lower() for s in reader.suffixes)


@pytest.mark.parametrize("name", NAMES)
def test_the_example_reads_back_and_loads_end_to_end(name: str, tmp_path: Path) -> None:
    reader = READERS.get(name)
    path = reader.write_example(tmp_path)
    assert reader_for(path) is reader
    raw = reader.read(path, "example")
    assert isinstance(raw, RawDataset) and raw.x.ndim == 4 and len(raw.x) == len(raw.y) >= 20
    assert raw.y.dtype == np.int64 and set(np.unique(raw.y)) <= set(range(len(raw.classes))) and len(raw.classes) >= 2
    splits = load_dataset(str(path), seed=0)
    assert splits.num_classes == len(raw.classes) and len(splits.y_train) > 0


@pytest.mark.parametrize("name", [n for n in NAMES if READERS.get(n).suffixes])
def test_every_suffix_chooses_the_reader_and_garbage_is_one_clear_error(name: str, tmp_path: Path) -> None:
    reader = READERS.get(name)
    for suffix in reader.suffixes:
        bad = tmp_path / f"garbage{suffix}"
        bad.write_bytes(b"\x00\x01 not a dataset \xff" * 3)
        assert reader_for(bad) is reader
        with pytest.raises(DatasetError) as exc:
            load_dataset(str(bad))
        assert "garbage" in str(exc.value) and "Traceback" not in str(exc.value)


def test_an_unknown_suffix_lists_every_format(tmp_path: Path) -> None:
    odd = tmp_path / "data.parquet"
    odd.write_bytes(b"x")
    with pytest.raises(DatasetError, match="unsupported type '.parquet'") as exc:
        load_dataset(str(odd))
    for name in NAMES:
        assert READERS.get(name).description in str(exc.value)
