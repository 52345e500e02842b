"""Table preprocessing fitted on the training split: column types, encodings, data checks."""

from __future__ import annotations

import bz2
import codecs
import csv as csv_module
import gzip
import lzma
import re
import warnings
import zlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tasks.errors import ConfigError, DataError, did_you_mean

try:
    from pandas.tseries.api import guess_datetime_format
except ImportError:  # pandas < 2.2
    from pandas._libs.tslibs.parsing import guess_datetime_format

COLUMN_TYPES = ("numeric", "categorical", "boolean", "date")
ENCODINGS = ("auto", "onehot", "embedding")
TRANSFORMS = ("none", "log1p", "auto")
#: ``numeric_transform=auto`` takes ``log1p`` of a non-negative column whose skewness is above
#: this (a heavy right tail: counts, amounts, word frequencies) and that the log makes less
#: skewed; a normal column has 0, an exponential one 2.
SKEWED = 2.0
UNKNOWN = "<unknown>"


class DataWarning(UserWarning):
    """Something in the data looks wrong (a leak, a useless column) but training can go on."""


#: What reading a file that exists can raise when its bytes are cut short or corrupt (gzip
#: raises BadGzipFile, an OSError, or zlib.error; bz2 OSError or EOFError; xz LZMAError).
UNREADABLE = (OSError, EOFError, lzma.LZMAError, zlib.error)


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
    except PermissionError as exc:
        raise DataError(f"{option}: {str(file)!r} cannot be read: {exc}") from exc
    except UNREADABLE as exc:  # it exists (checked above): a cut or corrupt .gz/.bz2/.xz/.zip
        raise DataError(
            f"{option}: {str(file)!r} cannot be read whole ({type(exc).__name__}: {exc}); "
            "it looks truncated or corrupt: copy or download it again"
        ) from exc
    except pd.errors.ParserError as exc:
        hint = line_break_hint(file, encoding)
        raise DataError(
            f"{option}: {str(file)!r} is not a readable table: {str(exc).strip()}"
            + (f"; {hint}" if hint else "")
        ) from exc
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


def _head(file: Path, limit: int) -> bytes | None:
    """The first ``limit`` bytes of a plain, gzip, bz2 or xz file (uncompressed), or None
    for an archive or a file that cannot be read."""
    suffix = file.suffix.lower()
    if suffix in (".zip", ".zst", ".tar", ".tgz", ".tbz", ".txz"):
        return None  # not worth unpacking for a line number
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix, open)
    try:
        with opener(file, "rb") as handle:
            return handle.read(limit)
    except UNREADABLE:
        return None


def _first_bad_byte(file: Path, encoding: str, limit: int = 1 << 28) -> str:
    """``byte 0xe9 at line 2`` for the first byte of ``file`` that ``encoding`` rejects
    (plain and gzip/bz2/xz files up to ``limit`` bytes), else ``""``."""
    data = _head(file, limit)
    try:
        if data is not None:
            data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"byte 0x{data[exc.start]:02x} at line {line}"
    return ""


def line_break_hint(file: str | Path, encoding: str | None = None, limit: int = 1 << 28) -> str:
    """Why the rows of a CSV/TSV file may have come apart, or ``""``: a carriage return
    that ends no line (``\\r`` not before ``\\n``) outside quotes. pandas' ``to_csv``
    writes a text field holding one unquoted (it quotes only fields with ``\\n``), and
    readers then break the row there. Files whose lines end in ``\\r`` alone, encodings
    in which ``\\r`` is not the byte 13 (UTF-16) and unreadable files give ``""``."""
    try:
        if encoding is not None and "\r\n".encode(encoding) != b"\r\n":
            return ""
        data = _head(Path(file).expanduser(), limit) or b""
        ends = len(data) - 1  # a \r last in what was read may have its \n after it
        bare = [m.start() for m in re.finditer(rb"\r(?!\n)", data) if m.start() < ends]
        if not bare or len(bare) > data.count(b"\n"):  # \r ends the lines: old Mac files
            return ""
        for position in bare[:1000]:
            line_start = data.rfind(b"\n", 0, position) + 1
            if data.count(b'"', line_start, position) % 2 == 0:  # not inside a quoted field
                line = data.count(b"\n", 0, position) + 1
                return (
                    f"line {line} holds a carriage return (\\r) that ends no line: if it is "
                    "inside a text field, that field must be quoted (pandas' to_csv leaves "
                    "\\r unquoted: write the file with quoting=csv.QUOTE_ALL, or replace the "
                    "\\r)"
                )
    except Exception:  # a hint, never a second error
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
    frame: pd.DataFrame,
    features: Sequence[str],
    targets: Sequence[str],
    classification: bool,
    kept: Collection[str] = (),
) -> list[str]:
    """Warnings about leaks and useless columns that a human would want to know about.

    Columns in ``kept`` were kept on purpose (``keep_columns``): no row-id warning for them.
    """
    found = []
    n = len(frame)
    for col in features:
        series = frame[col]
        if (
            col not in kept
            and pd.api.types.is_integer_dtype(series)
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


#: Tukey's "far out" fences lie this many interquartile ranges beyond the quartiles
FAR_OUT = 3.0
#: fewer values than this, and quartiles say too little to call anything extreme
MIN_ROWS = 20
#: more distinct values than this share of the rows (plus one) beyond a fence: a tail
TAIL_SHARE = 0.005


def _side(scaled: np.ndarray, fence: float, unit: float, centre: float) -> tuple[np.ndarray, int]:
    """The isolated values of ``scaled`` above ``fence`` (a mask), and how many distinct
    values lie above it.

    Walking up from the largest value inside the fence, the first gap of at least
    ``FAR_OUT * unit`` that is also as wide as the distance of the value below it from
    ``centre`` isolates every value above it: a genuine tail thins out gradually, while a
    typo, a sentinel or a unit mistake stands apart from the values it should be among.
    """
    none = np.zeros(len(scaled), dtype=bool)
    above = scaled > fence
    if not above.any() or above.all():
        return none, 0
    tail = np.sort(np.concatenate([[scaled[~above].max()], scaled[above]]))
    wide = np.diff(tail) >= np.maximum(FAR_OUT * unit, tail[:-1] - centre)
    if not wide.any():
        return none, len(np.unique(scaled[above]))
    return scaled >= tail[np.argmax(wide) + 1], len(np.unique(scaled[above]))


def _skew(q1: float, median: float, q3: float) -> float:
    """Bowley's skewness, without its sign: 0 for a bulk symmetric about its median."""
    return abs(q3 + q1 - 2 * median) / (q3 - q1)


def far_out(values: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """For the low and the high side of ``values`` (no NaNs): the mask of the values that
    stand far outside the bulk, and how many distinct values lie beyond that side's fence.

    The fences are Tukey's far-out ones, ``FAR_OUT`` interquartile ranges beyond the
    quartiles, and a value beyond one is far out when a wide gap sets it apart
    (:func:`_side`). The high side of a column that is non-negative (but for a stray
    sentinel) is judged on the log scale of its positive values where that scale makes the
    bulk more symmetric (Bowley's quartile skewness), so a skewed but genuine tail (incomes,
    areas, counts) stays inside. The low side stays on the original scale, so small genuine
    values of a positive column (infants' ages among adults') are never far out. A side
    whose quartiles coincide (mostly one value) has no fence.
    """
    none = (np.zeros(len(values), dtype=bool), 0)
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    iqr = q3 - q1
    if iqr > 0:
        low = _side(-values, FAR_OUT * iqr - q1, iqr, -median)
        high = _side(values, q3 + FAR_OUT * iqr, iqr, median)
    else:
        low = high = none
    positive = values > 0
    if np.mean(values < 0) <= 0.01 and positive.sum() >= MIN_ROWS:
        logs = np.log(values[positive])
        l1, centre, l3 = np.quantile(logs, [0.25, 0.5, 0.75])
        fence = l3 + FAR_OUT * (l3 - l1)
        if l3 > l1 and (iqr == 0 or _skew(l1, centre, l3) < _skew(q1, median, q3)):
            mask, beyond = _side(logs, fence, l3 - l1, centre)
            high = (np.zeros(len(values), dtype=bool), beyond)
            high[0][positive] = mask
    return [low, high]


def _outliers(series: pd.Series, shown: int = 3) -> list[str]:
    """Values far outside the bulk of a numeric column (:func:`far_out`): typos, sentinels
    such as ``-999``, unit mistakes, swapped columns. A side with many distinct values
    beyond its fence (more than ``TAIL_SHARE`` of the rows, plus one) is a heavy tail, and
    its far values are not reported."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    present = ~np.isnan(values)
    if present.sum() < MIN_ROWS:
        return []
    flagged = np.zeros(len(values), dtype=bool)
    for mask, beyond in far_out(values[present]):
        if beyond <= TAIL_SHARE * present.sum() + 1:
            flagged[present] |= mask
    rows = np.flatnonzero(flagged)
    if len(rows) == 0:
        return []
    names = row_names(series, rows[:shown])
    listed = ", ".join(f"{name}: {values[r]:g}" for name, r in zip(names, rows))
    return [
        f"column {series.name!r} has {len(rows)} extreme value(s) ({listed}; median "
        f"{np.median(values[present]):g}): check them for typos or swapped columns, or use a "
        "robust loss (task.loss=huber for regression)"
    ]


class TablePreprocessor:
    """Turns a frame into ``(numeric float32, categorical int64)`` tensors, fitted on train.

    Numeric and boolean columns are imputed with the training median (with a missing
    indicator column where the training data had gaps) and standardised. A date column
    becomes calendar columns (``COL__year``, ``COL__month``, ``COL__day_of_week``,
    ``COL__day_of_year``, and ``COL__hour`` where training times vary), read in the format
    found on the training rows and then treated as numeric. Categorical columns are one-hot
    encoded or integer-coded for an embedding; index 0 is the unknown bucket for categories
    not seen in training and for missing values. Columns left out as identifiers are
    recorded with the reason (``state["excluded"]``) but never read.

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
        excluded: Mapping[str, str] | None = None,
    ) -> TablePreprocessor:
        dates = {c: fit_date(train[c], where) for c in features if types[c] == "date"}
        numeric = []
        for col in features:
            if col in dates:
                numeric += [f"{col}__{part}" for part in dates[col]["parts"]]
            elif types[col] in ("numeric", "boolean"):
                numeric.append(col)
        categorical = [c for c in features if types[c] == "categorical"]
        values = self._numeric_values(expand_dates(train, dates, where), numeric, where)
        # log1p tames heavy right tails (counts, frequencies); only where training data is >= 0
        log1p = [
            transform != "none"
            and types.get(c) == "numeric"
            and bool(np.nanmin(values[:, j]) >= 0)
            and (transform == "log1p" or heavy_tailed(values[:, j]))
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
            "dates": dates,
            "excluded": dict(excluded or {}),
        }
        return self

    @property
    def features(self) -> list[str]:
        """The input columns that a frame to transform must have."""
        dates = self.state.get("dates", {})
        derived = {f"{c}__{part}" for c, d in dates.items() for part in d["parts"]}
        plain = [c for c in self.state["numeric"] if c not in derived]
        return [*plain, *dates, *self.state["categories"]]

    @property
    def excluded(self) -> dict[str, str]:
        """Columns left out as identifiers, each with the reason."""
        return dict(self.state.get("excluded", {}))

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

    def unseen_categories(self, frame: pd.DataFrame) -> dict[str, list[str]]:
        """Per categorical column of ``frame``, the values training never saw (they go to
        the unknown bucket); columns without any are left out."""
        found = {}
        for col in self.state["categories"]:
            if col not in frame.columns:
                continue
            known = {_category_key(c) for c in self.state["categories"][col]}
            text = category_text(frame[col]).dropna()
            unseen = sorted({v for v in text if v not in known})
            if unseen:
                found[col] = unseen
        return found

    def _raw_numbers(self, frame: pd.DataFrame, where: str) -> np.ndarray:
        s = self.state
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise missing_column_error(where, missing, list(frame.columns))
        expanded = expand_dates(frame, s.get("dates", {}), where)
        return self._numeric_values(expanded, s["numeric"], where)

    def raw_inputs(self, frame: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
        """What a bundle's ONNX graph takes for ``frame`` (it does the rest of
        :meth:`transform` itself): the numeric columns (``state["numeric"]``, dates as their
        calendar columns) as float64 in original units with NaN for missing values, and the
        category codes of the one-hot then the embedded columns as int64 (``1 +`` the
        position in ``state["categories"]``, ``0`` for unknown or missing)."""
        s = self.state
        numbers = self._raw_numbers(frame, where)
        codes = [self._codes(frame, c) for c in (*s["onehot"], *s["embedded"])]
        stacked = np.stack(codes, axis=1) if codes else np.zeros((len(frame), 0), np.int64)
        return numbers, stacked

    def transform(self, frame: pd.DataFrame, where: str) -> tuple[Tensor, Tensor]:
        s = self.state
        values = self._raw_numbers(frame, where)
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


def _skewness(values: np.ndarray) -> float:
    centred = values - values.mean()
    spread = np.sqrt(np.mean(centred**2))
    return float(np.mean(centred**3) / spread**3) if spread > 0 else 0.0


def heavy_tailed(values: np.ndarray) -> bool:
    """Whether a non-negative column has a heavy right tail that ``log1p`` evens out: more
    than two distinct values (a skewed 0/1 flag only gets rescaled), sample skewness above
    :data:`SKEWED`, and less skewness after the log. Missing values are ignored."""
    seen = values[~np.isnan(values)]
    if len(np.unique(seen)) <= 2:
        return False
    skew = _skewness(seen)
    return skew > SKEWED and abs(_skewness(np.log1p(seen))) < skew


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


# -- column roles: dates and identifier-like columns, decided on the training rows -------------
#: calendar columns of a date column, in order; ``hour`` only where training times vary
DATE_PARTS = ("year", "month", "day_of_week", "day_of_year", "hour")
#: share of a column's values that must read as dates (in one format) for it to be a date
DATE_SHARE = 0.95
#: formats tried besides those pandas guesses from the values: two-digit years, then any
#: ISO 8601 mix (dates with and without times)
_DATE_FORMATS = ("%m/%d/%y", "%d/%m/%y", "%d.%m.%y", "ISO8601")
#: a text column with a distinct value in at least this share of its rows is an identifier
ID_SHARE = 0.95
#: free text: a median of at least this many words per value, mostly distinct values
TEXT_WORDS = 5


def _full_date(fmt: str) -> bool:
    """A format with a year, a month and a day (not ``%Y-%m`` or a time alone)."""
    return (
        fmt == "ISO8601"
        or any(d in fmt for d in ("%Y", "%y"))
        and any(d in fmt for d in ("%m", "%b", "%B"))
        and "%d" in fmt
    )


def parse_dates(values: pd.Series, fmt: str) -> pd.Series:
    """``values`` read as dates in ``fmt`` (times with a UTC offset converted to UTC);
    NaT where a value is missing or is not a date in that format. Values that are already
    datetimes (a DataFrame's or a Parquet file's) are taken as they are."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    text = values.astype(str).str.strip().where(values.notna().to_numpy())
    try:
        return pd.to_datetime(
            text, format=fmt, errors="coerce", utc="%z" in fmt or fmt == "ISO8601"
        )
    except (ValueError, TypeError, OverflowError):  # e.g. an ISO mix pandas cannot combine
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")


def date_format(series: pd.Series, sample: int = 1000) -> str | None:
    """The format in which nearly all (``DATE_SHARE``) present values of ``series`` read as
    full dates (year, month and day), judged on up to ``sample`` of them spread over the
    column; None if there is none. Of several formats, the one that reads the most values
    wins (so ``13/01/2020`` settles day-first), and month-first on a tie, as pandas does."""
    text = series.dropna()
    if not len(text) or pd.api.types.is_bool_dtype(series):
        return None
    text = text.astype(str).str.strip()
    if len(text) > sample:
        text = text.iloc[np.linspace(0, len(text) - 1, sample).astype(int)]
    if text.str.contains(r"\d").mean() < DATE_SHARE:
        return None  # words, not dates: no need to try formats
    candidates: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for value in text.drop_duplicates().head(20):
            for dayfirst in (False, True):
                fmt = guess_datetime_format(value, dayfirst=dayfirst)
                if fmt and _full_date(fmt) and fmt not in candidates:
                    candidates.append(fmt)
        best, share = None, 0.0
        for fmt in [*candidates, *(f for f in _DATE_FORMATS if f not in candidates)]:
            parsed = float(parse_dates(text, fmt).notna().mean())
            if parsed > share:
                best, share = fmt, parsed
    return best if share >= DATE_SHARE else None


def fit_date(series: pd.Series, where: str) -> dict[str, Any]:
    """The format of a date column and the calendar parts it gives, from the training rows:
    ``{"format": ..., "parts": [...]}``. ``hour`` is a part only where the times vary."""
    fmt = date_format(series)
    if fmt is None and pd.api.types.is_datetime64_any_dtype(series):
        fmt = "ISO8601"  # how pandas writes datetimes to a file to predict
    if fmt is None:
        shown = ", ".join(repr(v) for v in series.dropna().head(3).tolist())
        raise DataError(
            f"{where}: column {series.name!r} is declared a date, but its values ({shown}, ...) "
            f"do not read as dates in one format (year, month and day) in {DATE_SHARE:.0%} "
            f"of the training rows; clean them, or declare another type in "
            f"datamodule.column_types"
        )
    parsed = parse_dates(series, fmt)
    parts = [p for p in DATE_PARTS if p != "hour" or parsed.dt.hour.nunique() > 1]
    return {"format": fmt, "parts": parts}


def expand_dates(
    frame: pd.DataFrame, dates: Mapping[str, Mapping[str, Any]], where: str
) -> pd.DataFrame:
    """``frame`` with the calendar columns ``COL__PART`` of each date column in ``dates``
    (as :func:`fit_date` describes them). A value that is not a date in the column's format
    counts as missing; a column where more than ``1 - DATE_SHARE`` of the present values are
    not dates (another format?) is an error."""
    if not dates:
        return frame
    missing = [c for c in dates if c not in frame.columns]
    if missing:
        raise missing_column_error(where, missing, list(frame.columns))
    columns = {}
    for col, spec in dates.items():
        series = frame[col]
        parsed = parse_dates(series, spec["format"])
        bad = series.notna().to_numpy() & parsed.isna().to_numpy()
        if bad.sum() > (1 - DATE_SHARE) * series.notna().sum():
            raise DataError(
                f"{where}: column {col!r} held dates written as {spec['format']!r} in training, "
                f"but {_examples(series, bad)} are not; write them in that format"
            )
        for part in spec["parts"]:
            columns[f"{col}__{part}"] = getattr(parsed.dt, part).to_numpy(
                dtype=np.float64, na_value=np.nan
            )
    expanded = frame.assign(**columns)
    expanded.attrs.update(frame.attrs)
    return expanded


def _text_identifier(series: pd.Series) -> str | None:
    """Why a text column is an identifier or free text, or None."""
    values = series.dropna().astype(str)
    n = len(values)
    if n < MIN_ROWS:
        return None
    distinct = values.nunique()
    words = float(values.str.split().str.len().median())
    if words >= TEXT_WORDS and distinct >= 0.5 * n:
        return f"holds free text ({words:g} words per value, median), not categories"
    if distinct >= ID_SHARE * n:
        return (
            f"has a distinct value in {distinct} of {n} training rows, like names or ids "
            "(a model can only memorise them)"
        )
    return None


def _integer_key(series: pd.Series, rows: int) -> str | None:
    """Why a numeric column is a row key, or None: unique whole numbers that are strictly
    monotonic in file order, or that span about as many values as the table has rows (a
    shuffled row number). Distinct floats (prices) and repeated integers are never keys."""
    if pd.api.types.is_bool_dtype(series):
        return None
    values = pd.to_numeric(series, errors="coerce").dropna().to_numpy(dtype=np.float64)
    n = len(values)
    if n < MIN_ROWS or not np.array_equal(values, np.round(values)):
        return None
    steps = np.diff(values)
    if (steps > 0).all() or (steps < 0).all():
        return (
            "is a unique, monotonic integer, like a row id (it can leak how the rows were "
            "ordered, e.g. grouped by label)"
        )
    low, high = values.min(), values.max()
    if len(np.unique(values)) >= 0.99 * n and high - low + 1 <= 1.5 * max(rows, n):
        return (
            f"is a unique integer spanning about the row count ({low:g} to {high:g} over "
            f"{rows} rows), like a row number"
        )
    return None


def column_roles(
    train: pd.DataFrame,
    features: Sequence[str],
    types: Mapping[str, str],
    typed: Collection[str] = (),
    kept: Collection[str] = (),
    rows: int | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Dates and identifier-like columns among ``features``, decided on the training rows.

    A datetime column, or a text column whose values read as dates (:func:`date_format`),
    becomes a ``date``. A
    text column with a distinct value in nearly every row (``ID_SHARE``) or holding free
    text, and a numeric column of unique whole numbers that is monotonic in file order or
    spans about the row count, is left out. Columns in ``typed`` (given a type by the
    user) are neither; columns in ``kept`` are never left out.

    Args:
        train: The training rows, in file order.
        features: The feature columns.
        types: Their types (:func:`resolve_column_types`).
        typed: Columns whose type the user set.
        kept: Columns the user keeps whatever they look like.
        rows: Rows of the whole table (default: the training rows).

    Returns:
        The types with ``date`` for the date columns, and the columns to leave out, each
        with the reason (a phrase that follows ``column 'NAME'``).
    """
    types = dict(types)
    excluded = {}
    for col in features:
        if col in typed:
            continue
        series = train[col]
        if pd.api.types.is_datetime64_any_dtype(series) or (
            types[col] == "categorical" and date_format(series) is not None
        ):
            types[col] = "date"
            continue
        if col in kept:
            continue
        if types[col] == "categorical":
            reason = _text_identifier(series)
        elif types[col] == "numeric":
            reason = _integer_key(series, rows or len(train))
        else:
            reason = None
        if reason:
            excluded[col] = reason
    return types, excluded


def excluded_message(column: str, reason: str) -> str:
    """The warning for a column that :func:`column_roles` left out: why, and how to keep it."""
    return (
        f"column {column!r} {reason}; left out of the features. Keep it with "
        f"datamodule.keep_columns=[{column}], or drop it with datamodule.drop_columns=[{column}] "
        "to silence this"
    )


def warn_all(messages: Sequence[str]) -> None:
    for message in messages:
        warnings.warn(message, DataWarning, stacklevel=3)
