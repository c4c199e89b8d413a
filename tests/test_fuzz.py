"""Property-based fuzzing of what users hand us: config JSON, search-space files and dataset uploads.

The property is the same everywhere: any input is either accepted or refused with a ``NasCoreError`` (which the
CLI prints as one ``error:`` line with exit 2, and the UI as ``st.error``); never another exception.
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas_core.cli import main
from nas_core.dashboard import class_counts_frame, save_upload, tile
from nas_core.data import inspect_dataset, load_dataset
from nas_core.errors import NasCoreError
from nas_core.search import SearchConfig
from nas_core.space import load_space

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                          HealthCheck.too_slow])

# JSON values a hand edit or a broken tool might leave: wrong types, out-of-range and odd numbers, odd text
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**40), max_value=2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["relu", "conv", "mbconv", "attention", "adam", "sgd", "", "NaN", "-1", "1e9"]),
)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=8)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> str:
    """A JSON document made from ``base`` by a few replacements, deletions or a truncation."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        delete = bool(path) and draw(st.booleans())
        doc = _set(doc, path, None if delete else draw(json_value), delete)
    text = json.dumps(doc, allow_nan=True)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _assert_clean(code: int, err: str) -> None:
    assert "Traceback" not in err, err
    if code != 0:
        assert code == 2, err
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_config_json_is_loaded_or_refused_in_one_line(tiny_study, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    base = json.loads(tiny_study.best_config.read_text())

    @FUZZ
    @given(text=mutated(base))
    def check(text: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "best_config.json"
            cfg.write_text(text)
            code, err = _cli(["export", "--config", str(cfg), "--format", "safetensors", "--out", str(Path(tmp) / "m.safetensors")], capsys)
            _assert_clean(code, err)

    check()


def test_space_files_are_loaded_or_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    bases = [load_space("seed-cnn").to_dict(), load_space("modular").to_dict(),
             {"base": "seed-cnn", "params": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "n_conv": {"low": 1, "high": 3}}}]

    @FUZZ
    @given(base=st.sampled_from(range(len(bases))), data=st.data())
    def check(base: int, data: st.DataObject) -> None:
        text = data.draw(mutated(bases[base]))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "space.json"
            path.write_text(text)
            code, err = _cli(["spaces", str(path)], capsys)
            _assert_clean(code, err)
            try:  # what `search --space FILE` checks before it touches any storage
                SearchConfig(space=str(path), workspace=tmp, trials=1).validate()
            except NasCoreError:
                pass

    check()


# --- uploads -------------------------------------------------------------------------------------------------------

cell = st.one_of(st.integers(-300, 300), st.floats(allow_nan=True, allow_infinity=True, width=32), st.text(max_size=5),
                 st.just(""))


@st.composite
def csv_upload(draw: st.DrawFn) -> bytes:
    cols = draw(st.integers(0, 6))
    header = draw(st.sampled_from([["label", *(f"p{i}" for i in range(cols))], [f"c{i}" for i in range(cols + 1)], []]))
    rows = draw(st.lists(st.lists(cell, min_size=0, max_size=cols + 2), max_size=30))
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    return "\n".join(lines).encode()


@st.composite
def npz_upload(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 12))
    shape = draw(st.sampled_from([(n,), (n, 4), (n, 4, 4), (n, 3, 3, 1), (n, 2, 2, 3), (n, 1, 1, 1, 1), (n, 0, 4)]))
    dtype = draw(st.sampled_from(["uint8", "float32", "float64", "int64", "bool", "complex64", "U3"]))
    x = np.asarray(draw(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))) or [0.0])
    x = x[: int(np.prod(shape))].reshape(shape) if int(np.prod(shape)) == x.size else np.zeros(shape)
    y = np.asarray(draw(st.lists(st.integers(-2, 5), min_size=draw(st.integers(0, n + 1)), max_size=n + 1)))
    arrays = {"x": x.astype(dtype) if dtype != "U3" else x.astype(str).astype("U3"), "y": y}
    for key in draw(st.lists(st.sampled_from(["x", "y"]), max_size=1, unique=True)):
        arrays.pop(key)
    if draw(st.booleans()):
        arrays["extra"] = np.arange(3)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _png(draw: st.DrawFn) -> bytes:
    from PIL import Image

    size = draw(st.sampled_from([(1, 1), (4, 4), (8, 6), (3, 9)]))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1"]))
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


@st.composite
def zip_upload(draw: st.DrawFn) -> bytes:
    buf = io.BytesIO()
    names = st.one_of(st.sampled_from(["cat/1.png", "cat/2.png", "dog/1.png", "dog/x.jpg", "a/b/c.png", "../up.png", "/abs.png",
                                       "cat/", "readme.txt", "dog/.hidden.png", "__MACOSX/cat/._1.png"]),
                      st.text(min_size=1, max_size=10).map(lambda s: f"{s}/img.png"))
    with zipfile.ZipFile(buf, "w") as zf:
        for _ in range(draw(st.integers(0, 6))):
            content = _png(draw) if draw(st.booleans()) else draw(st.binary(max_size=40))
            zf.writestr(draw(names), content)
    return buf.getvalue()


@st.composite
def upload(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["csv", "npz", "zip"]))
    data = draw({"csv": csv_upload(), "npz": npz_upload(), "zip": zip_upload()}[kind])
    if draw(st.integers(0, 4)) == 0 and data:  # a damaged download: truncated or with flipped bytes
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] if draw(st.booleans()) else data[:cut] + bytes(b ^ 0xFF for b in data[cut : cut + 8]) + data[cut + 8 :]
    return f"upload.{kind}", data


def test_uploads_are_accepted_or_refused_with_a_dataset_error(tmp_path: Path) -> None:
    @FUZZ
    @given(item=upload())
    def check(item: tuple[str, bytes]) -> None:
        name, data = item
        try:  # what the Search page does with an upload: store it, preview it, then the search loads it
            path = save_upload(tmp_path, name, data)
            preview = inspect_dataset(str(path), n_preview=4, cache_dir=tmp_path / "cache")
            [tile(img) for img in preview.preview_images]
            class_counts_frame(preview)
            load_dataset(str(path), seed=0, cache_dir=tmp_path / "cache")
        except NasCoreError:
            pass

    check()


def test_uploads_through_the_cli_exit_2_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    @settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(item=upload())
    def check(item: tuple[str, bytes]) -> None:
        name, data = item
        path = tmp_path / name
        path.write_bytes(data)
        try:
            load_dataset(str(path), seed=0)
        except NasCoreError:
            pass
        else:
            return  # a valid dataset would start a real search: the property concerns the refusals
        code, err = _cli(["search", "--dataset", str(path), "--workspace", str(tmp_path / "ws"), "--trials", "1", "--quiet"], capsys)
        assert code == 2
        _assert_clean(code, err)

    check()
