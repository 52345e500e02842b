"""Tables: a CSV/TSV/Parquet file, a pandas DataFrame, or a table bundled with a dependency."""

from __future__ import annotations

import codecs
import warnings
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from datamodules._table_prep import (
    ENCODINGS,
    TRANSFORMS,
    DataWarning,
    TablePreprocessor,
    check_finite,
    check_frame,
    column_roles,
    data_check,
    excluded_message,
    missing_column_error,
    read_table,
    resolve_column_types,
    rows_text,
)
from datamodules.base import BaseDataModule, CVRows, class_predictions
from tasks.errors import ConfigError, DataError, did_you_mean

PROBLEMS = ("classification", "regression")
TARGET_REQUIRED = (
    "datamodule.target is required: name the label column, e.g. datamodule.target=label"
)


def _sklearn(loader: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sklearn import datasets

        bunch = getattr(datasets, loader)(as_frame=True)
        frame = bunch.frame.copy()
        names = getattr(bunch, "target_names", None)
        if names is not None and loader != "load_diabetes":
            frame["target"] = np.asarray(names)[frame["target"].to_numpy()]
        return frame

    return load


def _package_csv(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        with resources.as_file(resources.files("datamodules") / "data" / name) as path:
            return pd.read_csv(path, keep_default_na=True)

    return load


#: Tables that run offline on a fresh install: name -> (loader, default target).
#: scikit-learn bundles the first five; the last two ship in datamodules/data (see its README).
TABLES: dict[str, tuple[Callable[[], pd.DataFrame], str]] = {
    "breast_cancer": (_sklearn("load_breast_cancer"), "target"),
    "iris": (_sklearn("load_iris"), "target"),
    "wine": (_sklearn("load_wine"), "target"),
    "digits": (_sklearn("load_digits"), "target"),
    "diabetes": (_sklearn("load_diabetes"), "target"),
    "spambase": (_package_csv("spambase.csv.gz"), "spam"),
    "davis": (_package_csv("davis_height_weight.csv.gz"), "weight"),
}


def _check_table_name(name: str) -> None:
    if name not in TABLES:
        raise ConfigError(
            f"datamodule.dataset={name!r} is not a bundled table.{did_you_mean(name, TABLES)} "
            f"Available: {', '.join(TABLES)}"
        )


class TabularDataModule(BaseDataModule):
    """Rows of a table with a target column, split by seed (stratified for classification).

    Column types are inferred (numeric, boolean, categorical, date) and can be overridden.
    Column roles are decided on the training split: text columns that read as dates become
    calendar features (year, month, day of week, day of year, and hour where times vary);
    identifier-like columns (text with a distinct value in nearly every row, free text, and
    unique whole numbers that are monotonic in file order or span about the row count, like
    row numbers) are left out with a :class:`DataWarning` that names the column and
    ``keep_columns``. Numeric columns are median-imputed (with a missing indicator where
    the training split had gaps) and standardised with training-split statistics;
    categorical columns are one-hot encoded or integer-coded for embeddings, with an
    unknown bucket for categories first seen at predict time. Classification labels (strings
    too) are encoded and decoded back in predictions; regression targets are always
    standardised with the training mean and standard deviation (``data_facts()`` passes
    them as ``target_center``/``target_scale``, and the task's ``unscale`` inverts them),
    so metrics and predictions are in original units. All of that state is saved with
    the checkpoint.

    Args:
        path: CSV/TSV/Parquet file with features and the target column.
        dataset: Instead of ``path``, a bundled table: ``breast_cancer``, ``iris``,
            ``wine``, ``digits``, ``diabetes`` (scikit-learn), ``spambase``, ``davis``.
        frame: Instead of ``path``, a pandas DataFrame (Python API only; not saved in
            hyperparameters).
        target: Label column (classification) or target column(s) (regression).
        problem: ``classification`` or ``regression``.
        features: Feature columns; default every column but the target(s) and ``drop_columns``.
        drop_columns: Columns to ignore (row ids, leaks).
        keep_columns: Columns to use even though they look like identifiers (see above).
            Columns in ``features`` or ``column_types`` are never left out either.
        column_types: Per-column type overrides, e.g. ``{zip_code: categorical}``; types are
            ``numeric``, ``categorical``, ``boolean`` and ``date``.
        categorical_encoding: ``auto`` (one-hot up to ``max_onehot`` categories, else
            embedding), ``onehot`` or ``embedding``.
        max_onehot: Category count up to which ``auto`` one-hot encodes.
        numeric_transform: ``none``; ``log1p`` for numeric columns that are non-negative in
            the training split (heavy-tailed counts and frequencies), before standardising;
            ``auto`` for those of them with a heavy right tail (skewness above 2 on the
            training split, and less after the log).
        test_path: Optional separate test file (then only train/val are split from ``path``).
        predict_path: File to predict (needs the training feature columns). Predicting
            needs only this and the checkpoint: ``path`` and ``target`` may be left unset.
        sep: Field separator of every CSV file of this datamodule (``tab``, ``';'``, ...);
            default ``,`` (tab for ``.tsv``), and a file whose header splits only at ``;``,
            tab or ``|`` is read with that separator, with a warning.
        encoding: Text encoding of every CSV file of this datamodule, e.g. ``latin-1``.
        **kwargs: Loader and split settings of :class:`~datamodules.base.BaseDataModule`.
    """

    not_hyperparameters = ("frame",)

    def __init__(
        self,
        path: str | None = None,
        dataset: str | None = None,
        frame: pd.DataFrame | None = None,
        target: str | Sequence[str] | None = None,
        problem: str = "classification",
        features: Sequence[str] | None = None,
        drop_columns: Sequence[str] = (),
        keep_columns: Sequence[str] = (),
        column_types: Mapping[str, str] | None = None,
        categorical_encoding: str = "auto",
        max_onehot: int = 16,
        numeric_transform: str = "none",
        test_path: str | None = None,
        predict_path: str | None = None,
        sep: str | None = None,
        encoding: str = "utf-8",
        **kwargs: Any,
    ) -> None:
        sources = [
            name
            for name, v in (("path", path), ("dataset", dataset), ("frame", frame))
            if v is not None
        ]
        own_table = self._overrides("load_frame")
        # predicting reads only predict_path (the preprocessing comes from the checkpoint),
        # so path and target are checked when training or testing needs them, in setup
        predicting = predict_path is not None
        if len(sources) > 1 or not (sources or own_table or predicting):
            raise ConfigError(
                "TabularDataModule needs exactly one data source: datamodule.path=FILE or "
                f"datamodule.dataset=NAME (or frame= from Python) to train or test, or "
                f"datamodule.predict_path=FILE to predict; got {sources or 'none'}"
            )
        if dataset is not None:
            _check_table_name(dataset)
        if own_table and sources:
            raise ConfigError(f"{type(self).__name__} makes its own table; do not set {sources[0]}")
        if dataset is None and not target and not predicting:
            raise ConfigError(TARGET_REQUIRED)
        if problem not in PROBLEMS:
            raise ConfigError(f"datamodule.problem={problem!r}; expected one of {PROBLEMS}")
        if categorical_encoding not in ENCODINGS:
            raise ConfigError(
                f"datamodule.categorical_encoding={categorical_encoding!r}; expected one of "
                f"{ENCODINGS}"
            )
        if numeric_transform not in TRANSFORMS:
            raise ConfigError(
                f"datamodule.numeric_transform={numeric_transform!r}; expected one of {TRANSFORMS}"
            )
        if sep is not None and (not isinstance(sep, str) or not sep):
            raise ConfigError(f"datamodule.sep={sep!r}; expected a separator such as ';' or tab")
        try:
            codecs.lookup(encoding)
        except (LookupError, TypeError) as exc:
            raise ConfigError(
                f"datamodule.encoding={encoding!r} is not an encoding Python knows; "
                "e.g. utf-8, latin-1, cp1252"
            ) from exc
        targets = [target] if isinstance(target, str) else list(target or [])
        if problem == "classification" and len(targets) > 1:
            raise ConfigError(
                f"classification takes one target column, got {targets}; "
                "several targets are supported for datamodule.problem=regression"
            )
        super().__init__(**kwargs)
        self._frame = frame
        self.prep = TablePreprocessor()
        self._labels: dict[str, Any] = {}
        self.data_warnings: list[str] = []

    # -- preprocessing state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return dict(self._state) if self.prep.fitted else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict or {})
        self.prep = TablePreprocessor(state.pop("prep", None))
        self._labels = state

    @property
    def _state(self) -> dict[str, Any]:
        return {"prep": self.prep.state, **self._labels}

    def _require_fitted(self) -> None:
        if not self.prep.fitted:
            raise DataError(
                f"{type(self).__name__} has no fitted preprocessing: call setup('fit') or "
                "restore it from a checkpoint (ckpt_path=...) first"
            )

    @property
    def classification(self) -> bool:
        return self.hparams.problem == "classification"

    @property
    def targets(self) -> list[str]:
        return list(self._labels["targets"])

    @property
    def class_names(self) -> list[str]:
        self._require_fitted()
        return [str(c) for c in self._labels["classes"]]

    def data_facts(self) -> dict[str, Any]:
        self._require_fitted()
        facts: dict[str, Any] = {
            "num_features": len(self.prep.feature_names),
            "categorical_cardinalities": self.prep.cardinalities,
        }
        if self.classification:
            facts["num_classes"] = len(self._labels["classes"])
            facts["class_counts"] = list(self._labels["class_counts"])
        else:
            facts["num_targets"] = len(self._labels["targets"])
            facts["target_center"] = list(self._labels["target_center"])
            facts["target_scale"] = list(self._labels["target_scale"])
        return facts

    # -- reading -----------------------------------------------------------------------------
    def load_frame(self) -> pd.DataFrame:
        """The labelled table, for subclasses that make or fetch their own.

        Override it (and leave ``path``/``dataset`` unset) to feed generated or
        downloaded rows through the same checks, preprocessing and splits. Called
        once per ``setup``; it must return the same rows every time (seed it).

        Returns:
            A ``pandas.DataFrame`` with the feature columns and the ``target`` column(s).

        Called by:
            ``setup`` for every stage but ``predict`` (fit, validate, test), once while the
            splits are not built yet, and only when a subclass overrides it; never for
            ``mode=predict``, which reads ``predict_path``.
        """
        raise NotImplementedError

    def _read(self, path: str, option: str) -> pd.DataFrame:
        hp = self.hparams
        return read_table(
            path,
            option,
            sep=hp.sep,
            encoding=hp.encoding,
            sep_option="datamodule.sep",
            encoding_option="datamodule.encoding",
        )

    def _labelled_frame(self) -> tuple[pd.DataFrame, list[str], str]:
        hp = self.hparams
        # not checked in __init__ when predict_path is set: predicting needs neither
        sources = (hp.path, hp.dataset, self._frame)
        if all(v is None for v in sources) and not self._overrides("load_frame"):
            raise ConfigError(
                "training and testing need the labelled table: datamodule.path=FILE and "
                "datamodule.target=COLUMN (predicting needs only datamodule.predict_path)"
            )
        if not (hp.target or hp.dataset):
            raise ConfigError(TARGET_REQUIRED)
        if self._overrides("load_frame"):
            where = f"{type(self).__name__}.load_frame()"
            frame, target = self.load_frame(), hp.target
            check_frame(frame, where)
        elif hp.dataset is not None:
            loader, default_target = TABLES[hp.dataset]
            target = hp.target or default_target
            frame, where = loader(), f"datamodule.dataset={hp.dataset}"
        elif self._frame is not None:
            frame, target, where = self._frame, hp.target, "datamodule frame"
            check_frame(frame, where)
        else:
            where = "datamodule.path"
            frame, target = self._read(hp.path, where), hp.target
        targets = [target] if isinstance(target, str) else list(target)
        return frame, targets, where

    def _feature_columns(self, frame: pd.DataFrame, targets: list[str], where: str) -> list[str]:
        hp = self.hparams
        drop = [str(c) for c in hp.drop_columns]
        missing = [c for c in drop if c not in frame.columns]
        if missing:
            raise missing_column_error("datamodule.drop_columns", missing, list(frame.columns))
        keep = [str(c) for c in hp.keep_columns]
        missing = [c for c in keep if c not in frame.columns]
        if missing:
            raise missing_column_error("datamodule.keep_columns", missing, list(frame.columns))
        clash = [c for c in keep if c in drop or c in targets]
        if clash:
            raise ConfigError(
                f"datamodule.keep_columns lists {clash}, which "
                f"{'are' if len(clash) > 1 else 'is'} also a target or in drop_columns; "
                "name each column in one of them"
            )
        if hp.features is not None:
            features = [str(c) for c in hp.features]
            missing = [c for c in features if c not in frame.columns]
            if missing:
                raise missing_column_error(
                    f"{where} (datamodule.features)", missing, list(frame.columns)
                )
            clash = [c for c in features if c in targets]
            if clash:
                raise ConfigError(f"datamodule.features contains the target column(s) {clash}")
        else:
            features = [str(c) for c in frame.columns if c not in targets and c not in drop]
        if not features:
            raise DataError(f"{where}: no feature columns besides the target {targets}")
        return features

    def _check_targets(self, frame: pd.DataFrame, targets: list[str], where: str) -> None:
        missing = [t for t in targets if t not in frame.columns]
        if missing:
            raise missing_column_error(f"{where} (datamodule.target)", missing, list(frame.columns))
        for target in targets:
            empty = frame[target].isna().to_numpy()
            if empty.any():
                raise DataError(
                    f"{where}: target column {target!r} is empty in {int(empty.sum())} rows "
                    f"({rows_text(frame, empty)}); drop or fill them"
                )
            if not self.classification and not pd.api.types.is_numeric_dtype(frame[target]):
                bad = pd.to_numeric(frame[target], errors="coerce").isna().to_numpy()
                shown = frame[target][bad].head(3).tolist()
                raise DataError(
                    f"{where}: regression target {target!r} must be numeric; found "
                    f"{shown} in {int(bad.sum())} rows. Use datamodule.problem=classification "
                    "for labels"
                )

    @staticmethod
    def _check_classes(frame: pd.DataFrame, target: str, where: str) -> None:
        """The labelled table's target is a set of classes (a test file may hold just one)."""
        labels = frame[target]
        if pd.api.types.is_float_dtype(labels):
            values = labels.to_numpy(dtype=np.float64)
            distinct = len(np.unique(values))
            # many distinct fractional values: a measurement, not a set of classes
            if distinct > max(20, len(values) // 10) and (values != np.round(values)).any():
                shown = ", ".join(f"{v:g}" for v in values[:3])
                raise DataError(
                    f"{where}: target {target!r} looks continuous ({distinct} distinct values "
                    f"in {len(values)} rows, e.g. {shown}), not a set of classes; for a numeric "
                    "target use the regression preset +task=tabular_regression "
                    "(datamodule.problem=regression from Python)"
                )
        classes = labels.unique()
        if len(classes) < 2:
            raise DataError(
                f"{where}: target {target!r} has a single class {classes[0]!r}; "
                "classification needs at least two (is this the right column or file?)"
            )

    def _too_few_rows(self, frame: pd.DataFrame, target: str, where: str) -> DataError:
        hp = self.hparams
        counts = frame[target].value_counts() if self.classification else pd.Series([])
        rare = counts[counts < 3]
        if len(rare):  # the split puts a row in each split only of classes with 3 or more
            quantity = pd.api.types.is_numeric_dtype(frame[target]) and len(counts) > 20
            return DataError(
                f"{where}: no rows left for validation: {len(rare)} of {len(counts)} classes "
                f"have fewer than 3 rows (the smallest has {int(counts.min())}), too few to "
                "put one in each of train/validation/test; add rows, predict fewer classes, "
                "or merge rare classes into one (e.g. 'other')"
                + (
                    f"; if {target!r} is a quantity, use +task=tabular_regression"
                    if quantity
                    else ""
                )
            )
        return DataError(
            f"{where}: {len(frame)} rows are too few to split into train and validation "
            f"sets (val_fraction={hp.val_fraction})"
        )

    def _fit_labels(self, train: pd.DataFrame, frame: pd.DataFrame, targets: list[str]) -> None:
        labels: dict[str, Any] = {"targets": targets}
        if self.classification:
            # the label set comes from all labelled rows (not a statistic of the features),
            # so that a rare class falling outside the training split is still known
            classes = sorted(pd.unique(frame[targets[0]]).tolist(), key=lambda v: (str(type(v)), v))
            counts = train[targets[0]].value_counts()
            labels["classes"] = classes
            labels["class_counts"] = [int(counts.get(c, 0)) for c in classes]
        else:
            values = train[targets].to_numpy(dtype=np.float64)
            scale = values.std(axis=0)
            labels["target_center"] = values.mean(axis=0).tolist()
            labels["target_scale"] = np.where(scale > 0, scale, 1.0).tolist()
        self._labels = labels

    def _target_tensor(self, frame: pd.DataFrame, where: str) -> Tensor:
        targets = self._labels["targets"]
        if not self.classification:
            values = frame[targets].to_numpy(dtype=np.float64)
            center = np.asarray(self._labels["target_center"])
            scale = np.asarray(self._labels["target_scale"])
            scaled = torch.from_numpy(np.ascontiguousarray((values - center) / scale, np.float32))
            return scaled.squeeze(1) if len(targets) == 1 else scaled
        classes = self._labels["classes"]
        index = {c: i for i, c in enumerate(classes)}
        labels = frame[targets[0]]
        unknown = sorted({str(v) for v in labels if v not in index})
        if unknown:
            raise DataError(
                f"{where}: labels {unknown[:10]} were not seen in the training data "
                f"(known: {[str(c) for c in classes]})"
            )
        return torch.tensor([index[v] for v in labels], dtype=torch.long)

    # -- cross-validation ------------------------------------------------------------------
    def cv_rows(self, groups: str | None = None) -> CVRows:
        """The labelled table's rows (``test_path`` takes no part); ``groups`` is a column
        of the table (it may be a feature or a dropped column)."""
        frame, targets, where = self._labelled_frame()
        self._check_targets(frame, targets, where)
        keys = None
        if groups is not None:
            if groups not in frame.columns:
                raise missing_column_error(f"{where} (cv.groups)", [groups], list(frame.columns))
            keys = frame[groups].to_numpy()
            if pd.isna(frame[groups]).any():
                raise DataError(
                    f"{where}: cv.groups column {groups!r} is empty in "
                    f"{int(pd.isna(frame[groups]).sum())} rows; fill them or drop those rows"
                )
        labels = frame[targets[0]].to_numpy() if self.classification else None
        return CVRows(len(frame), labels, keys, False)

    # -- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage == "predict":
            self._setup_predict()
            return
        if self.train_data is not None:
            return
        frame, targets, where = self._labelled_frame()
        self._check_targets(frame, targets, where)
        if self.classification:
            self._check_classes(frame, targets[0], where)
        features = self._feature_columns(frame, targets, where)
        # the whole table, so that every infinite value is named, not those of one split
        check_finite(frame, [*features, *([] if self.classification else targets)], where)
        test_frac = 0.0 if hp.test_path is not None else hp.test_fraction
        stratify = frame[targets[0]].to_numpy() if self.classification else None
        train_idx, val_idx, test_idx = self.split_rows(
            len(frame), hp.val_fraction, test_frac, hp.seed, stratify=stratify
        )
        if len(train_idx) == 0 or len(val_idx) == 0:
            raise self._too_few_rows(frame, targets[0], where)
        train = frame.iloc[train_idx]
        if not self.prep.fitted:
            types = resolve_column_types(frame, features, hp.column_types, where)
            keep = {str(c) for c in hp.keep_columns}
            listed = set(features) if hp.features is not None else set()
            types, excluded = column_roles(
                train, features, types, set(hp.column_types or {}), keep | listed, len(frame)
            )
            used = [c for c in features if c not in excluded]
            if not used:
                raise DataError(
                    f"{where}: every feature column looks like an identifier ({list(excluded)}); "
                    "keep the ones to learn from with datamodule.keep_columns=[...]"
                )
            self.data_warnings = [excluded_message(c, reason) for c, reason in excluded.items()]
            self.data_warnings += data_check(frame, used, targets, self.classification, keep)
            for message in self.data_warnings:
                warnings.warn(f"{where}: {message}", DataWarning, stacklevel=2)
            self.prep.fit(
                train,
                used,
                types,
                hp.categorical_encoding,
                hp.max_onehot,
                hp.numeric_transform,
                where=where,
                excluded=excluded,
            )
            self._fit_labels(train, frame, targets)
        parts = {"train": train, "val": frame.iloc[val_idx]}
        if self.fold is not None:  # cross-validation: the fold's rows, never test_path
            if len(test_idx):
                parts["test"] = frame.iloc[test_idx]
        elif hp.test_path is not None:
            test_frame = self._read(hp.test_path, "datamodule.test_path")
            self._check_targets(test_frame, targets, "datamodule.test_path")
            parts["test"] = test_frame
        elif len(test_idx):
            parts["test"] = frame.iloc[test_idx]
        for name, part in parts.items():
            option = "datamodule.test_path" if name == "test" and hp.test_path else where
            x_num, x_cat = self.prep.transform(part, option)
            setattr(self, f"{name}_data", (x_num, x_cat, self._target_tensor(part, option)))
        #: the input columns of the test rows (validation rows without a test split), as read
        self.test_rows = parts.get("test", parts["val"])[self.prep.features]

    # -- bundles ---------------------------------------------------------------------------
    input_kind = "record"

    def input_encoder(self) -> torch.nn.Module:
        """Imputation, missing indicators, ``log1p``, standardisation and one-hot encoding
        in the graph; category names stay outside (the graph takes their codes)."""
        from datamodules._graph import TableEncoder

        return TableEncoder(self.prep.state)

    def input_signature(self) -> dict[str, Any]:
        self._require_fitted()
        state = self.prep.state
        dates = state.get("dates", {})
        columns = {c: "number" for c in self.prep.features}
        columns.update({c: "date" for c in dates})
        columns.update({c: "category" for c in state["categories"]})
        signature: dict[str, Any] = {
            "kind": self.input_kind,
            "columns": columns,
            "categories": {c: list(v)[:100] for c, v in state["categories"].items()},
            "accepts": "records (one JSON object per row: column -> value); a missing value "
            "is imputed, an unseen category goes to the unknown bucket with a warning",
            "ignored_columns": sorted(self.prep.excluded),
        }
        signature["targets"] = list(self.targets)
        if self.classification:
            signature["classes"] = list(self.class_names)
        return signature

    def example_inputs(self, n: int) -> list[Any]:
        """Test rows as records (column -> value; missing values as None)."""
        rows = getattr(self, "test_rows", None)
        if rows is None:
            raise DataError(f"{type(self).__name__}: call setup('fit') before example_inputs()")
        head = rows.head(n).astype(object)
        return head.where(head.notna(), None).to_dict(orient="records")

    def _setup_predict(self) -> None:
        hp = self.hparams
        if hp.predict_path is None:
            raise ConfigError("predicting needs datamodule.predict_path=FILE")
        self._require_fitted()
        frame = self._read(hp.predict_path, "datamodule.predict_path")
        # columns left out as identifiers were named at training time: no second warning
        known = set(self.prep.features) | set(self._labels["targets"]) | set(self.prep.excluded)
        extra = [str(c) for c in frame.columns if c not in known]
        if extra:
            warnings.warn(
                f"datamodule.predict_path: ignoring columns not used in training: {extra}",
                DataWarning,
                stacklevel=2,
            )
        for col, values in self.prep.unseen_categories(frame).items():
            listed = ", ".join(repr(v) for v in values[:5]) + (" ..." if len(values) > 5 else "")
            warnings.warn(
                f"datamodule.predict_path: column {col!r} has {len(values)} categorie(s) never "
                f"seen in training ({listed}): predicted as the unknown category",
                DataWarning,
                stacklevel=2,
            )
        self.predict_data = self.prep.transform(frame, "datamodule.predict_path")

    def predictions_frame(self, outputs: dict[str, Tensor]) -> pd.DataFrame:
        if not self.classification:
            # one column per output key and target: pred_<target>, or e.g. q0.9_<target>
            columns = {}
            for key, value in outputs.items():
                array = value.cpu().numpy().reshape(len(value), len(self.targets))
                columns.update({f"{key}_{t}": array[:, j] for j, t in enumerate(self.targets)})
            return pd.DataFrame(columns)
        return class_predictions(outputs, self._labels["classes"], self.class_names)
