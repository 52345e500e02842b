"""Time grids for series: parsing timestamps (UTC offsets, daylight saving), the regular
grid a series lies on and its frequency, season lengths and calendar features."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from datamodules._table_prep import DataWarning
from tasks.errors import ConfigError, DataError

CALENDAR = ("time_of_day", "day_of_week", "day_of_year", "month")
DAY = pd.Timedelta(days=1)
#: The UTC offset at the end of a time string (``Z``, ``+01:00``, ``-0500``).
OFFSET = r"(Z|[+-]\d\d:?\d\d)\s*$"


def _listed(values: Any, n: int = 5) -> str:
    values = [str(v) for v in values]
    more = f" and {len(values) - n} more" if len(values) > n else ""
    return ", ".join(values[:n]) + more


def fixed_step(freq: str) -> pd.Timedelta | None:
    """The length of one step of a pandas frequency, or None for calendar offsets whose
    length varies (months, quarters, years; weeks anchored on a weekday). Days count as
    24 hours (pandas 3.0 makes ``D`` a calendar day that ``Timedelta`` refuses)."""
    try:
        offset = to_offset(freq)
    except (TypeError, ValueError):
        return None
    if isinstance(offset, pd.offsets.Day):
        return pd.Timedelta(days=offset.n)
    try:
        return pd.Timedelta(offset)
    except (TypeError, ValueError):
        return None


def default_season(freq: str | int) -> int:
    """Steps per natural cycle of a frequency: a day below daily, a week for daily data,
    a year for weekly, monthly and quarterly data; 1 (plain naive) when unknown."""
    if isinstance(freq, (int, np.integer)):
        return 1
    step = fixed_step(freq)
    if step is None:
        name = to_offset(freq).rule_code.upper().split("-")[0]
        if name.startswith(("M", "BM", "SM", "CBM")):
            return 12
        if name.startswith(("Q", "BQ")):
            return 4
        return 52 if name.startswith("W") else 1
    if step < DAY and (DAY % step) == pd.Timedelta(0):
        return int(DAY / step)
    if step == pd.Timedelta(weeks=1):
        return 52
    return 7 if step == DAY else 1


def calendar_features(time: pd.DatetimeIndex, names: Sequence[str]) -> np.ndarray:
    """Sine and cosine of each calendar position, ``(steps, 2 * len(names))``, in [-1, 1]."""
    columns = []
    for name in names:
        if name == "time_of_day":
            phase = (time.hour + time.minute / 60 + time.second / 3600) / 24
        elif name == "day_of_week":
            phase = time.day_of_week / 7
        elif name == "day_of_year":
            phase = (time.day_of_year - 1) / 366
        else:
            phase = (time.month - 1) / 12
        angle = 2 * np.pi * np.asarray(phase, dtype=np.float64)
        columns += [np.sin(angle), np.cos(angle)]
    return np.stack(columns, axis=1) if columns else np.zeros((len(time), 0))


def parse_times(times: pd.Series, where: str, notes: list[str]) -> pd.Series:
    """Datetimes; times whose UTC offset changes (daylight saving) become UTC, with a
    data warning (also appended to ``notes``). Naive times, and times with one offset, are
    kept as they are."""
    try:
        return pd.to_datetime(times, errors="coerce")
    except ValueError as exc:
        if "timezone" not in str(exc).lower():
            raise
    parsed = pd.to_datetime(times, errors="coerce", utc=True)
    if parsed.isna().any():
        return parsed  # an error about those times follows; converting them is moot
    offsets = times.astype(str).str.extract(OFFSET, expand=False).dropna().unique()
    message = (
        f"{where}: the time column {times.name!r} has several UTC offsets "
        f"({_listed(sorted(offsets))}; daylight saving?); converted its times to UTC"
    )
    notes.append(message)
    warnings.warn(message, DataWarning, stacklevel=3)
    return parsed


def time_grid(
    times: pd.Series, where: str, freq: str | int | None, notes: list[str]
) -> tuple[pd.Index, pd.Index, str | int]:
    """The parsed times (in file order), the regular grid they lie on, its frequency
    (``freq``, or inferred when None); warnings about the times go to ``notes``."""
    numeric = pd.api.types.is_numeric_dtype(times)
    parsed = times if numeric else parse_times(times, where, notes)
    if parsed.isna().any():
        rows = np.flatnonzero(parsed.isna().to_numpy())
        offset = times.astype(str).str.extract(OFFSET, expand=False).notna().to_numpy()
        if (offset[rows] != offset[0]).all():  # pandas drops them when the first differs
            raise DataError(
                f"{where}: the time column {times.name!r} mixes times with and without a "
                f"UTC offset (unlike the first time: rows {_listed(rows)}, e.g. "
                f"{times.iloc[rows[0]]!r}); give every time an offset, or none"
            )
        raise DataError(
            f"{where}: the time column has values that are not times in rows "
            f"{_listed(rows)} (e.g. {times.iloc[rows[0]]!r}); fix or drop them"
        )
    index = pd.Index(parsed)
    duplicated = index[index.duplicated()].unique()
    if len(duplicated):
        raise DataError(
            f"{where}: duplicated times {_listed(duplicated)}; keep one row per time "
            "(e.g. average the duplicates)"
        )
    parsed = index
    index = index.sort_values()
    if len(index) < 2:
        raise DataError(f"{where}: needs at least two times, got {len(index)}")
    if numeric:
        step = int(freq) if freq is not None else int(pd.Series(np.diff(index)).mode()[0])
        grid = pd.Index(np.arange(index[0], index[-1] + 1, step))
        freq = step
    else:
        if freq is None:
            with warnings.catch_warnings():  # pandas 3 moves from strings to offsets
                warnings.simplefilter("ignore")
                inferred = pd.infer_freq(index) if len(index) >= 3 else None
            freq = None if inferred is None else to_offset(inferred).freqstr
        if freq is None:
            freq = to_offset(pd.Series(index).diff().mode()[0]).freqstr
        try:
            grid = pd.date_range(index[0], index[-1], freq=freq)
        except ValueError as exc:
            raise ConfigError(f"datamodule.freq={freq!r} is not a pandas frequency: {exc}") from exc
    off = index.difference(grid)
    if len(off):
        raise DataError(
            f"{where}: times {_listed(off)} are off the {freq!r} grid that starts at "
            f"{index[0]}; resample the data or set datamodule.freq"
        )
    return parsed, grid, freq
