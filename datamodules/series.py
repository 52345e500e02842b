"""One long (multi-channel) series cut into windows, for unsupervised anomaly detection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from datamodules._table_prep import read_table, require_columns
from datamodules.base import BaseDataModule, CVRows
from datamodules.sequence import interpolate_gaps
from tasks.errors import ConfigError, DataError

PREDICT = "datamodule.predict_path"


class SeriesDataModule(BaseDataModule):
    """A long series from a CSV (or :meth:`load_frame`), split in time and cut into windows.

    The first ``1 - val_fraction - test_fraction`` of the steps train, the next
    ``val_fraction`` choose the threshold, the last ``test_fraction`` are scored.
    Training windows (stride ``stride``) skip any step labelled anomalous, so the model
    learns what normal looks like; validation, test and predict windows tile the series
    (stride = ``window``, the last one aligned to the end) so that each step gets one score.
    Values are standardised per channel with training statistics (saved in checkpoints).

    Args:
        path: CSV/TSV/Parquet with a time column, value columns and optionally labels.
        time_column: Timestamp or index column (None: the row order). It must increase
            strictly: duplicated or unsorted times are an error.
        value_columns: Value columns (default: every numeric column but time and label).
        label_column: Optional 0/1 column marking anomalous steps, used for evaluation
            and to keep anomalies out of the training windows.
        window: Steps per window.
        stride: Steps between training windows.
        nan: ``error``, or ``interpolate`` gaps linearly.
        predict_path: A series to score (same columns; labels optional).
        **kwargs: ``val_fraction``, ``test_fraction``, loader settings of
            :class:`~datamodules.base.BaseDataModule`.
    """

    def __init__(
        self,
        path: str | None = None,
        time_column: str | None = None,
        value_columns: Sequence[str] | None = None,
        label_column: str | None = None,
        window: int = 64,
        stride: int = 4,
        nan: str = "error",
        predict_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        own = self._overrides("load_frame")
        if (path is None) != own:
            raise ConfigError(
                "datamodule.path is required: a CSV with a time column and value columns"
                if not own
                else f"{type(self).__name__} makes its own series; do not set path"
            )
        if window < 4 or stride < 1:
            raise ConfigError(f"window must be >= 4 and stride >= 1, got {window}, {stride}")
        if nan not in ("error", "interpolate"):
            raise ConfigError(f"datamodule.nan={nan!r}; expected error or interpolate")
        super().__init__(**kwargs)
        self.parts: dict[str, dict[str, Any]] = {}

    def load_frame(self) -> pd.DataFrame:
        """The series as a table, for subclasses that generate or fetch their own."""
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------
    def _frame(self, source: Any, where: str) -> dict[str, Any]:
        hp = self.hparams
        frame = source if isinstance(source, pd.DataFrame) else read_table(source, where)
        columns = [str(c) for c in frame.columns]
        # new data to predict need not be labelled
        required = ("time_column",) if where == PREDICT else ("time_column", "label_column")
        require_columns(frame, [(hp[o], o) for o in required if hp[o] is not None], where)
        if hp.time_column is not None:
            time = frame[hp.time_column]
            parsed = (
                time
                if pd.api.types.is_numeric_dtype(time)
                else pd.to_datetime(time, errors="coerce")
            )
            if parsed.isna().any():
                rows = np.flatnonzero(parsed.isna())[:5].tolist()
                raise DataError(
                    f"{where}: time column {hp.time_column!r} has unreadable values in rows {rows}"
                )
            steps = np.diff(parsed.to_numpy()).astype(np.float64) if len(parsed) > 1 else np.ones(0)
            if (steps == 0).any():
                rows = (np.flatnonzero(steps == 0)[:5] + 1).tolist()
                raise DataError(f"{where}: duplicated times in rows {rows}; drop or merge them")
            if (steps < 0).any():
                rows = (np.flatnonzero(steps < 0)[:5] + 1).tolist()
                raise DataError(
                    f"{where}: time goes backwards at rows {rows}; sort the file by "
                    f"{hp.time_column!r}"
                )
            time_values = time.astype(str).to_numpy()
        else:
            time_values = np.arange(len(frame)).astype(str)
        skip = {hp.time_column, hp.label_column}
        names = (
            list(hp.value_columns)
            if hp.value_columns
            else [c for c in columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
        )
        missing = [c for c in names if c not in columns]
        if missing or not names:
            raise DataError(
                f"{where}: value columns {missing or names} are missing; columns: {columns}"
            )
        bad = [c for c in names if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise DataError(f"{where}: value columns {bad} are not numeric")
        values = frame[names].to_numpy(dtype=np.float64).T  # (channels, steps)
        if np.isnan(values).any():
            if hp.nan == "error":
                rows = np.flatnonzero(np.isnan(values).any(axis=0))[:5].tolist()
                raise DataError(
                    f"{where}: missing values in rows {rows}; fill them or set "
                    "datamodule.nan=interpolate"
                )
            values = interpolate_gaps(values)
        labels = None
        if hp.label_column is not None and hp.label_column in columns:
            labels = frame[hp.label_column].fillna(0).to_numpy()
            if not np.isin(labels, (0, 1)).all():
                raise DataError(f"{where}: label column {hp.label_column!r} must hold 0 and 1")
            labels = labels.astype(np.int64)
        if values.shape[1] < hp.window:
            raise DataError(
                f"{where}: {values.shape[1]} steps are fewer than one window "
                f"(datamodule.window={hp.window})"
            )
        return {"values": values, "labels": labels, "time": time_values, "columns": names}

    # -- windows -------------------------------------------------------------------------
    @staticmethod
    def tile_starts(steps: int, window: int) -> np.ndarray:
        """Window starts that tile ``steps`` (the last window ends at the last step)."""
        starts = list(range(0, steps - window + 1, window))
        if starts[-1] + window < steps:
            starts.append(steps - window)
        return np.asarray(starts)

    def _windows(self, values: Tensor, starts: np.ndarray) -> Tensor:
        w = self.hparams.window
        return (
            torch.stack([values[:, s : s + w] for s in starts])
            if len(starts)
            else values.new_zeros((0, values.shape[0], w))
        )

    def assemble(self, split: str, errors: Tensor) -> np.ndarray:
        """Per-step scores of a split from per-window, per-step errors ``(windows, window)``."""
        part = self.parts[split]
        out = np.zeros(part["values"].shape[1])
        for s, e in zip(part["starts"], errors.cpu().numpy()):
            out[s : s + len(e)] = e  # a later (end-aligned) window overwrites the overlap
        return out

    def _standardise(self, values: np.ndarray) -> Tensor:
        mean = np.asarray(self.fitted_state["mean"])[:, None]
        std = np.asarray(self.fitted_state["std"])[:, None]
        return torch.from_numpy(((values - mean) / std).astype(np.float32))

    def data_facts(self) -> dict[str, Any]:
        if not self.fitted_state:
            raise DataError(f"{type(self).__name__}: call setup('fit') first")
        return {"in_channels": len(self.fitted_state["columns"]), "window": self.hparams.window}

    def _training_series(self) -> dict[str, Any]:
        """The series to train on: ``path`` or :meth:`load_frame`, read by :meth:`_frame`."""
        own = self._overrides("load_frame")
        return self._frame(
            self.load_frame() if own else self.hparams.path,
            f"{type(self).__name__}.load_frame()" if own else "datamodule.path",
        )

    def setup_fit(self) -> None:
        hp = self.hparams
        data = self._training_series()
        n = data["values"].shape[1]
        bounds = self.fold_periods(n, hp.val_fraction)
        if bounds is None:
            n_test = int(round(hp.test_fraction * n))
            n_val = int(round(hp.val_fraction * n))
            bounds = {
                "train": (0, n - n_val - n_test),
                "val": (n - n_val - n_test, n - n_test),
                "test": (n - n_test, n),
            }
        elif 0 < bounds["test"][1] - bounds["test"][0] < hp.window:
            a, b = bounds["test"]
            raise DataError(
                f"a cross-validation fold tests {b - a} steps, fewer than one window "
                f"({hp.window}); use fewer cv.folds or a smaller datamodule.window"
            )
        for split, (a, b) in bounds.items():
            if split != "test" and b - a < hp.window:
                raise DataError(
                    f"the {split} part has {b - a} steps, fewer than one window "
                    f"({hp.window}); use a longer series or other fractions"
                    + (" (or fewer cv.folds)" if self.fold is not None else "")
                )
        a, b = bounds["train"]
        train = data["values"][:, a:b]
        if not self.fitted_state:
            std = train.std(axis=1)
            self.fitted_state = {
                "columns": data["columns"],
                "mean": train.mean(axis=1).tolist(),
                "std": np.where(std > 0, std, 1.0).tolist(),
            }
        values = self._standardise(data["values"])
        a, b = bounds["test"]
        #: the test part as the rows of a table (a bundle's example input)
        self.test_rows = {"time": data["time"][a:b], "values": data["values"][:, a:b]}
        for split, (a, b) in bounds.items():
            if b - a < hp.window:
                continue
            labels = None if data["labels"] is None else data["labels"][a:b]
            if split == "train":
                starts = np.arange(0, b - a - hp.window + 1, hp.stride)
                if labels is not None:  # learn what normal looks like
                    clean = np.convolve(labels, np.ones(hp.window), "valid")[starts] == 0
                    starts = starts[clean]
            else:
                starts = self.tile_starts(b - a, hp.window)
            part_values = values[:, a:b]
            windows = self._windows(part_values, starts)
            self.parts[split] = {
                "values": part_values.numpy(),
                "labels": labels,
                "starts": starts,
                "time": data["time"][a:b],
            }
            setattr(self, f"{split}_data", (windows, windows))

    def setup_predict(self) -> None:
        hp = self.hparams
        self.check_predict_ready()
        data = self._frame(hp.predict_path, PREDICT)
        if data["columns"] != self.fitted_state["columns"]:
            raise DataError(
                f"datamodule.predict_path: value columns {data['columns']}, trained on "
                f"{self.fitted_state['columns']}"
            )
        values = self._standardise(data["values"])
        starts = self.tile_starts(values.shape[1], hp.window)
        self.parts["predict"] = {
            "values": values.numpy(),
            "labels": data["labels"],
            "starts": starts,
            "time": data["time"],
        }
        self.predict_data = (self._windows(values, starts),)

    # -- cross-validation ------------------------------------------------------------------
    def cv_rows(self, groups: str | None = None) -> CVRows:
        """The steps of the series, in time order: folds chain forward (each trains on
        every step before its test block; the last ``val_fraction`` of them set the
        threshold)."""
        if groups is not None:
            raise ConfigError(
                f"cv.groups={groups!r}: a series datamodule holds one series and its folds "
                "are periods of time; drop cv.groups"
            )
        data = self._training_series()
        return CVRows(data["values"].shape[1], None, None, True)

    def use_test_for_predict(self) -> None:
        """The test part's windows, scored step by step as ``predictions_frame`` does."""
        self.parts["predict"] = self.parts["test"]
        self.predict_data = (self.test_data[0],)

    # -- bundles ---------------------------------------------------------------------------
    input_kind = "series"

    def input_encoder(self) -> torch.nn.Module:
        """The per-channel standardisation of the windows in the graph."""
        from datamodules._graph import AffineEncoder

        state = self.fitted_state
        return AffineEncoder(
            state["mean"], state["std"], 1, "windows (N, channels, window), original units"
        )

    def input_signature(self) -> dict[str, Any]:
        hp = self.hparams
        return {
            "kind": self.input_kind,
            "accepts": "the rows of one series (records), in time order",
            "time_column": hp.time_column,
            "value_columns": list(self.fitted_state["columns"]),
            "window": hp.window,
        }

    def example_inputs(self, n: int) -> list[Any]:
        """The test part's first rows (at least two windows where it has them)."""
        hp = self.hparams
        rows = min(len(self.test_rows["time"]), max(n, 2 * hp.window))
        records = []
        for i in range(rows):
            record = {hp.time_column: self.test_rows["time"][i]} if hp.time_column else {}
            for j, name in enumerate(self.fitted_state["columns"]):
                record[name] = float(self.test_rows["values"][j, i])
            records.append(record)
        return records

    def predictions_frame(self, outputs: dict[str, Tensor]) -> pd.DataFrame:
        part = self.parts["predict"]
        score = self.assemble("predict", outputs["error"])
        threshold = float(outputs["threshold"][0])
        frame = pd.DataFrame(
            {"time": part["time"], "score": score, "anomaly": (score > threshold).astype(int)}
        )
        if part["labels"] is not None:
            frame["label"] = part["labels"]
        return frame


class SyntheticSeriesDataModule(SeriesDataModule):
    """A generated long series with injected, labelled anomalies (the default data).

    ``steps`` points of ``sin(2 pi t / period) + 0.5 sin(2 pi t / (7 period))`` plus
    Gaussian noise (sd ``noise``); then ``anomalies`` segments of 5-40 steps at uniform
    positions, each one of: *spike* (a single +-4 jump), *shift* (the level moves by
    +-1.5), *noise* (extra noise, sd 0.8), *flat* (the signal freezes), *frequency* (the
    cycle runs 3x faster). Column ``anomaly`` marks their steps. Seeded by
    ``generator_seed``.
    """

    KINDS = ("spike", "shift", "noise", "flat", "frequency")

    def __init__(
        self,
        steps: int = 20000,
        period: int = 100,
        noise: float = 0.1,
        anomalies: int = 60,
        generator_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("label_column", "anomaly")
        kwargs.setdefault("time_column", "t")
        super().__init__(**kwargs)

    def load_frame(self) -> pd.DataFrame:
        hp = self.hparams
        rng = np.random.default_rng(hp.generator_seed)
        t = np.arange(hp.steps, dtype=np.float64)
        phase = 2 * np.pi * t / hp.period
        x = np.sin(phase) + 0.5 * np.sin(phase / 7) + rng.normal(0, hp.noise, hp.steps)
        label = np.zeros(hp.steps, dtype=np.int64)
        for _ in range(hp.anomalies):
            w = int(rng.integers(5, 41))
            s = int(rng.integers(0, hp.steps - w))
            part = slice(s, s + w)
            kind = self.KINDS[int(rng.integers(len(self.KINDS)))]
            if kind == "spike":
                x[s] += rng.choice([-4.0, 4.0])
                part = slice(s, s + 1)
            elif kind == "shift":
                x[part] += rng.choice([-1.5, 1.5])
            elif kind == "noise":
                x[part] += rng.normal(0, 0.8, w)
            elif kind == "flat":
                x[part] = x[s]
            else:
                x[part] = (
                    np.sin(3 * phase[part])
                    + 0.5 * np.sin(phase[part] / 7)
                    + rng.normal(0, hp.noise, w)
                )
            label[part] = 1
        return pd.DataFrame({"t": t.astype(np.int64), "value": x, "anomaly": label})
