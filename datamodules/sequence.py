"""Fixed-length sequences with a class label: CSV files (UCR or column layout), numpy
arrays from Python, the bundled GunPoint data, and the reference anomaly curves."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from datamodules._graph import FLAT
from datamodules._table_prep import DataWarning, check_frame, read_table
from datamodules.base import BaseDataModule, CVRows, class_predictions
from tasks.errors import ConfigError, DataError, did_you_mean

log = logging.getLogger(__name__)

LAYOUTS = ("label_first", "columns")
NORMALIZE = ("global", "per_sequence", "none")
NAN_POLICIES = ("error", "interpolate")
#: Sequence sets shipped in datamodules/data (see its README): name -> (train, test) files.
BUNDLED = {"gunpoint": ("gunpoint_train.csv.gz", "gunpoint_test.csv.gz")}


def interpolate_gaps(x: np.ndarray) -> np.ndarray:
    """Fill NaNs inside each sequence (last axis) linearly; ends take the nearest value."""
    out = x.copy()
    flat = out.reshape(-1, out.shape[-1])
    steps = np.arange(flat.shape[1])
    for row in flat:
        gaps = np.isnan(row)
        if gaps.all():
            raise DataError("a sequence has no values at all; drop it")
        if gaps.any():
            row[gaps] = np.interp(steps[gaps], steps[~gaps], row[~gaps])
    return out


class SequenceDataModule(BaseDataModule):
    """Labelled fixed-length sequences ``(N, channels, steps)`` held in memory.

    Sources (exactly one): ``path`` (CSV/TSV/Parquet), ``dataset`` (bundled:
    ``gunpoint``), ``arrays`` (Python: ``(x, y)`` with ``x`` of shape ``(N, steps)`` or
    ``(N, channels, steps)``), or a subclass's :meth:`load_arrays`.

    CSV layouts: ``label_first`` (UCR: the label, then one column per step) or
    ``columns`` (a ``target`` column plus value columns, ``features`` or every other
    column). With ``channels=C`` the value columns are C blocks of equal length,
    channel after channel (``a_t0..a_tN, b_t0..b_tN``).

    **Header** (``label_first`` CSV files): real UCR files have none. ``header=auto``
    reads the first line as data when its values (every field after the label) are
    numbers, unless they are step numbers (``0, 1, 2, ...``); the choice is logged. A
    header that looks like data (``label,0.5,1.0``) then shows as a lone word among the
    labels, an error that points to ``header=true``. Errors name file lines (line 1 is
    the first line of the file).

    **Labels** that are numbers except for a few rows (under 5%, or at most 2 rows) are
    an error naming those values and lines: a typo would otherwise become a class.

    Args:
        path: Labelled sequences file.
        dataset: A bundled set instead of ``path``.
        arrays: ``(x, y)`` numpy arrays instead of ``path`` (Python only; not saved).
        layout: ``label_first`` or ``columns``.
        header: Whether the first line of a ``label_first`` CSV file names the columns:
            ``auto`` (detect it), ``true`` or ``false``. ``columns`` files need one.
        target: Label column for ``layout=columns``.
        features: Value columns for ``layout=columns`` (default: all but the target).
        channels: Values per time step.
        expected_classes: Expected number of classes; more labels than that is an error.
        normalize: ``global`` (per-channel mean/std of the training split),
            ``per_sequence`` (z-normalise each sequence) or ``none``.
        nan: ``error``, or ``interpolate`` gaps inside a sequence linearly.
        test_path: Separate test file (same layout); otherwise split by ``test_fraction``.
        predict_path: Sequences to predict (same layout, label optional).
        **kwargs: Loader and split settings of :class:`~datamodules.base.BaseDataModule`.
    """

    not_hyperparameters = ("arrays",)

    def __init__(
        self,
        path: str | None = None,
        dataset: str | None = None,
        arrays: tuple[np.ndarray, np.ndarray] | None = None,
        layout: str = "label_first",
        header: bool | str = "auto",
        target: str | None = None,
        features: Sequence[str] | None = None,
        channels: int = 1,
        expected_classes: int | None = None,
        normalize: str = "global",
        nan: str = "error",
        test_path: str | None = None,
        predict_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        own = self._overrides("load_arrays")
        sources = [
            n
            for n, v in (("path", path), ("dataset", dataset), ("arrays", arrays))
            if v is not None
        ]
        if len(sources) != (0 if own else 1):
            raise ConfigError(
                f"{type(self).__name__} needs "
                + (
                    "no data source (it makes its own)"
                    if own
                    else "exactly one data source: "
                    "datamodule.path=FILE or datamodule.dataset=NAME (or arrays= from Python)"
                )
                + f"; got {sources or 'none'}"
            )
        if dataset is not None and dataset not in BUNDLED:
            raise ConfigError(
                f"datamodule.dataset={dataset!r} is not bundled.{did_you_mean(dataset, BUNDLED)} "
                f"Available: {', '.join(BUNDLED)}"
            )
        for name, value, allowed in (
            ("layout", layout, LAYOUTS),
            ("normalize", normalize, NORMALIZE),
            ("nan", nan, NAN_POLICIES),
        ):
            if value not in allowed:
                raise ConfigError(f"datamodule.{name}={value!r}; expected one of {allowed}")
        if not (isinstance(header, bool) or header == "auto"):
            raise ConfigError(
                f"datamodule.header={header!r}; expected auto, true (the first line names "
                "the columns) or false (it is data)"
            )
        if layout == "columns" and header is False:
            raise ConfigError(
                "datamodule.header=false needs datamodule.layout=label_first: the columns "
                "layout finds its columns by name"
            )
        if layout == "columns" and path is not None and not target:
            raise ConfigError("layout=columns needs datamodule.target=LABEL_COLUMN")
        if channels < 1:
            raise ConfigError(f"datamodule.channels must be >= 1, got {channels}")
        super().__init__(**kwargs)
        self._arrays = arrays

    # -- reading -------------------------------------------------------------------------
    def load_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"train": (x, labels), "test": ...}`` for subclasses that make their own data."""
        raise NotImplementedError

    def _shape(self, values: np.ndarray, where: str, first_line: int | None = None) -> np.ndarray:
        hp = self.hparams
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 2:
            if values.shape[1] % hp.channels:
                raise DataError(
                    f"{where}: {values.shape[1]} value columns do not split into "
                    f"datamodule.channels={hp.channels} equal blocks"
                )
            values = values.reshape(len(values), hp.channels, -1)
        if values.ndim != 3:
            raise DataError(
                f"{where}: expected (N, steps) or (N, channels, steps), got {values.shape}"
            )
        if np.isnan(values).any():
            if hp.nan == "error":
                rows = np.flatnonzero(np.isnan(values).any(axis=(1, 2)))
                raise DataError(
                    f"{where}: {len(rows)} sequence(s) contain NaN (first "
                    f"{_at(rows, first_line)}); fill them, or set datamodule.nan=interpolate "
                    "to fill gaps linearly"
                )
            values = interpolate_gaps(values)
        return values

    def _load(self, path: str, option: str) -> tuple[pd.DataFrame, str, int | None]:
        """The table in ``path``, the ``where`` of its messages and the file line of its
        first row (None for Parquet, whose rows are not lines)."""
        hp = self.hparams
        file = Path(path).expanduser()
        where = f"{option} {str(file)!r}"
        suffixes = [s.lower() for s in file.suffixes]
        if ".parquet" in suffixes or ".pq" in suffixes:
            return read_table(path, option), where, None
        if hp.layout == "columns" or hp.header is True or not file.is_file():
            return read_table(path, option), where, 2  # read_table names a missing file
        sep = "\t" if ".tsv" in suffixes or ".tab" in suffixes else ","
        header, reason, sep = _guess_header(file, sep)
        if hp.header is False:
            header = False
        elif reason:  # else reading it fails with a message of its own
            log.info(
                "%s: %s (%s); set datamodule.header=%s",
                where,
                "line 1 is read as the header" if header else "read without a header",
                reason,
                "false if line 1 is data" if header else "true if line 1 names the columns",
            )
        if header:
            return read_table(path, option), where, 2
        try:  # not read_table: it checks the first line for duplicate column names
            frame = pd.read_csv(file, sep=sep, header=None)
        except pd.errors.EmptyDataError as exc:
            raise DataError(f"{option}: {str(file)!r} is empty") from exc
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"{option}: {str(file)!r} is not a readable table: {exc}") from exc
        check_frame(frame, where)
        return frame, where, 1

    def _read(
        self,
        frame: pd.DataFrame,
        where: str,
        first_line: int | None = None,
        labelled: bool = True,
        check_labels: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        hp = self.hparams
        # a row longer than the header is already a read error naming the line
        if hp.layout == "label_first":
            labels = frame.iloc[:, 0] if labelled else None
            values = frame.iloc[:, 1:] if labelled else frame
        else:
            target = hp.target or "label"
            if labelled and target not in frame.columns:
                hint = did_you_mean(target, [str(c) for c in frame.columns])
                raise DataError(f"{where}: no label column {target!r}.{hint}")
            cols = list(hp.features) if hp.features else [c for c in frame.columns if c != target]
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise DataError(f"{where}: value columns {missing} are missing")
            labels = frame[target] if labelled and target in frame.columns else None
            values = frame[cols]
        bad = [str(c) for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
        if bad:
            raise DataError(
                f"{where}: value columns {bad[:5]} are not numeric (is the layout right? "
                f"datamodule.layout={hp.layout})"
            )
        if labels is not None and check_labels:
            _check_labels(labels, where, first_line, hp.header == "auto")
        array = values.to_numpy(dtype=np.float64)
        trailing = np.isnan(array[:, -1]) & ~np.isnan(array).all(axis=1)
        if trailing.any() and not np.isnan(array[:, -1]).all():
            rows = np.flatnonzero(trailing)[:5]
            lengths = (~np.isnan(array)).sum(axis=1)
            raise DataError(
                f"{where}: ragged rows: {_at(rows, first_line)} are shorter "
                f"({sorted(set(lengths[rows].tolist()))} values) than the longest "
                f"({array.shape[1]}); sequences must have one length"
            )
        x = self._shape(array, where, first_line)
        return x, None if labels is None else labels.to_numpy()

    def _raw(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        hp = self.hparams
        if self._overrides("load_arrays"):
            return {
                k: (self._shape(x, f"{type(self).__name__}.load_arrays()"), np.asarray(y))
                for k, (x, y) in self.load_arrays().items()
            }
        if self._arrays is not None:
            x, y = self._arrays
            if len(x) != len(y):
                raise DataError(f"arrays: {len(x)} sequences but {len(y)} labels")
            return {"train": (self._shape(x, "arrays"), np.asarray(y))}
        if hp.dataset is not None:
            out = {}
            for split, name in zip(("train", "test"), BUNDLED[hp.dataset]):
                with resources.as_file(resources.files("datamodules") / "data" / name) as path:
                    # the bundled files have a header line (see datamodules/data/README.md)
                    frame = pd.read_csv(path)
                out[split] = self._read(frame, f"datamodule.dataset={hp.dataset}", 2)
            return out
        out = {"train": self._read(*self._load(hp.path, "datamodule.path"))}
        if hp.test_path is not None:
            out["test"] = self._read(*self._load(hp.test_path, "datamodule.test_path"))
        return out

    # -- state ---------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self.fitted_state:
            raise DataError(
                f"{type(self).__name__}: call setup('fit') or restore it from a checkpoint first"
            )

    @property
    def class_names(self) -> list[str]:
        self._require_fitted()
        return [str(c) for c in self.fitted_state["classes"]]

    def data_facts(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "num_classes": len(self.fitted_state["classes"]),
            "in_channels": self.fitted_state["channels"],
            "seq_len": self.fitted_state["steps"],
            "class_counts": list(self.fitted_state["class_counts"]),
        }

    def _encode(self, labels: np.ndarray, where: str) -> Tensor:
        classes = list(self.fitted_state["classes"])
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = sorted({str(v) for v in labels if _key(v) not in lookup})
        if unknown:
            raise DataError(
                f"{where}: labels {unknown[:5]} were not in the training data {classes}"
            )
        return torch.tensor([lookup[_key(v)] for v in labels], dtype=torch.long)

    def _transform(self, x: np.ndarray) -> Tensor:
        if self.hparams.normalize == "per_sequence":
            # a constant sequence has a std of rounding noise (1e-17): it stays flat (zeros),
            # as it does in a bundle's ONNX graph (datamodules._graph.FLAT), not noise / noise
            mean, std = x.mean(axis=-1, keepdims=True), x.std(axis=-1, keepdims=True)
            flat = std <= FLAT * np.maximum(1.0, np.abs(mean))
            x = (x - mean) / np.where(flat, 1.0, std)
        elif self.hparams.normalize == "global":
            mean = np.asarray(self.fitted_state["mean"])[None, :, None]
            std = np.asarray(self.fitted_state["std"])[None, :, None]
            x = (x - mean) / std
        return torch.from_numpy(x.astype(np.float32))

    def cv_rows(self, groups: str | None = None) -> CVRows:
        """The training sequences (a separate test set takes no part)."""
        x, labels = self._raw()["train"]
        return self._cv_labels(labels, len(x), groups)

    def setup_fit(self) -> None:
        hp = self.hparams
        raw = self._raw()
        x, labels = raw["train"]
        if len(x) == 0:
            raise DataError("no sequences in the training data")
        has_test = "test" in raw and self.fold is None  # a fold splits the training rows
        train_idx, val_idx, test_idx = self.split_rows(
            len(x), hp.val_fraction, 0.0 if has_test else hp.test_fraction, hp.seed, stratify=labels
        )
        if not self.fitted_state:
            classes = sorted({_key(v) for v in labels}, key=lambda v: (str(type(v)), v))
            if hp.expected_classes is not None and len(classes) > hp.expected_classes:
                raise DataError(
                    f"the label column has {len(classes)} classes {classes[:10]}, but "
                    f"datamodule.expected_classes={hp.expected_classes}; is the label column right?"
                )
            if len(classes) < 2:
                raise DataError(
                    f"the labels hold a single class {classes}; classification needs two"
                )
            train = x[train_idx]
            std = train.std(axis=(0, 2))
            self.fitted_state = {
                "classes": classes,
                "channels": int(x.shape[1]),
                "steps": int(x.shape[2]),
                "mean": train.mean(axis=(0, 2)).tolist(),
                "std": np.where(std > 0, std, 1.0).tolist(),
            }
            counts = np.bincount(
                self._encode(labels[train_idx], "labels").numpy(), minlength=len(classes)
            )
            self.fitted_state["class_counts"] = counts.tolist()
        y = self._encode(labels, "training labels")
        data = self._transform(x)
        self.train_data = (data[train_idx], y[train_idx])
        self.val_data = (data[val_idx], y[val_idx])
        #: the test sequences before normalisation (a bundle's example inputs)
        self.test_raw = x[test_idx]
        if has_test:
            tx, tl = raw["test"]
            self._check_steps(tx, "test data")
            self.test_data = (self._transform(tx), self._encode(tl, "test labels"))
            self.test_raw = tx
        elif len(test_idx):
            self.test_data = (data[test_idx], y[test_idx])

    def _check_steps(self, x: np.ndarray, where: str) -> None:
        want = (self.fitted_state["channels"], self.fitted_state["steps"])
        if tuple(x.shape[1:]) != want:
            raise DataError(
                f"{where}: sequences of shape {tuple(x.shape[1:])}, trained on {want} "
                "(channels, steps)"
            )

    def setup_predict(self) -> None:
        hp = self.hparams
        if hp.predict_path is None:
            raise ConfigError("predicting needs datamodule.predict_path=FILE")
        self._require_fitted()
        frame, where, first_line = self._load(hp.predict_path, "datamodule.predict_path")
        expected = self.fitted_state["channels"] * self.fitted_state["steps"]
        labelled = frame.shape[1] == expected + 1
        if not labelled and frame.shape[1] != expected:
            warnings.warn(
                f"datamodule.predict_path: {frame.shape[1]} columns for {expected} values",
                DataWarning,
                stacklevel=2,
            )
        x, _ = self._read(frame, where, first_line, labelled=labelled, check_labels=False)
        self._check_steps(x, "datamodule.predict_path")
        self.predict_data = (self._transform(x),)

    # -- bundles ---------------------------------------------------------------------------
    input_kind = "sequence"

    def input_encoder(self) -> torch.nn.Module | None:
        """The normalisation (``global`` or ``per_sequence``) in the graph."""
        from datamodules._graph import AffineEncoder

        holds = "sequences (N, channels, steps), original units"
        normalize = self.hparams.normalize
        if normalize == "global":
            return AffineEncoder(self.fitted_state["mean"], self.fitted_state["std"], 1, holds)
        if normalize == "per_sequence":
            return AffineEncoder([], [], 1, holds, per_row=True)
        return None

    def input_signature(self) -> dict[str, Any]:
        self._require_fitted()
        s = self.fitted_state
        return {
            "kind": self.input_kind,
            "channels": s["channels"],
            "steps": s["steps"],
            "accepts": "a list of numbers per sequence (channels x steps: a list per channel "
            "when there are several); NaN gaps as null",
            "classes": self.class_names,
        }

    def example_inputs(self, n: int) -> list[Any]:
        raw = self.test_raw[:n]
        return [row[0].tolist() if len(row) == 1 else row.tolist() for row in raw]

    def predict_inputs(self, inputs: Any) -> None:
        """Sequences as lists of numbers (or a list per channel), or one array."""
        self._require_fitted()
        try:
            array = np.asarray(
                [
                    [np.nan if v is None else v for v in np.ravel(np.asarray(r, dtype=object))]
                    for r in inputs
                ],
                dtype=np.float64,
            )
        except (TypeError, ValueError) as exc:
            raise DataError(f"expected lists of numbers, one per sequence: {exc}") from None
        if array.ndim != 2 or not len(array):
            raise DataError("expected a non-empty list of sequences of one length")
        x = self._shape(array, "inputs", None)
        self._check_steps(x, "inputs")
        self.predict_data = (self._transform(x),)

    def predictions_frame(self, outputs: dict[str, Tensor]) -> pd.DataFrame:
        return class_predictions(outputs, self.class_names, self.class_names)


def _at(rows: Any, first_line: int | None, n: int = 5) -> str:
    """``line(s) [...]`` of a file (``first_line`` is the line of row 0), else ``row(s)``."""
    rows = [int(r) for r in list(rows)[:n]]
    if first_line is None:
        return f"row(s) {rows}"
    return f"line(s) {[r + first_line for r in rows]}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _guess_header(file: Path, sep: str) -> tuple[bool, str, str]:
    """Whether the first line of a ``label_first`` file is a header, why (empty when the
    file cannot be read: read_table then says what is wrong with it), and the field
    separator (``;``, tab or ``|`` when line 1 is one field holding it). Line 1 is data
    when every field after the label is a number (blank: missing) and they are not step
    numbers (``0, 1, 2, ...``). A header with other numeric names (``label,0.5,1.0``) is
    caught by :func:`_check_labels` as a word among the labels."""

    def first_line(sep: str) -> list[str]:
        head = pd.read_csv(file, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
        return [str(v).strip() for v in head.iloc[0].tolist()]

    try:
        first = first_line(sep)
        other = next((c for c in ";\t|" if len(first) == 1 and c in first[0]), None)
        if other is not None:
            sep, first = other, first_line(other)
    except (ValueError, OSError, IndexError):
        return True, "", sep
    values = [v for v in first[1:] if v]
    if not values or not all(_is_number(v) for v in values):
        return True, "its fields after the first are not all numbers", sep
    if len(values) >= 3 and all(v.isdigit() for v in values):
        steps = [int(v) for v in values]
        if steps[0] in (0, 1) and steps == list(range(steps[0], steps[0] + len(steps))):
            return True, "its fields are step numbers", sep
    return False, "line 1 holds numbers", sep


def _check_labels(labels: pd.Series, where: str, first_line: int | None, guessed: bool) -> None:
    """Missing labels, and a few words among numeric labels (a typo, or a header read as
    data), are errors naming their lines; labels that are all words are fine. ``guessed``:
    the file was read without a header by ``header=auto``."""
    labels = labels.reset_index(drop=True)
    missing = labels.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{where}: {int(missing.sum())} sequence(s) have no label "
            f"({_at(np.flatnonzero(missing), first_line)}); add their labels or remove the rows"
        )
    if pd.api.types.is_numeric_dtype(labels):
        return
    guessed = guessed and first_line == 1
    odd = pd.to_numeric(labels, errors="coerce").isna().to_numpy()
    n_odd, n = int(odd.sum()), len(labels)
    if not n_odd or n_odd >= n / 2 or (n_odd > 2 and n_odd >= 0.05 * n):
        first = labels.iloc[0]
        if guessed and odd[0] and n >= 4 and int((labels == first).sum()) == 1:  # "label,10,20,30"?
            raise DataError(
                f"{where}: line 1 holds the only {first!r} label; if line 1 names the "
                "columns, set datamodule.header=true, else datamodule.header=false"
            )
        return  # no words, or so many that they are classes
    rows = np.flatnonzero(odd)
    by_value: dict[str, list[int]] = {}
    for r in rows:
        by_value.setdefault(str(labels.iloc[r]), []).append(int(r))
    shown = ", ".join(
        f"{value!r} on {_at(found, first_line, n=3)}" for value, found in list(by_value.items())[:5]
    )
    hint = (
        "; if line 1 names the columns, set datamodule.header=true"
        if guessed and rows[0] == 0
        else ""
    )
    raise DataError(
        f"{where}: the labels are numbers except {shown}{', ...' if len(by_value) > 5 else ''} "
        f"({n_odd} of {n} rows); correct those labels or remove the rows{hint}"
    )


def _key(value: Any) -> Any:
    """Labels as plain Python values (numpy ints and floats like 1.0 become ints)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class CurvesDataModule(SequenceDataModule):
    """The reference anomaly curves, generated: smooth noisy curves, half of them with one
    local anomaly about a dozen steps wide.

    Each curve is ``sum_k a_k sin(2 pi f_k t / steps + phi_k)`` over three waves
    (``a ~ U(0.3, 1)``, ``f ~ U(0.5, 3)`` cycles per curve, ``phi ~ U(0, 2 pi)``) plus
    Gaussian noise (``noise``). A curve labelled 1 gets, at a uniform position, one
    anomaly of width ``U(width - 4, width + 4)`` steps, one of three kinds with equal
    chance: a *burst* (added oscillation with a period of 2.5-4 steps, a random phase and
    an amplitude of 1.2-1.6; a period near 2 steps would alias to almost nothing when
    sampled, giving anomalies no model can see), a *noise* burst (extra noise, sd 1.2)
    or a *bump* (added Gaussian bump of height +-2-3, sd width/5). Calibrated so that the
    three reference models keep the reference ordering: an MLP on raw values far below
    the others (0.68), one on the two roughness features near 0.82 (it cannot see
    bumps), the small Conv1D near 0.99. Labels are balanced (``anomaly_fraction``) and
    everything is drawn from ``generator_seed``, so every run and every process sees the
    same 4,000 curves; the split uses ``seed``.

    Args:
        curves: Number of curves.
        steps: Curve length.
        anomaly_fraction: Share of curves with an anomaly.
        width: Typical anomaly width in steps.
        noise: Standard deviation of the background noise.
        generator_seed: Seed of the generated curves.
        **kwargs: Split, normalisation and loader settings of :class:`SequenceDataModule`.
    """

    KINDS = ("burst", "noise", "bump")

    def __init__(
        self,
        curves: int = 4000,
        steps: int = 200,
        anomaly_fraction: float = 0.5,
        width: int = 12,
        noise: float = 0.3,
        generator_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if curves < 10 or steps < 3 * width or width < 5:
            raise ConfigError(
                f"curves={curves}, steps={steps}, width={width}: need curves >= 10, width >= 5 "
                "and steps >= 3 * width"
            )
        if not 0 < anomaly_fraction < 1:
            raise ConfigError(f"anomaly_fraction must be in (0, 1), got {anomaly_fraction}")
        super().__init__(**kwargs)

    def load_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        hp = self.hparams
        rng = np.random.default_rng(hp.generator_seed)
        n, steps = hp.curves, hp.steps
        t = np.arange(steps) / steps
        amp = rng.uniform(0.3, 1.0, (n, 3, 1))
        freq = rng.uniform(0.5, 3.0, (n, 3, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 3, 1))
        x = (amp * np.sin(2 * np.pi * freq * t + phase)).sum(axis=1)
        x += rng.normal(0.0, hp.noise, (n, steps))
        labels = (rng.permutation(n) < round(hp.anomaly_fraction * n)).astype(np.int64)
        for i in np.flatnonzero(labels):
            w = int(rng.integers(hp.width - 4, hp.width + 5))
            start = int(rng.integers(0, steps - w))
            part = slice(start, start + w)
            kind = self.KINDS[int(rng.integers(len(self.KINDS)))]
            if kind == "burst":  # periods >= 2.5 steps: at 2 a sampled sine can vanish
                period = rng.uniform(2.5, 4)
                shift = rng.uniform(0, 2 * np.pi)
                wave = np.sin(2 * np.pi * np.arange(w) / period + shift)
                x[i, part] += rng.uniform(1.2, 1.6) * wave
            elif kind == "noise":
                x[i, part] += rng.normal(0.0, 1.2, w)
            else:
                height = rng.uniform(2.0, 3.0) * rng.choice([-1, 1])
                x[i, part] += height * np.exp(-0.5 * ((np.arange(w) - w / 2) / (w / 5)) ** 2)
        return {"train": (x[:, None, :], labels)}
