"""Tables: a CSV/TSV/Parquet file, or a table bundled with scikit-learn."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from datamodules.base import BaseDataModule, split_indices
from tasks.errors import ConfigError, DataError

#: Tables that ship with scikit-learn, so their presets run offline on a fresh install.
SKLEARN_DATASETS = {
    "breast_cancer": "load_breast_cancer",
    "iris": "load_iris",
    "wine": "load_wine",
    "digits": "load_digits",
}


def read_table(path: str | Path, option: str = "datamodule.path") -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file (optionally compressed) with clear errors."""
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
                    f"{option}: reading Parquet needs pyarrow: pip install pyarrow ({exc})"
                ) from exc
        else:
            sep = "\t" if ".tsv" in suffixes or ".tab" in suffixes else ","
            frame = pd.read_csv(file, sep=sep)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{option}: {str(file)!r} is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{option}: {str(file)!r} is not a readable table: {exc}") from exc
    if frame.empty:
        raise DataError(f"{option}: {str(file)!r} has a header but no rows")
    return frame


def load_sklearn_table(name: str) -> tuple[pd.DataFrame, str]:
    """A scikit-learn bundled dataset as a frame with a ``target`` column of class names."""
    if name not in SKLEARN_DATASETS:
        close = difflib.get_close_matches(name, list(SKLEARN_DATASETS), n=2)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"datamodule.dataset={name!r} is not a bundled table.{hint} "
            f"Available: {', '.join(SKLEARN_DATASETS)}"
        )
    from sklearn import datasets

    bunch = getattr(datasets, SKLEARN_DATASETS[name])(as_frame=True)
    frame = bunch.frame.copy()
    names = getattr(bunch, "target_names", None)
    if names is not None:
        frame["target"] = np.asarray(names)[frame["target"].to_numpy()]
    return frame, "target"


def _missing_column_error(option: str, missing: Sequence[str], columns: Sequence[str]) -> DataError:
    hints = []
    for col in missing:
        close = difflib.get_close_matches(col, list(columns), n=1)
        hints.append(f"{col!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return DataError(
        f"{option}: column {', '.join(hints)} not found. "
        f"Available columns: {', '.join(map(str, columns))}"
    )


class TabularDataModule(BaseDataModule):
    """Rows of a table, split by seed (stratified by class) unless a test file is given.

    Numeric and boolean feature columns are imputed with the training median and
    standardised with training-split statistics; the label set is encoded once and
    decoded again in predictions. All of that state is saved with the checkpoint.

    Args:
        path: CSV/TSV/Parquet file with features and the target column.
        dataset: Instead of ``path``, a table bundled with scikit-learn
            (``breast_cancer``, ``iris``, ``wine``, ``digits``).
        target: Name of the label column.
        features: Feature columns; default every column but the target.
        test_path: Optional separate test file (then only train/val are split from ``path``).
        predict_path: File to predict (needs the feature columns; the target is ignored).
        **kwargs: Loader and split settings of :class:`~datamodules.base.BaseDataModule`.
    """

    def __init__(
        self,
        path: str | None = None,
        dataset: str | None = None,
        target: str | None = None,
        features: Sequence[str] | None = None,
        test_path: str | None = None,
        predict_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        if (path is None) == (dataset is None):
            raise ConfigError(
                "TabularDataModule needs exactly one data source: datamodule.path=FILE "
                f"or datamodule.dataset=NAME (got path={path!r}, dataset={dataset!r})"
            )
        if dataset is not None and dataset not in SKLEARN_DATASETS:
            load_sklearn_table(dataset)  # raises the helpful error
        if path is not None and target is None:
            raise ConfigError(
                "datamodule.target is required with datamodule.path: "
                "name the label column, e.g. datamodule.target=label"
            )
        super().__init__(**kwargs)
        self._state: dict[str, Any] | None = None

    # -- preprocessing state -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return dict(self._state) if self._state is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._state = dict(state_dict) if state_dict else None

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self._require_state()["classes"]]

    def data_facts(self) -> dict[str, Any]:
        state = self._require_state()
        return {"num_features": len(state["features"]), "num_classes": len(state["classes"])}

    def _require_state(self) -> dict[str, Any]:
        if self._state is None:
            raise DataError(
                f"{type(self).__name__} has no fitted preprocessing: call "
                "setup('fit') or restore it from a checkpoint first"
            )
        return self._state

    # -- reading -------------------------------------------------------------------------
    def _labelled_frame(self) -> tuple[pd.DataFrame, str]:
        hp = self.hparams
        if hp.dataset is not None:
            frame, default_target = load_sklearn_table(hp.dataset)
            return frame, hp.target or default_target
        return read_table(hp.path), hp.target

    def _feature_columns(self, frame: pd.DataFrame, target: str, option: str) -> list[str]:
        if self.hparams.features is not None:
            features = [str(c) for c in self.hparams.features]
            missing = [c for c in features if c not in frame.columns]
            if missing:
                raise _missing_column_error(option, missing, list(frame.columns))
            if target in features:
                raise ConfigError(f"datamodule.features contains the target column {target!r}")
        else:
            features = [str(c) for c in frame.columns if c != target]
        if not features:
            raise DataError(f"{option}: no feature columns besides the target {target!r}")
        bad = [
            f"{c!r} ({frame[c].dtype})"
            for c in features
            if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
        ]
        if bad:
            raise DataError(
                f"{option}: feature columns must be numeric or boolean; {', '.join(bad)} "
                "are not. Encode them as numbers, or choose the numeric columns with "
                "datamodule.features=[...]"
            )
        return features

    def _check_target(self, frame: pd.DataFrame, target: str, option: str) -> None:
        if target not in frame.columns:
            raise _missing_column_error(
                f"{option} (datamodule.target)", [target], list(frame.columns)
            )
        missing = frame[target].isna().to_numpy()
        if missing.any():
            rows = np.flatnonzero(missing)[:5].tolist()
            raise DataError(
                f"{option}: target column {target!r} is empty in {int(missing.sum())} "
                f"rows (first rows: {rows}); drop or fill them"
            )

    def _fit_state(
        self, train: pd.DataFrame, labels: pd.Series, features: list[str], target: str
    ) -> dict[str, Any]:
        values = train[features].astype("float64")
        fill = values.median().fillna(0.0)
        filled = values.fillna(fill)
        center = filled.mean()
        scale = filled.std(ddof=0).replace(0.0, 1.0).fillna(1.0)
        classes = sorted(pd.unique(labels).tolist(), key=lambda v: (str(type(v)), v))
        return {
            "target": target,
            "features": features,
            "fill": fill.tolist(),
            "center": center.tolist(),
            "scale": scale.tolist(),
            "classes": classes,
        }

    def _features_tensor(self, frame: pd.DataFrame, option: str) -> Tensor:
        state = self._require_state()
        missing = [c for c in state["features"] if c not in frame.columns]
        if missing:
            raise _missing_column_error(option, missing, list(frame.columns))
        try:
            values = frame[state["features"]].astype("float64").to_numpy()
        except (TypeError, ValueError) as exc:
            raise DataError(f"{option}: feature columns must be numeric: {exc}") from exc
        values = np.where(np.isnan(values), np.asarray(state["fill"]), values)
        values = (values - np.asarray(state["center"])) / np.asarray(state["scale"])
        return torch.from_numpy(values.astype(np.float32))

    def _labels_tensor(self, labels: pd.Series, option: str) -> Tensor:
        classes = self._require_state()["classes"]
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({str(v) for v in labels if v not in index})
        if unknown:
            raise DataError(
                f"{option}: labels {unknown[:10]} were not seen in the training "
                f"data (known: {[str(c) for c in classes]})"
            )
        return torch.tensor([index[v] for v in labels], dtype=torch.long)

    # -- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage == "predict":
            if hp.predict_path is None:
                raise ConfigError("predicting needs datamodule.predict_path=FILE")
            frame = read_table(hp.predict_path, "datamodule.predict_path")
            self.predict_data = (self._features_tensor(frame, "datamodule.predict_path"),)
            return
        if self.train_data is not None:
            return
        option = "datamodule.dataset" if hp.dataset is not None else "datamodule.path"
        frame, target = self._labelled_frame()
        self._check_target(frame, target, option)
        features = self._feature_columns(frame, target, option)
        test_frac = 0.0 if hp.test_path is not None else hp.test_fraction
        train_idx, val_idx, test_idx = split_indices(
            len(frame), hp.val_fraction, test_frac, hp.seed, stratify=frame[target].to_numpy()
        )
        if len(train_idx) == 0 or len(val_idx) == 0:
            raise DataError(
                f"{option}: {len(frame)} rows are too few to split into train and "
                f"validation sets (val_fraction={hp.val_fraction})"
            )
        train = frame.iloc[train_idx]
        if self._state is None:
            self._state = self._fit_state(train, frame[target], features, target)
        parts = {"train": train, "val": frame.iloc[val_idx]}
        if hp.test_path is not None:
            test_frame = read_table(hp.test_path, "datamodule.test_path")
            self._check_target(test_frame, target, "datamodule.test_path")
            parts["test"] = test_frame
        elif len(test_idx):
            parts["test"] = frame.iloc[test_idx]
        for name, part in parts.items():
            tensors = (
                self._features_tensor(part, option),
                self._labels_tensor(part[target], option),
            )
            setattr(self, f"{name}_data", tensors)

    def predictions_frame(self, outputs: dict[str, Tensor]) -> pd.DataFrame:
        names = self.class_names
        pred = outputs["pred"].cpu().numpy()
        frame = pd.DataFrame(
            {"pred": np.asarray(self._require_state()["classes"], dtype=object)[pred]}
        )
        prob = outputs["prob"].cpu().numpy()
        for j, name in enumerate(names):
            frame[f"prob_{name}"] = prob[:, j]
        return frame
