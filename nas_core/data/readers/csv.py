"""A .csv (or .tsv/.txt) with a label column and one column per pixel or feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nas_core.data import raw
from nas_core.data.raw import RawDataset, _check_file_size, _encode_labels, _feature_shape, _is_number
from nas_core.data.readers.base import Reader, register_reader
from nas_core.errors import DatasetError


def _load_csv(path: Path, name: str) -> RawDataset:
    import pandas as pd

    _check_file_size(path)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        df = pd.read_csv(path, sep=sep, skipinitialspace=True)
        if len(df.columns) and all(_is_number(str(c)) for c in df.columns):
            # Every "header" cell is a number: the file has no header row, so the first row is data.
            df = pd.read_csv(path, sep=sep, skipinitialspace=True, header=None)
            df.columns = [f"column {i + 1}" for i in range(len(df.columns))]
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"CSV file {path} has no samples (it is empty); add a header and labelled rows.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DatasetError(f"CSV file {path} cannot be parsed ({exc}); save it as plain comma-separated UTF-8.") from exc

    lowered = {str(c).strip().lower(): c for c in df.columns}
    label_col = next((lowered[k] for k in raw._LABEL_COLUMNS if k in lowered), df.columns[0] if len(df.columns) else None)
    feature_cols = [c for c in df.columns if c != label_col]
    if label_col is None or not feature_cols:
        raise DatasetError(
            f"CSV file {path} needs a label column (named label, class, target or y, else the first) and at "
            f"least one feature column, but has columns {list(map(str, df.columns))}; add the pixel/feature columns."
        )
    feats = df[feature_cols]
    for col in feature_cols:
        series = feats[col]
        if pd.api.types.is_numeric_dtype(series):
            continue
        coerced = pd.to_numeric(series, errors="coerce")
        bad = series[coerced.isna() & series.notna()]
        if len(bad):
            raise DatasetError(
                f"CSV file {path} column {str(col)!r} is not numeric (data row {int(bad.index[0]) + 1} holds "
                f"{bad.iloc[0]!r}); feature columns must hold numbers: drop or encode that column."
            )
        feats = feats.assign(**{col: coerced})
    values = feats.to_numpy(dtype=np.float64)
    if values.size and not np.all(np.isfinite(values)):
        col_pos = int(np.flatnonzero(~np.isfinite(values).all(axis=0))[0])
        missing = int((~np.isfinite(values[:, col_pos])).sum())
        raise DatasetError(
            f"CSV file {path} column {str(feature_cols[col_pos])!r} has {missing} missing or infinite value(s); "
            "fill or drop them."
        )
    labels = df[label_col]
    if labels.isna().any():
        raise DatasetError(
            f"CSV file {path} label column {str(label_col)!r} has {int(labels.isna().sum())} empty cell(s); "
            "give every row a label."
        )
    y, classes = _encode_labels(labels.to_numpy(), what=f"CSV column {str(label_col)!r}")
    shape = _feature_shape(len(feature_cols))
    return RawDataset(
        name=name,
        x=values.astype(np.float32).reshape(len(values), *shape),
        y=y,
        classes=classes,
        source=f"{path} (CSV, label column {str(label_col)!r}, {len(feature_cols)} features)",
    )


@register_reader("csv")
class CsvReader(Reader):
    description = "a .csv with a label column"
    suffixes = (".csv", ".tsv", ".txt")

    def read(self, path: Path, name: str) -> RawDataset:
        return _load_csv(path, name)

    def write_example(self, folder: Path) -> Path:
        out = folder / "example.csv"
        rows = ["label," + ",".join(f"p{i}" for i in range(16))]
        rows += [f"{c}," + ",".join(str((c * 7 + i + j) % 16) for i in range(16)) for c in (0, 1) for j in range(10)]
        out.write_text("\n".join(rows) + "\n")
        return out
