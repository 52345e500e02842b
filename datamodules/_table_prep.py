"""Table preprocessing fitted on the training split: column types, encodings, data checks."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tasks.errors import ConfigError, DataError, did_you_mean

COLUMN_TYPES = ("numeric", "categorical", "boolean")
ENCODINGS = ("auto", "onehot", "embedding")
TRANSFORMS = ("none", "log1p")
UNKNOWN = "<unknown>"


class DataWarning(UserWarning):
    """Something in the data looks wrong (a leak, a useless column) but training can go on."""


def read_table(path: str | Path, option: str = "datamodule.path", **csv: Any) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file (optionally compressed) with clear errors;
    ``csv`` are extra ``pandas.read_csv`` options (e.g. ``encoding_errors``)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{option}: no such file {str(file)!r} (resolved to {file.resolve()})")
    suffixes = [s.lower() for s in file.suffixes]
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            try:
                frame = pd.read_parquet(file)
            except ImportError as exc:
                raise DataError(
                    f"{option}: reading Parquet needs pyarrow: "
                    f'pip install "lightning-tasks[parquet]" ({exc})'
                ) from exc
        else:
            sep = "\t" if ".tsv" in suffixes or ".tab" in suffixes else ","
            header = pd.read_csv(file, sep=sep, header=None, nrows=1, **csv).iloc[0].tolist()
            duplicated = sorted({str(c) for c in header if header.count(c) > 1})
            if duplicated:
                raise DataError(
                    f"{option}: {str(file)!r} has duplicate column names {duplicated}; "
                    "rename them so that every column is unique"
                )
            frame = pd.read_csv(file, sep=sep, **csv)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{option}: {str(file)!r} is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{option}: {str(file)!r} is not a readable table: {exc}") from exc
    check_frame(frame, f"{option} {str(file)!r}")
    return frame


def check_frame(frame: pd.DataFrame, where: str) -> None:
    """Reject frames that no table task can use: no rows, duplicate column names."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
    if frame.columns.duplicated().any():
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise DataError(f"{where}: duplicate column names {duplicated}; rename them")
    if frame.empty:
        raise DataError(f"{where}: has a header but no rows")


def missing_column_error(option: str, missing: Sequence[str], columns: Sequence[Any]) -> DataError:
    hints = []
    names = [str(c) for c in columns]
    for col in missing:
        hint = did_you_mean(col, names)
        hints.append(f"{col!r}" + (f" ({hint.strip().lower()})" if hint else ""))
    return DataError(
        f"{option}: column {', '.join(hints)} not found. Available columns: {', '.join(names)}"
    )


def require_columns(
    frame: pd.DataFrame, needed: Sequence[tuple[str, str]], where: str, what: str = "column"
) -> None:
    """Each ``(name, option)`` of ``needed`` must be a column of ``frame``; otherwise a
    DataError naming the option that asked for it, the closest column and all columns."""
    columns = [str(c) for c in frame.columns]
    for name, option in needed:
        if name not in columns:
            raise DataError(
                f"{where}: no {what} {name!r} (datamodule.{option})."
                f"{did_you_mean(name, columns)} Columns: {columns}"
            )


def _examples(values: pd.Series, mask: np.ndarray, n: int = 5) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(f"row {r}: {values.iloc[r]!r}" for r in rows[:n])
    return f"{int(mask.sum())} rows ({shown}{', ...' if len(rows) > n else ''})"


def infer_column_type(series: pd.Series, option: str) -> str:
    """numeric, boolean or categorical; a mostly numeric text column is an error with examples."""
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    present = series.notna().to_numpy()
    parsed = pd.to_numeric(series, errors="coerce")
    bad = present & parsed.isna().to_numpy()
    if present.sum() and bad.any() and bad.sum() <= 0.1 * present.sum():
        raise DataError(
            f"{option}: column {series.name!r} is numeric except for {_examples(series, bad)}; "
            f"clean those values (leave missing ones empty), or declare it categorical with "
            f"datamodule.column_types={{{series.name}: categorical}}"
        )
    if present.sum() and not bad.any():
        return "numeric"  # numbers stored as text
    return "categorical"


def data_check(
    frame: pd.DataFrame, features: Sequence[str], targets: Sequence[str], classification: bool
) -> list[str]:
    """Warnings about leaks and useless columns that a human would want to know about."""
    found = []
    n = len(frame)
    for col in features:
        series = frame[col]
        if (
            pd.api.types.is_integer_dtype(series)
            and n > 2
            and series.nunique() == n
            and (series.is_monotonic_increasing or series.is_monotonic_decreasing)
        ):
            found.append(
                f"column {col!r} is a unique, monotonic integer, like a row id: it can leak how "
                f"the rows were ordered (e.g. grouped by label). Drop it with "
                f"datamodule.drop_columns=[{col}]"
            )
        elif series.nunique(dropna=False) <= 1:
            found.append(f"column {col!r} is constant: it carries no information")
        for target in targets:
            if _copies(series, frame[target]):
                found.append(
                    f"column {col!r} determines the target {target!r} one to one: it is a copy "
                    "of the label or leaks it. Drop it with datamodule.drop_columns=[...]"
                )
    numeric = [
        c
        for c in [*features, *([] if classification else targets)]
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    for col in numeric:
        found += _outliers(frame[col])
    if classification:
        counts = frame[targets[0]].value_counts()
        for label, count in counts.items():
            if count < 3:
                found.append(
                    f"class {label!r} has only {count} row(s), fewer than the 3 splits "
                    "(train/val/test): its test figures are meaningless"
                )
    return found


def _copies(feature: pd.Series, target: pd.Series) -> bool:
    """A feature that is the target in disguise: a relabelling of few values, or an exact
    linear copy of a continuous target. (Unique floats trivially map one to one.)"""
    n_feature, n_target = feature.nunique(), target.nunique()
    if n_target <= max(20, 0.05 * len(target)):
        if n_feature != n_target:
            return False
        return bool((feature.groupby(target, dropna=False).nunique(dropna=False) == 1).all())
    if not (pd.api.types.is_numeric_dtype(feature) and pd.api.types.is_numeric_dtype(target)):
        return False
    both = pd.concat([feature, target], axis=1).dropna().astype(float)
    if len(both) < 3 or both.std().min() == 0:
        return False
    return bool(abs(np.corrcoef(both.to_numpy().T)[0, 1]) > 0.99999)


def _outliers(series: pd.Series, limit: float = 8.0, shown: int = 3) -> list[str]:
    """Values more than ``limit`` robust deviations (1.4826 MAD) from the median: typos,
    swapped columns, unit mistakes. A heavy but genuine tail rarely goes that far."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    median = np.nanmedian(values)
    # Strictly positive measurements are often right-skewed (areas, counts): judge them on
    # the log scale, where a genuine long tail stays close and a typo or swap still stands out.
    scaled = np.log(values) if np.nanmin(values) > 0 else values
    centre = np.nanmedian(scaled)
    mad = 1.4826 * np.nanmedian(np.abs(scaled - centre))
    if not np.isfinite(mad) or mad == 0:
        return []
    score = np.abs(scaled - centre) / mad
    rows = np.flatnonzero(score > limit)
    if len(rows) == 0 or len(rows) > 0.01 * len(values) + 1:
        return []  # many such values are a heavy tail, not a mistake
    listed = ", ".join(f"row {r}: {values[r]:g}" for r in rows[:shown])
    return [
        f"column {series.name!r} has {len(rows)} extreme value(s) ({listed}; median "
        f"{median:g}): check them for typos or swapped columns, or use a robust loss "
        "(task.loss=huber for regression)"
    ]


class TablePreprocessor:
    """Turns a frame into ``(numeric float32, categorical int64)`` tensors, fitted on train.

    Numeric and boolean columns are imputed with the training median (with a missing
    indicator column where the training data had gaps) and standardised. Categorical
    columns are one-hot encoded or integer-coded for an embedding; index 0 is the
    unknown bucket for categories not seen in training and for missing values.

    All state is plain Python (lists, dicts, strings, floats), so it is stored in the
    checkpoint and restored without pickling.
    """

    def __init__(self, state: Mapping[str, Any] | None = None) -> None:
        self.state: dict[str, Any] = dict(state) if state else {}

    @property
    def fitted(self) -> bool:
        return bool(self.state)

    def fit(
        self,
        train: pd.DataFrame,
        features: Sequence[str],
        types: Mapping[str, str],
        encoding: str = "auto",
        max_onehot: int = 16,
        transform: str = "none",
    ) -> TablePreprocessor:
        numeric = [c for c in features if types[c] in ("numeric", "boolean")]
        categorical = [c for c in features if types[c] == "categorical"]
        values = self._numeric_values(train, numeric, "training data")
        # log1p tames heavy right tails (counts, frequencies); only where training data is >= 0
        log1p = [
            transform == "log1p" and types[c] == "numeric" and bool(np.nanmin(values[:, j]) >= 0)
            for j, c in enumerate(numeric)
        ]
        values = _apply_log1p(values, np.asarray(log1p, dtype=bool))
        fill = np.nanmedian(values, axis=0) if len(values) else np.zeros(len(numeric))
        fill = np.where(np.isnan(fill), 0.0, fill)
        gaps = np.isnan(values).any(axis=0)
        filled = np.where(np.isnan(values), fill, values)
        scale = filled.std(axis=0) if len(filled) else np.ones(len(numeric))
        categories = {}
        for col in categorical:
            seen = train[col].dropna().astype(str)
            categories[col] = sorted(seen.unique().tolist())
        onehot = [
            c
            for c in categorical
            if encoding == "onehot" or (encoding == "auto" and len(categories[c]) <= max_onehot)
        ]
        self.state = {
            "numeric": numeric,
            "log1p": [c for c, flag in zip(numeric, log1p) if flag],
            "fill": fill.tolist(),
            "center": filled.mean(axis=0).tolist() if len(filled) else [0.0] * len(numeric),
            "scale": np.where(scale > 0, scale, 1.0).tolist(),
            "indicators": [c for c, gap in zip(numeric, gaps) if gap],
            "categories": categories,
            "onehot": onehot,
            "embedded": [c for c in categorical if c not in onehot],
        }
        return self

    @property
    def features(self) -> list[str]:
        return [*self.state["numeric"], *self.state["categories"]]

    @property
    def feature_names(self) -> list[str]:
        """Names of the numeric input columns, in order (one-hot columns included)."""
        s = self.state
        names = [*s["numeric"], *(f"{c}__missing" for c in s["indicators"])]
        for col in s["onehot"]:
            names += [f"{col}={v}" for v in [UNKNOWN, *s["categories"][col]]]
        return names

    @property
    def cardinalities(self) -> list[int]:
        """Embedding sizes of the integer-coded columns (the unknown bucket included)."""
        return [len(self.state["categories"][c]) + 1 for c in self.state["embedded"]]

    @staticmethod
    def _numeric_values(frame: pd.DataFrame, columns: Sequence[str], where: str) -> np.ndarray:
        out = np.empty((len(frame), len(columns)), dtype=np.float64)
        for j, col in enumerate(columns):
            series = frame[col]
            if (
                pd.api.types.is_bool_dtype(series)
                or series.dtype == object
                and set(series.dropna().unique().tolist()) <= {True, False}
            ):
                numbers = series.map({True: 1.0, False: 0.0})
            else:
                numbers = pd.to_numeric(series, errors="coerce")
            bad = series.notna().to_numpy() & numbers.isna().to_numpy()
            if bad.any():
                raise DataError(
                    f"{where}: numeric column {col!r} has non-numeric values in "
                    f"{_examples(series, bad)}; clean them or leave them empty"
                )
            column = numbers.to_numpy(dtype=np.float64)
            infinite = np.isinf(column)
            if infinite.any():
                raise DataError(
                    f"{where}: column {col!r} has infinite values in "
                    f"{_examples(series, infinite)}; "
                    "replace them with finite numbers or leave them empty"
                )
            out[:, j] = column
        return out

    def _codes(self, frame: pd.DataFrame, col: str) -> np.ndarray:
        categories = self.state["categories"][col]
        text = frame[col].astype(str).where(frame[col].notna(), None)
        # -1 for unseen and missing values, so +1 puts them in the unknown bucket 0
        return pd.Index(categories).get_indexer(text).astype(np.int64) + 1

    def transform(self, frame: pd.DataFrame, where: str) -> tuple[Tensor, Tensor]:
        s = self.state
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise missing_column_error(where, missing, list(frame.columns))
        values = self._numeric_values(frame, s["numeric"], where)
        values = _apply_log1p(values, np.isin(s["numeric"], s.get("log1p", [])))
        gaps = np.isnan(values)
        values = np.where(gaps, np.asarray(s["fill"]), values)
        parts = [(values - np.asarray(s["center"])) / np.asarray(s["scale"])]
        index = {c: j for j, c in enumerate(s["numeric"])}
        if s["indicators"]:
            parts.append(gaps[:, [index[c] for c in s["indicators"]]].astype(np.float64))
        for col in s["onehot"]:
            codes = self._codes(frame, col)
            parts.append(np.eye(len(s["categories"][col]) + 1)[codes])
        numeric = np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0))
        codes = [self._codes(frame, c) for c in s["embedded"]]
        categorical = np.stack(codes, axis=1) if codes else np.zeros((len(frame), 0), np.int64)
        return (
            torch.from_numpy(numeric.astype(np.float32)),
            torch.from_numpy(np.ascontiguousarray(categorical)),
        )


def _apply_log1p(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """log1p of the chosen columns; clipped at 0 so that a negative value seen only at
    predict time cannot turn into NaN. Missing values stay missing."""
    if not columns.any():
        return values
    out = values.copy()
    out[:, columns] = np.log1p(np.clip(values[:, columns], 0.0, None))
    return out


def resolve_column_types(
    frame: pd.DataFrame, features: Sequence[str], overrides: Mapping[str, str] | None, option: str
) -> dict[str, str]:
    """Inferred type of every feature column, with the user's overrides applied."""
    overrides = dict(overrides or {})
    unknown = [c for c in overrides if c not in frame.columns]
    if unknown:
        raise missing_column_error("datamodule.column_types", unknown, list(frame.columns))
    bad = {c: t for c, t in overrides.items() if t not in COLUMN_TYPES}
    if bad:
        raise ConfigError(f"datamodule.column_types: {bad} - types must be one of {COLUMN_TYPES}")
    types = {}
    for col in features:
        if frame[col].isna().all():
            raise DataError(
                f"{option}: column {col!r} is empty in every row; drop it with "
                f"datamodule.drop_columns=[{col}]"
            )
        types[col] = overrides.get(col) or infer_column_type(frame[col], option)
    return types


def warn_all(messages: Sequence[str]) -> None:
    for message in messages:
        warnings.warn(message, DataWarning, stacklevel=3)
