"""Table preprocessing fitted on the training split: column types, encodings, data checks."""

from __future__ import annotations

import bz2
import codecs
import csv as csv_module
import gzip
import lzma
import re
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


def read_table(
    path: str | Path,
    option: str = "datamodule.path",
    *,
    sep: str | None = None,
    encoding: str | None = None,
    sep_option: str | None = None,
    encoding_option: str | None = None,
    **csv: Any,
) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file (optionally compressed) with clear errors.

    Args:
        path: The file.
        option: The config option that named it, for messages.
        sep: Field separator; default ``\\t`` for ``.tsv``/``.tab`` files, else ``,``, and a
            file whose header is one field holding ``;``, ``\\t`` or ``|`` is read with that
            separator (with a :class:`DataWarning`). A ``;``-separated file whose numbers
            use a decimal comma (``1,5``) has them read as numbers (also with a warning).
        encoding: Text encoding of a CSV/TSV file (default UTF-8).
        sep_option: The config option that sets ``sep``, named in the separator warning.
        encoding_option: The config option that sets ``encoding``, named in the message
            when the file does not decode (otherwise the message says to re-save as UTF-8).
        **csv: Extra ``pandas.read_csv`` options (e.g. ``encoding_errors``).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{option}: no such file {str(file)!r} (resolved to {file.resolve()})")
    suffixes = [s.lower() for s in file.suffixes]
    sep = SEP_NAMES.get(sep, sep) if sep is not None else None
    csv = {**csv, "encoding": encoding} if encoding is not None else csv
    lines = False
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
            default = "\t" if ".tsv" in suffixes or ".tab" in suffixes else ","
            header = pd.read_csv(file, sep=sep or default, header=None, nrows=1, **csv)
            header = header.iloc[0].tolist()
            if sep is None:
                sep = _detect_sep(file, header, default, option, sep_option, csv)
                if sep != default:
                    header = pd.read_csv(file, sep=sep, header=None, nrows=1, **csv)
                    header = header.iloc[0].tolist()
            duplicated = sorted({str(c) for c in header if header.count(c) > 1})
            if duplicated:
                raise DataError(
                    f"{option}: {str(file)!r} has duplicate column names {duplicated}; "
                    "rename them so that every column is unique"
                )
            frame = pd.read_csv(file, sep=sep, **csv)
            if sep == ";" and "decimal" not in csv and "dtype" not in csv:
                frame = _decimal_commas(frame, file, option, csv)
            lines = True
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{option}: {str(file)!r} is empty") from exc
    except UnicodeDecodeError as exc:
        raise _decode_error(exc, file, option, encoding, encoding_option) from exc
    except LookupError as exc:  # an encoding Python does not know
        raise ConfigError(f"{encoding_option or option}: {exc}") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{option}: {str(file)!r} is not a readable table: {exc}") from exc
    check_frame(frame, f"{option} {str(file)!r}")
    # where the rows came from, so that messages can name them as the user counts them
    frame.attrs[SOURCE] = str(file)
    if lines:
        frame.attrs[FIRST_LINE] = 2  # the header is line 1
    return frame


#: ``DataFrame.attrs`` keys set by :func:`read_table`: the file, and the line of data row 0.
SOURCE, FIRST_LINE = "source_file", "first_line"
#: separators recognised in a one-field header: how messages name them, how to set them
_SEPARATORS = {";": ("';'", "';'"), "\t": ("tab", "tab"), "|": ("'|'", "'|'")}
#: names a user can type for a separator on the command line
SEP_NAMES = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "pipe": "|"}


def _detect_sep(
    file: Path,
    header: list[Any],
    default: str,
    option: str,
    sep_option: str | None,
    csv: dict[str, Any],
) -> str:
    """A header read as one field that holds ``;``, a tab or ``|`` means another separator;
    it is taken if the first rows split into the same number of fields with it."""
    if len(header) != 1 or not isinstance(header[0], str):
        return default
    found = [s for s in _SEPARATORS if s in header[0]]
    if not found:
        return default
    sep = max(found, key=header[0].count)
    text = {k: v for k, v in csv.items() if k in ("encoding", "encoding_errors", "compression")}
    try:  # the first lines as they are (pandas decompresses and decodes them)
        raw = pd.read_csv(
            file,
            sep="\x01",
            header=None,
            nrows=50,
            dtype=str,
            quoting=csv_module.QUOTE_NONE,
            **text,
        )
        lines = raw[0].tolist()
    except (pd.errors.ParserError, ValueError):
        return default
    widths = {len(row) for row in csv_module.reader(lines, delimiter=sep)}
    if len(widths) != 1 or min(widths) < 2:
        return default  # a ';' in a one-column header that is not a separator
    name, value = _SEPARATORS[sep]
    hint = f"; set {sep_option}={value} to say so and silence this warning" if sep_option else ""
    split = "tabs" if default == "\t" else "commas"
    warnings.warn(
        f"{option}: {str(file)!r} has a single column when split at {split}, but its header "
        f"{header[0]!r} is split by {name}: reading it as {name}-separated "
        f"({min(widths)} columns){hint}",
        DataWarning,
        stacklevel=3,
    )
    return sep


_DECIMAL_COMMA = r"[-+]?\d*,\d+|[-+]?\d+"


def _decimal_commas(
    frame: pd.DataFrame, file: Path, option: str, csv: dict[str, Any]
) -> pd.DataFrame:
    """Text columns of a ``;``-separated file that are numbers written with a decimal comma
    (``1,5``), re-read as numbers."""
    columns = []
    for col in frame.columns:
        values = frame[col].dropna()
        if len(values) and values.map(type).eq(str).all():
            text = values.str.strip()
            if text.str.fullmatch(_DECIMAL_COMMA).all() and text.str.contains(",").any():
                columns.append(str(col))
    if not columns:
        return frame
    warnings.warn(
        f"{option}: {str(file)!r} writes numbers with a decimal comma (e.g. "
        f"{frame[columns[0]].dropna().iloc[0]!r}) in column(s) {columns}: reading them as numbers",
        DataWarning,
        stacklevel=3,
    )
    return pd.read_csv(file, sep=";", decimal=",", **csv)


def _decode_error(
    exc: UnicodeDecodeError,
    file: Path,
    option: str,
    encoding: str | None,
    encoding_option: str | None,
) -> DataError:
    """One line naming the first byte that does not decode, its line, and the fix."""
    name = encoding or "utf-8"
    utf8 = codecs.lookup(name).name == "utf-8"
    where = _first_bad_byte(file, name) or f"byte 0x{exc.object[exc.start]:02x}"
    if encoding_option is None:
        fix = "re-save it as UTF-8"
    elif utf8:
        fix = f"pass {encoding_option}=latin-1 (or the file's encoding)"
    else:
        fix = f"pass the file's encoding as {encoding_option}"
    return DataError(
        f"{option}: {str(file)!r} is not valid {'UTF-8' if utf8 else name} ({where}); {fix}"
    )


def _first_bad_byte(file: Path, encoding: str, limit: int = 1 << 28) -> str:
    """``byte 0xe9 at line 2`` for the first byte of ``file`` that ``encoding`` rejects
    (plain and gzip/bz2/xz files up to ``limit`` bytes), else ``""``."""
    suffix = file.suffix.lower()
    if suffix in (".zip", ".zst", ".tar", ".tgz", ".tbz", ".txz"):
        return ""  # not worth unpacking for a line number
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix, open)
    try:
        with opener(file, "rb") as handle:
            data = handle.read(limit)
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"byte 0x{data[exc.start]:02x} at line {line}"
    except (OSError, EOFError, lzma.LZMAError):
        return ""
    return ""


def _row(data: pd.DataFrame | pd.Series, label: Any) -> tuple[str, str]:
    first = data.attrs.get(FIRST_LINE)
    if isinstance(label, (int, np.integer)):
        return ("line", str(int(label) + first)) if first is not None else ("row", str(label))
    return "row", repr(label)


def row_names(data: pd.DataFrame | pd.Series, positions: Sequence[int] | np.ndarray) -> list[str]:
    """How a user finds these rows: ``line N`` of a CSV/TSV file (the header is line 1) for
    tables from :func:`read_table`, else ``row LABEL`` (the frame's index label).

    Labels, not positions: a split of a frame keeps the index of the rows it took."""
    labels = data.index[np.asarray(positions, dtype=np.int64)]
    return [" ".join(_row(data, label)) for label in labels]


def rows_text(data: pd.DataFrame | pd.Series, mask: np.ndarray, n: int = 5) -> str:
    """``lines 3, 8`` / ``row 4`` / ``rows 1, 2, 3, 4, 5 and 7 more`` for the rows in ``mask``."""
    rows = np.flatnonzero(mask)
    pairs = [_row(data, label) for label in data.index[rows[:n]]]
    kinds = {kind for kind, _ in pairs}
    if len(kinds) == 1:  # "lines 3, 8" rather than "line 3, line 8"
        plural = "s" if len(rows) > 1 else ""
        text = f"{pairs[0][0]}{plural} " + ", ".join(value for _, value in pairs)
    else:
        text = ", ".join(" ".join(pair) for pair in pairs)
    return text + (f" and {len(rows) - n} more" if len(rows) > n else "")


def in_file(data: pd.DataFrame | pd.Series) -> str:
    """`` of 'FILE'`` for a table read by :func:`read_table`, else ``""``."""
    source = data.attrs.get(SOURCE)
    return f" of {source!r}" if source else ""


def check_finite(frame: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    """No infinite numbers in ``columns``: one error naming every such column and its rows."""
    found = []
    for col in columns:
        series = frame[col]
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            continue
        infinite = np.isinf(series.to_numpy(dtype=np.float64, na_value=np.nan))
        if infinite.any():
            found.append(f"column {col!r} ({rows_text(series, infinite)})")
    if found:
        shown = found[:10] + ([f"{len(found) - 10} more columns"] if len(found) > 10 else [])
        listed = ", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0]
        raise DataError(
            f"{where}: infinite values in {listed}{in_file(frame)}; "
            "replace them with finite numbers or leave them empty"
        )


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


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (``inf``, not ``np.float64(inf)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _examples(values: pd.Series, mask: np.ndarray, n: int = 5) -> str:
    rows = np.flatnonzero(mask)
    names = row_names(values, rows[:n])
    shown = ", ".join(f"{name}: {_plain(values.iloc[r])!r}" for name, r in zip(names, rows))
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
        rare = counts[counts < 3]
        if len(rare) > 3:  # one line for many, not one per class
            shown = ", ".join(f"{_plain(c)!r}: {n}" for c, n in rare.head(5).items())
            found.append(
                f"{len(rare)} of {len(counts)} classes have fewer than 3 rows ({shown}"
                f"{', ...' if len(rare) > 5 else ''}), fewer than the 3 splits "
                "(train/val/test): their test figures are meaningless; add rows or merge rare "
                "classes"
            )
        else:
            for label, count in rare.items():
                found.append(
                    f"class {_plain(label)!r} has only {count} row(s), fewer than the 3 splits "
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
    names = row_names(series, rows[:shown])
    listed = ", ".join(f"{name}: {values[r]:g}" for name, r in zip(names, rows))
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
        where: str = "training data",
    ) -> TablePreprocessor:
        numeric = [c for c in features if types[c] in ("numeric", "boolean")]
        categorical = [c for c in features if types[c] == "categorical"]
        values = self._numeric_values(train, numeric, where)
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
            seen = category_text(train[col]).dropna()
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
            out[:, j] = numbers.to_numpy(dtype=np.float64)
        parsed = pd.DataFrame(out, index=frame.index, columns=list(columns))
        parsed.attrs.update(frame.attrs)  # the rows as the user counts them
        check_finite(parsed, list(columns), where)
        return out

    def _codes(self, frame: pd.DataFrame, col: str) -> np.ndarray:
        # codes 1.. in the order of the training categories; unseen and missing values get
        # 0, the unknown bucket. Stored categories go through the same normalisation, so a
        # checkpoint that saved "10115.0" still matches 10115.
        lookup: dict[str, int] = {}
        for code, category in enumerate(self.state["categories"][col], start=1):
            lookup.setdefault(_category_key(category), code)
        text = category_text(frame[col])
        return text.map(lookup).fillna(0).to_numpy(dtype=np.int64)

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


#: a whole number written as a float: ``10115.0``, ``-3.00``
_WHOLE_FLOAT = r"^([-+]?\d+)\.0+$"


def _category_key(value: Any) -> str:
    return re.sub(_WHOLE_FLOAT, r"\1", str(value))


def category_text(series: pd.Series) -> pd.Series:
    """Category values as text, missing ones as None; a whole number is its integer text
    whether the column is integer or float (pandas makes an integer column float as soon
    as one value is missing, and ``10115.0`` must still be the category ``10115``)."""
    text = series.astype(str).str.replace(_WHOLE_FLOAT, r"\1", regex=True).astype(object)
    return text.where(series.notna().to_numpy(), None)


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
