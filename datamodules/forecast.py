"""Forecasting from a timestamped table: a regular time grid, splits in time, windows
gathered lazily from strided views."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from datamodules._table_prep import DataWarning, check_frame, read_table, require_columns
from datamodules._timegrid import (  # noqa: F401 (their old import path)
    CALENDAR,
    DAY,
    OFFSET,
    _listed,
    calendar_features,
    default_season,
    fixed_step,
    time_grid,
)
from datamodules.base import BaseDataModule, CVRows
from tasks.errors import ConfigError, DataError, did_you_mean

#: Bundled series (``datamodule.dataset=NAME``): file, time column, target column.
BUNDLED = {
    "electricity": ("taylor_electricity.csv.gz", "timestamp", "demand_mw"),
    "airline": ("airline_passengers.csv.gz", "month", "passengers"),
}
MISSING = ("error", "ffill", "interpolate")
SCALING = ("standard", "minmax", "none")


class ForecastDataModule(BaseDataModule):
    """A table with a time column and value columns, for forecasting ``horizon`` steps
    from the last ``lookback`` steps.

    **Time grid.** Times are parsed (datetimes, or integers for a plain step index) and
    sorted. Times whose UTC offset changes (daylight saving: ``+01:00``, then ``+02:00``)
    are converted to UTC, with a data warning; naive times stay as they are. Duplicated
    times are an error naming them. The frequency is ``freq`` or is
    inferred (pandas' ``infer_freq``, else the most common step); a time off that grid is
    an error. Missing times on the grid become missing rows.

    **Missing values** (missing rows included), by ``missing``: ``error`` (the default:
    names the first gaps), ``ffill`` (carry the last value forward) or ``interpolate``
    (linear in time). A gap at the very start cannot be forward filled: trim it.

    **Inputs** per step: the targets, the ``covariates`` (other columns, observed in the
    past only) and ``calendar`` features of the timestamp (sine and cosine of
    ``time_of_day``, ``day_of_week``, ``day_of_year``, ``month``; ``auto`` picks what the
    frequency can show: time of day and weekday below daily data, weekday and day of year
    for daily, day of year for weekly, month for monthly and quarterly data). Targets and
    covariates are scaled (``scaling``) with statistics of the training period only, saved
    in checkpoints; ``log_target`` takes the log of positive targets first (multiplicative
    seasonality, as airline passengers).

    **Splits** are in time: train, then validation, then test, at ``val_start`` and
    ``test_start`` (timestamps) or by ``val_fraction``/``test_fraction`` of the steps. A
    window belongs to the split its *targets* fall in, so no training target lies in the
    validation or test period; inputs may reach back into the period before, which is
    information a forecaster has at that moment. Training windows start every ``stride``
    steps; validation and test windows every step.

    **Windows** are never materialised: batches gather them from strided views of the
    one scaled series (``Tensor.unfold``), so memory stays one copy of the table.

    **Baselines** for every validation/test window: ``naive`` (the last value, for every
    horizon step) and ``seasonal_naive`` (the value one ``season`` earlier; ``season``
    defaults to a day of steps below daily data, 7 for daily, 12 for monthly, 4 for
    quarterly, 52 for weekly).

    **Predict** (``mode=predict``): the last ``lookback`` steps of ``predict_path`` (default:
    the training file) give one forecast of the ``horizon`` steps after its last time.

    Args:
        path: CSV/TSV/Parquet file.
        dataset: A bundled series instead of ``path``: ``electricity`` (half-hourly demand,
            England and Wales, 2000) or ``airline`` (monthly passengers 1949-1960).
        time_column: The time column (default: the first column).
        target: Column(s) to forecast (default: the only numeric column left).
        covariates: Other columns used as past inputs.
        calendar: Calendar features, ``auto`` or a list (``[]`` for none).
        freq: Pandas frequency (``30min``, ``h``, ``D``, ``MS``) or integer step; inferred
            when None.
        missing: ``error``, ``ffill`` or ``interpolate``.
        lookback: Input steps per window.
        horizon: Steps forecast at once (direct multi-output).
        season: Season length of the seasonal naive baseline (default from ``freq``).
        val_start: First timestamp of the validation period (else ``val_fraction``); one
            without an offset is in the times' zone (UTC when their offsets were converted).
        test_start: First timestamp of the test period (else ``test_fraction``).
        scaling: ``standard``, ``minmax`` or ``none``.
        log_target: Model the log of the (positive) targets.
        stride: Steps between training windows.
        predict_path: File whose end is forecast by ``mode=predict``.
        **kwargs: ``val_fraction``, ``test_fraction``, loader settings of
            :class:`~datamodules.base.BaseDataModule`.
    """

    def __init__(
        self,
        path: str | None = None,
        dataset: str | None = None,
        time_column: str | None = None,
        target: str | Sequence[str] | None = None,
        covariates: Sequence[str] = (),
        calendar: str | Sequence[str] = "auto",
        freq: str | int | None = None,
        missing: str = "error",
        lookback: int = 24,
        horizon: int = 1,
        season: int | None = None,
        val_start: str | None = None,
        test_start: str | None = None,
        scaling: str = "standard",
        log_target: bool = False,
        stride: int = 1,
        predict_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        sources = (path is not None) + (dataset is not None) + self._overrides("load_frame")
        if sources != 1:
            raise ConfigError(
                "give exactly one source: datamodule.path=FILE (a CSV with a time column and "
                f"value columns) or datamodule.dataset (one of {sorted(BUNDLED)})"
            )
        if dataset is not None and dataset not in BUNDLED:
            raise ConfigError(
                f"datamodule.dataset={dataset!r} is not bundled; choose one of "
                f"{sorted(BUNDLED)}.{did_you_mean(dataset, BUNDLED)}"
            )
        if missing not in MISSING:
            raise ConfigError(f"datamodule.missing={missing!r}; expected one of {MISSING}")
        if scaling not in SCALING:
            raise ConfigError(f"datamodule.scaling={scaling!r}; expected one of {SCALING}")
        if not isinstance(calendar, str):
            unknown = [c for c in calendar if c not in CALENDAR]
            if unknown:
                raise ConfigError(
                    f"datamodule.calendar: unknown features {unknown}; choose from {CALENDAR}"
                )
        elif calendar != "auto":
            raise ConfigError(f"datamodule.calendar={calendar!r}; use auto or a list of {CALENDAR}")
        for name, value in (("lookback", lookback), ("horizon", horizon), ("stride", stride)):
            if value < 1:
                raise ConfigError(f"datamodule.{name} must be >= 1, got {value}")
        if season is not None and season < 1:
            raise ConfigError(f"datamodule.season must be >= 1, got {season}")
        super().__init__(**kwargs)
        self.series: Tensor | None = None  # (steps, inputs), scaled
        self.target_series: Tensor | None = None  # (steps, targets), scaled
        self.time: pd.Index | None = None
        self.bounds: dict[str, tuple[int, int]] = {}
        self.future_time: pd.Index | None = None
        self.data_warnings: list[str] = []

    def load_frame(self) -> pd.DataFrame:
        """The table, for subclasses that generate or fetch their own series."""
        raise NotImplementedError

    # -- reading and the time grid -------------------------------------------------------
    def _source(self, path: str | None = None) -> tuple[pd.DataFrame, str, str | None]:
        hp = self.hparams
        if path is not None:
            return read_table(path, "datamodule.predict_path"), "datamodule.predict_path", None
        if self._overrides("load_frame"):
            where = f"{type(self).__name__}.load_frame()"
            frame = self.load_frame()
            check_frame(frame, where)
            return frame, where, None
        if hp.dataset is not None:
            name, time_column, _ = BUNDLED[hp.dataset]
            with resources.as_file(resources.files("datamodules") / "data" / name) as file:
                return pd.read_csv(file), f"datamodule.dataset={hp.dataset}", time_column
        return read_table(hp.path, "datamodule.path"), "datamodule.path", None

    def _columns(self, frame: pd.DataFrame, where: str, time_column: str) -> tuple[list, list]:
        hp = self.hparams
        columns = [str(c) for c in frame.columns]
        bundled_target = BUNDLED[hp.dataset][2] if hp.dataset is not None else None
        target = hp.target if hp.target is not None else bundled_target
        targets = [target] if isinstance(target, str) else list(target or [])
        covariates = list(hp.covariates or [])
        require_columns(
            frame,
            [(n, "target") for n in targets] + [(n, "covariates") for n in covariates],
            where,
        )
        if not targets:
            numeric = [
                c
                for c in columns
                if c != time_column
                and c not in covariates
                and pd.api.types.is_numeric_dtype(frame[c])
            ]
            if len(numeric) != 1:
                raise ConfigError(
                    f"{where}: say which column to forecast with datamodule.target=NAME "
                    f"(numeric columns: {numeric})"
                )
            targets = numeric
        overlap = set(targets) & set(covariates) | {time_column} & set(targets + covariates)
        if overlap:
            raise ConfigError(f"columns {sorted(overlap)} are used twice (time/target/covariates)")
        bad = [c for c in targets + covariates if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise DataError(
                f"{where}: columns {bad} are not numeric (first values: "
                f"{[frame[c].iloc[0] for c in bad]}); clean them or leave them out"
            )
        return targets, covariates

    def _grid(self, times: pd.Series, where: str) -> tuple[pd.Index, pd.Index, str | int]:
        """The parsed times (in file order), the regular grid they lie on, its frequency."""
        return time_grid(times, where, self.hparams.freq, self.data_warnings)

    def _read(self, path: str | None = None) -> dict[str, Any]:
        """The series on a regular grid: times, targets, covariates (original units)."""
        hp = self.hparams
        frame, where, bundled_time = self._source(path)
        columns = [str(c) for c in frame.columns]
        time_column = hp.time_column or bundled_time or columns[0]
        require_columns(frame, [(time_column, "time_column")], where, what="time column")
        targets, covariates = self._columns(frame, where, time_column)
        parsed, grid, freq = self._grid(frame[time_column], where)
        if not parsed.is_monotonic_increasing:
            self.data_warnings.append(f"{where}: rows were not in time order; sorted them")
        keyed = frame.set_index(parsed)
        values = keyed[targets + covariates].astype(np.float64).reindex(grid)
        gaps = values.isna().any(axis=1)
        if gaps.any():
            n_missing_rows = len(grid) - len(parsed)
            if hp.missing == "error":
                raise DataError(
                    f"{where}: {int(gaps.sum())} steps have no value ({n_missing_rows} missing "
                    f"times on the {freq!r} grid), first at {_listed(grid[gaps.to_numpy()])}; "
                    "fill them or set datamodule.missing=ffill or interpolate"
                )
            if hp.missing == "ffill":
                if gaps.iloc[0]:
                    raise DataError(
                        f"{where}: the series starts with missing values; forward filling "
                        "cannot fill them: trim the first rows or use missing=interpolate"
                    )
                values = values.ffill()
            else:
                values = values.interpolate(method="linear", limit_direction="both")
            self.data_warnings.append(
                f"{where}: filled {int(gaps.sum())} steps ({n_missing_rows} missing times) "
                f"by {hp.missing}"
            )
        return {
            "time": grid,
            "freq": freq,
            "targets": targets,
            "covariates": covariates,
            "values": values.to_numpy(),
            "time_column": time_column,
        }

    # -- scaling -------------------------------------------------------------------------
    def _calendar_names(self, freq: str | int) -> list[str]:
        calendar = self.hparams.calendar
        if not isinstance(calendar, str):
            return list(calendar)
        if isinstance(freq, (int, np.integer)):
            return []
        step = fixed_step(freq)
        if step is not None and step < DAY:
            return ["time_of_day", "day_of_week"]
        if step == DAY:
            return ["day_of_week", "day_of_year"]
        season = default_season(freq)  # the position in the year, where a year is the cycle
        if season == 52:
            return ["day_of_year"]
        return ["month"] if season in (12, 4) else []

    def _fit_state(self, data: dict[str, Any], train: np.ndarray) -> None:
        """Scaling statistics of the (transformed) training rows, with the column names,
        frequency and calendar features: what a checkpoint must carry."""
        hp = self.hparams
        if hp.scaling == "standard":
            center, scale = train.mean(axis=0), train.std(axis=0)
        elif hp.scaling == "minmax":
            center, scale = train.min(axis=0), train.max(axis=0) - train.min(axis=0)
        else:
            center, scale = np.zeros(train.shape[1]), np.ones(train.shape[1])
        scale = np.where(scale > 0, scale, 1.0)
        self.fitted_state = {
            "targets": data["targets"],
            "covariates": data["covariates"],
            "calendar": self._calendar_names(data["freq"]),
            "freq": data["freq"],
            "log_target": bool(hp.log_target),
            "center": center.tolist(),
            "scale": scale.tolist(),
        }

    def _transform_targets(self, data: dict[str, Any]) -> np.ndarray:
        """The values with ``log`` taken of the targets when ``log_target`` is set."""
        values, k = data["values"], len(data["targets"])
        if not self.hparams.log_target:
            return values
        if (values[:, :k] <= 0).any():
            raise DataError(
                f"datamodule.log_target=true needs positive targets; {data['targets']} "
                "have values <= 0"
            )
        out = values.copy()
        out[:, :k] = np.log(out[:, :k])
        return out

    def _scaled(self, data: dict[str, Any], values: np.ndarray) -> tuple[Tensor, Tensor]:
        """Model inputs ``(steps, inputs)`` and targets ``(steps, targets)``, scaled, from
        the transformed ``values`` of ``data``."""
        state = self.fitted_state
        k = len(state["targets"])
        values = (values - np.asarray(state["center"])) / np.asarray(state["scale"])
        calendar = (
            calendar_features(pd.DatetimeIndex(data["time"]), state["calendar"])
            if state["calendar"]
            else np.zeros((len(values), 0))
        )
        inputs = torch.from_numpy(np.concatenate([values, calendar], axis=1).astype(np.float32))
        return inputs, inputs[:, :k].clone()

    # -- splits and windows --------------------------------------------------------------
    def _bounds(self, time: pd.Index) -> dict[str, tuple[int, int]]:
        """Step ranges whose targets belong to train, validation and test."""
        hp = self.hparams
        n = len(time)

        def position(option: str) -> int:
            value = hp[option]
            stamp = value if isinstance(time[0], (int, np.integer)) else pd.Timestamp(value)
            zone = getattr(time, "tz", None)
            if isinstance(stamp, pd.Timestamp) and (stamp.tzinfo is None) != (zone is None):
                if zone is None:
                    raise ConfigError(
                        f"datamodule.{option}={value!r} has a UTC offset but the times have "
                        "none; leave the offset out"
                    )
                stamp = stamp.tz_localize(zone)  # the times' own zone (UTC once converted)
            found = int(time.searchsorted(stamp))
            if not 0 < found < n:
                raise ConfigError(
                    f"datamodule.{option}={value!r} is outside the data ({time[0]} to {time[-1]})"
                )
            return found

        periods = self.fold_periods(n, hp.val_fraction)
        if periods is not None:  # a cross-validation fold: steps after its test block unused
            val, test, n = periods["val"][0], periods["test"][0], periods["test"][1]
        else:
            test = position("test_start") if hp.test_start else n - round(hp.test_fraction * n)
            val = position("val_start") if hp.val_start else test - round(hp.val_fraction * n)
        if not 0 < val <= test <= n:
            raise ConfigError(
                f"the validation period must start after the training period and before the "
                f"test period (steps: val at {val}, test at {test} of {n})"
            )
        bounds = {"train": (0, val), "val": (val, test), "test": (test, n)}
        need = hp.lookback + hp.horizon
        if val < need + 1:
            raise DataError(
                f"the training period has {val} steps; windows need lookback + horizon = "
                f"{need} and training needs more than one: use more data or smaller windows"
            )
        for split in ("val", "test"):
            a, b = bounds[split]
            if 0 < b - a < hp.horizon:
                raise DataError(
                    f"the {split} period has {b - a} steps, fewer than horizon={hp.horizon}"
                )
        return bounds

    def _starts(self, a: int, b: int, stride: int = 1) -> np.ndarray:
        """Window starts whose ``horizon`` targets all lie in steps ``[a, b)``."""
        hp = self.hparams
        first = max(a - hp.lookback, 0)
        last = b - hp.lookback - hp.horizon
        return np.arange(first, last + 1, stride) if last >= first else np.zeros(0, np.int64)

    @property
    def starts(self) -> dict[str, np.ndarray]:
        """Window start steps of each split that has windows (what its loader holds)."""
        out = {}
        for split in ("train", "val", "test"):
            data = getattr(self, f"{split}_data")
            if data is not None:
                out[split] = data[0].numpy()
        return out

    @property
    def season(self) -> int:
        hp = self.hparams
        return int(hp.season) if hp.season else default_season(self.fitted_state["freq"])

    def _collate(self, with_baselines: bool):
        """Window start indices -> model batches gathered from strided views."""
        hp = self.hparams
        lookback, horizon, m = hp.lookback, hp.horizon, self.season
        inputs = self.series.unfold(0, lookback, 1)  # (steps - lookback + 1, inputs, lookback)
        targets = self.target_series.unfold(0, horizon, 1)  # (.., targets, horizon)
        steps = torch.arange(horizon)
        back = steps - m * torch.div(steps + m, m, rounding_mode="floor")  # one season back

        def collate(batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
            start = batch[0]
            out = {
                "x": inputs[start].transpose(1, 2).contiguous(),
                "y": targets[start + lookback].transpose(1, 2).contiguous(),
            }
            if with_baselines:
                origin = start + lookback
                out["naive"] = self.target_series[origin - 1].unsqueeze(1).expand_as(out["y"])
                seasonal = (origin[:, None] + back[None, :]).clamp(min=0)
                out["seasonal_naive"] = self.target_series[seasonal]
                out["start"] = start
            return out

        return collate

    def data_facts(self) -> dict[str, Any]:
        if not self.fitted_state:
            raise DataError(f"{type(self).__name__}: call setup('fit') first")
        state, k = self.fitted_state, len(self.fitted_state["targets"])
        return {
            "num_inputs": len(state["center"]) + 2 * len(state["calendar"]),
            "num_targets": k,
            "lookback": self.hparams.lookback,
            "horizon": self.hparams.horizon,
            "target_center": state["center"][:k],
            "target_scale": state["scale"][:k],
            "target_log": state["log_target"],
        }

    @property
    def targets(self) -> list[str]:
        return list(self.fitted_state.get("targets", []))

    def setup_fit(self) -> None:
        hp = self.hparams
        data = self._read()
        bounds = self._bounds(data["time"])
        values = self._transform_targets(data)
        if not self.fitted_state:
            self._fit_state(data, values[: bounds["train"][1]])
            self._warn_constant_targets(data, values[: bounds["train"][1]])
        else:
            self._check_columns(data, "the data")
        self.series, self.target_series = self._scaled(data, values)
        self.time = data["time"]
        #: the series as read (original units, on its grid): a bundle's example input
        self.source = data
        self.bounds = bounds
        for split, (a, b) in bounds.items():
            starts = self._starts(a, b, hp.stride if split == "train" else 1)
            if split == "train" and not len(starts):
                raise DataError("no training window fits; use more data or smaller windows")
            if len(starts):
                setattr(self, f"{split}_data", (torch.from_numpy(starts),))

    def _warn_constant_targets(self, data: dict[str, Any], train: np.ndarray) -> None:
        """A target that never changes in the training part has nothing to learn, and its
        R^2 and skill scores are undefined (0/0): say so instead of reporting them."""
        for j, name in enumerate(data["targets"]):
            column = train[:, j]
            column = column[np.isfinite(column)]
            if len(column) and np.ptp(column) == 0:
                message = (
                    f"datamodule.target: {name!r} is constant ({column[0]:g}) in the training "
                    "part: there is nothing to forecast, and R^2 and skill scores are undefined"
                )
                self.data_warnings.append(message)
                warnings.warn(message, DataWarning, stacklevel=3)

    def _check_columns(self, data: dict[str, Any], where: str) -> None:
        state = self.fitted_state
        for key in ("targets", "covariates"):
            if data[key] != state[key]:
                raise DataError(
                    f"{where}: {key} {data[key]}, the model was trained on {state[key]}"
                )
        if str(data["freq"]) != str(state["freq"]):
            raise DataError(
                f"{where}: frequency {data['freq']!r}, the model was trained on {state['freq']!r}"
            )

    def collate(self, stage: str) -> Callable[[tuple[Tensor, ...]], Any] | None:
        if stage == "predict":
            return None
        return self._collate(with_baselines=stage == "test")  # only tests score them

    def setup_predict(self) -> None:
        hp = self.hparams
        self.check_predict_ready(needs_path=False)  # default: forecast the training file
        data = self._read(hp.predict_path)
        where = "datamodule.predict_path" if hp.predict_path else "the training data"
        self._check_columns(data, where)
        if len(data["time"]) < hp.lookback:
            raise DataError(
                f"{where}: {len(data['time'])} steps, fewer than lookback={hp.lookback}"
            )
        inputs, _ = self._scaled(data, self._transform_targets(data))
        self.predict_data = (inputs[-hp.lookback :].unsqueeze(0),)
        freq, last = data["freq"], data["time"][-1]
        if isinstance(freq, (int, np.integer)):
            self.future_time = pd.Index(last + freq * np.arange(1, hp.horizon + 1))
        else:
            self.future_time = pd.date_range(last, periods=hp.horizon + 1, freq=freq)[1:]

    # -- cross-validation ------------------------------------------------------------------
    def cv_rows(self, groups: str | None = None) -> CVRows:
        """The steps of the series on its time grid, in time order: folds chain forward
        (each fold trains on every step before its test block, validating on the last
        ``val_fraction`` of them)."""
        if groups is not None:
            raise ConfigError(
                f"cv.groups={groups!r}: a forecasting datamodule holds one series and its "
                "folds are periods of time; drop cv.groups"
            )
        return CVRows(len(self._read()["time"]), None, None, True)

    def use_test_for_predict(self) -> None:
        """The test windows' inputs (each forecast from its own ``lookback`` steps)."""
        starts = self.test_data[0]
        windows = self.series.unfold(0, self.hparams.lookback, 1)[starts]
        self.predict_data = (windows.transpose(1, 2).contiguous(),)
        self.fold_starts = starts.numpy()

    def fold_predictions(self, outputs: dict[str, Tensor], rows: np.ndarray) -> pd.DataFrame:
        """One line per test window and step ahead: ``row`` (the step forecast), ``origin``
        (the window's first forecast step), ``step``, ``time`` and each target's forecast
        and actual value (original units), sorted by ``row`` then ``step``."""
        hp = self.hparams
        pred = outputs["pred"].detach().float().cpu().numpy()  # (windows, horizon, targets)
        origin = np.repeat(self.fold_starts + hp.lookback, hp.horizon)
        step = np.tile(np.arange(1, hp.horizon + 1), len(self.fold_starts))
        row = origin + step - 1
        if len(pred) != len(self.fold_starts) or not np.isin(row, rows).all():
            raise DataError(
                f"{type(self).__name__}: the fold's forecasts do not fall in its test steps"
            )
        values = self.source["values"]
        frame = pd.DataFrame(
            {"row": row, "origin": origin, "step": step, "time": self.time[row].astype(str)}
        )
        for j, name in enumerate(self.targets):
            frame[name] = pred[:, :, j].reshape(-1)
            frame[f"{name}_actual"] = values[row, j]
        return frame.sort_values(["row", "step"], kind="stable").reset_index(drop=True)

    # -- bundles ---------------------------------------------------------------------------
    input_kind = "series"

    def input_encoder(self) -> torch.nn.Module:
        """The log of the targets (``log_target``) and the scaling in the graph; the
        calendar features of the timestamps are computed outside it."""
        from datamodules._graph import ForecastEncoder

        return ForecastEncoder(self.fitted_state)

    def input_signature(self) -> dict[str, Any]:
        hp, state = self.hparams, self.fitted_state
        return {
            "kind": self.input_kind,
            "accepts": "the rows of one series (records: the time column, the targets and "
            f"the covariates), in time order, at least lookback={hp.lookback} of them",
            "time_column": getattr(self, "source", {}).get("time_column"),
            "targets": list(state["targets"]),
            "covariates": list(state["covariates"]),
            "frequency": str(state["freq"]),
            "lookback": hp.lookback,
            "horizon": hp.horizon,
        }

    def example_inputs(self, n: int) -> list[Any]:
        """The ``lookback`` rows before the test part: the answer forecasts its first steps."""
        data = getattr(self, "source", None)
        if data is None:
            raise DataError(f"{type(self).__name__}: call setup('fit') before example_inputs()")
        end = self.bounds["test"][0] if "test" in self.bounds else len(data["time"])
        start = max(0, end - self.hparams.lookback)
        columns = [*data["targets"], *data["covariates"]]
        records = []
        for i in range(start, end):
            time = data["time"][i]
            record = {
                data["time_column"]: time if isinstance(time, (int, np.integer)) else str(time)
            }
            record.update({c: float(v) for c, v in zip(columns, data["values"][i])})
            records.append(record)
        return records

    def predictions_frame(self, outputs: dict[str, Tensor]) -> pd.DataFrame:
        """One row per future step: its time, the step ahead, and each target's forecast."""
        pred = outputs["pred"].detach().float().cpu().numpy()[0]  # (horizon, targets)
        frame = pd.DataFrame(
            {"time": self.future_time.astype(str), "step": np.arange(1, len(pred) + 1)}
        )
        for j, name in enumerate(self.targets):
            frame[name] = pred[:, j]
        return frame


class SyntheticDemandDataModule(ForecastDataModule):
    """A generated hourly demand series, for tests and examples (no file needed).

    ``demand = level * (1 + trend * t/steps) + daily + weekly + temperature effect + AR(1)
    noise``: a daily cycle with morning and evening peaks (amplitude ``daily``), weekends
    ``weekend`` lower, a ``temperature`` covariate (daily cycle plus slow weather noise)
    that adds demand when it is hot, and AR(1) noise (coefficient 0.7, sd ``noise``).
    Starts on Monday 2024-01-01 00:00. Seeded by ``generator_seed``.
    """

    def __init__(
        self,
        steps: int = 24 * 7 * 12,
        level: float = 1000.0,
        trend: float = 0.1,
        daily: float = 150.0,
        weekend: float = 120.0,
        noise: float = 15.0,
        generator_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("time_column", "timestamp")
        kwargs.setdefault("target", "demand")
        super().__init__(**kwargs)

    def load_frame(self) -> pd.DataFrame:
        hp = self.hparams
        rng = np.random.default_rng(hp.generator_seed)
        time = pd.date_range("2024-01-01", periods=hp.steps, freq="h")
        t = np.arange(hp.steps, dtype=np.float64)
        hour = time.hour.to_numpy()
        daily = hp.daily * (
            np.exp(-((hour - 8) ** 2) / 6) + 1.2 * np.exp(-((hour - 19) ** 2) / 8) - 0.5
        )
        weekend = np.where(time.day_of_week.to_numpy() >= 5, -hp.weekend, 0.0)
        weather = np.cumsum(rng.normal(0, 0.3, hp.steps))
        weather -= np.convolve(weather, np.ones(24 * 7) / (24 * 7), mode="same")
        temperature = 15 + 5 * np.sin(2 * np.pi * (hour - 9) / 24) + weather
        noise = np.zeros(hp.steps)
        shocks = rng.normal(0, hp.noise, hp.steps)
        for i in range(1, hp.steps):
            noise[i] = 0.7 * noise[i - 1] + shocks[i]
        demand = (
            hp.level * (1 + hp.trend * t / hp.steps)
            + daily
            + weekend
            + 8 * np.clip(temperature - 18, 0, None)
            + noise
        )
        return pd.DataFrame(
            {
                "timestamp": time.strftime("%Y-%m-%d %H:%M"),
                "demand": demand,
                "temperature": temperature,
            }
        )
