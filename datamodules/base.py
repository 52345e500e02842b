"""The thin base every datamodule builds on (and, from tasks.batches, the in-memory loader)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor

# TensorLoader lives in the leaf module that tasks share; this stays its documented import path
from tasks.batches import TensorLoader
from tasks.errors import ConfigError, DataError


def class_predictions(
    outputs: dict[str, Tensor], values: Sequence[Any], names: Sequence[str]
) -> pd.DataFrame:
    """``pred`` (the predicted class as ``values[i]``) and one ``prob_<name>`` column per class."""
    labels = np.asarray(values, dtype=object)
    frame = pd.DataFrame({"pred": labels[outputs["pred"].cpu().numpy()]})
    if "prob" in outputs:
        prob = outputs["prob"].detach().float().cpu().numpy()
        for j, name in enumerate(names):
            frame[f"prob_{name}"] = prob[:, j]
    return frame


def records_frame(inputs: Sequence[Any]) -> pd.DataFrame:
    """A table from a list of records (dicts with the same keys), refusing anything else
    in one line."""
    if isinstance(inputs, dict):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise DataError("expected a non-empty list of records (JSON objects)")
    bad = next((i for i, row in enumerate(inputs) if not isinstance(row, dict)), None)
    if bad is not None:
        raise DataError(
            f"input {bad} is a {type(inputs[bad]).__name__}, expected a record (a JSON object "
            "of column: value)"
        )
    return pd.DataFrame.from_records(list(inputs))


def id_dtype(size: int) -> np.dtype:
    """The smallest integer type that holds ids ``0 .. size - 1`` (a vocabulary's): 1 byte
    up to 256 ids, 2 up to 32,768, else 4. Ids are stored in it and widened to int64 a
    batch at a time."""
    return np.dtype(np.uint8 if size <= 256 else np.int16 if size <= 2**15 else np.int32)


def split_indices(
    n: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: Sequence[Any] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test row indices; per class when ``stratify`` labels are given.

    Every split keeps at least one row of a class that has enough rows for it.
    Returned indices are sorted, so each split keeps the input order.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"datamodule.{name} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"datamodule.val_fraction + test_fraction must be < 1, got "
            f"{val_fraction} + {test_fraction}"
        )
    rng = np.random.default_rng(seed)
    if stratify is None:
        groups = [np.arange(n)]
    else:
        codes = pd.factorize(np.asarray(stratify))[0]
        groups = [np.flatnonzero(codes == k) for k in range(int(codes.max()) + 1)]
    train, val, test = [], [], []
    for group in groups:
        group = rng.permutation(group)
        n_test = int(round(test_fraction * len(group)))
        n_val = int(round(val_fraction * len(group)))
        if stratify is not None and len(group) >= 3:
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
            n_val = max(n_val, 1 if val_fraction > 0 else 0)
        test.append(group[:n_test])
        val.append(group[n_test : n_test + n_val])
        train.append(group[n_test + n_val :])
    return tuple(np.sort(np.concatenate(parts)) for parts in (train, val, test))  # type: ignore[return-value]


class CVRows(NamedTuple):
    """What cross-validation (``mode=cv``) needs to know about a datamodule's rows.

    Attributes:
        n_rows: How many rows the folds split (row ``i`` is the ``i``-th labelled row).
        labels: One class label per row for stratified folds, or None (regression).
        groups: One group key per row (from ``cv.groups``), or None.
        ordered: Whether the rows are in time order: folds then chain forward (an
            expanding window, never shuffled across time).
    """

    n_rows: int
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
    ordered: bool = False


def fold_split(
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    val_fraction: float,
    seed: int,
    stratify: Sequence[Any] | np.ndarray | None = None,
    ordered: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cross-validation fold as train/val/test row indices: the fold's test rows are the
    test split, and ``val_fraction`` of its training rows (per class when ``stratify``
    labels of every row are given; the last ones when ``ordered``) validate.
    """
    train_rows = np.sort(np.asarray(train_rows, dtype=np.int64))
    test_rows = np.sort(np.asarray(test_rows, dtype=np.int64))
    if ordered:
        n_val = max(1, int(round(val_fraction * len(train_rows)))) if val_fraction > 0 else 0
        cut = len(train_rows) - n_val
        return train_rows[:cut], train_rows[cut:], test_rows
    labels = None if stratify is None else np.asarray(stratify)[train_rows]
    inner_train, inner_val, _ = split_indices(
        len(train_rows), val_fraction, 0.0, seed, stratify=labels
    )
    return train_rows[inner_train], train_rows[inner_val], test_rows


class BaseDataModule(L.LightningDataModule):
    """Shared settings and loaders; subclasses load data and fit preprocessing.

    A subclass fills ``self.train_data``, ``self.val_data``, ``self.test_data`` and
    ``self.predict_data`` (tuples of tensors) in ``setup``, fits its preprocessing
    on the training split only, and returns that state from :meth:`state_dict` so
    Lightning stores it in every checkpoint.

    Args:
        data_dir: Where downloaded or cached files live.
        batch_size: Rows per training batch.
        eval_batch_size: Rows per validation/test/predict batch (default: ``batch_size``).
        num_workers: DataLoader workers, for datamodules that decode files; in-memory
            tensor data ignores it (workers only slow tensor slicing down).
        val_fraction: Share of rows held out for validation when no split is given.
        test_fraction: Share of rows held out for testing when no test file is given.
        seed: Seed of the splits and of the per-epoch shuffling.
        train_rows_per_epoch: Training rows per epoch, a fresh random subset each epoch
            (validation, checkpoints and early stopping then come every that many rows:
            for data too large to pass over between validations); None: every row.
    """

    #: Constructor arguments that are data, not settings (e.g. a DataFrame): never saved.
    not_hyperparameters: tuple[str, ...] = ()

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 42,
        train_rows_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if train_rows_per_epoch is not None and train_rows_per_epoch < 1:
            raise ConfigError(
                f"datamodule.train_rows_per_epoch must be >= 1, got {train_rows_per_epoch}"
            )
        if batch_size < 1:
            raise ConfigError(f"datamodule.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"datamodule.num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters(ignore=list(self.not_hyperparameters))
        self.train_data: tuple[Tensor, ...] | None = None
        self.val_data: tuple[Tensor, ...] | None = None
        self.test_data: tuple[Tensor, ...] | None = None
        self.predict_data: tuple[Tensor, ...] | None = None
        #: What was learnt from the training split (statistics, class names): plain data,
        #: saved in every checkpoint through :meth:`state_dict`.
        self.fitted_state: dict[str, Any] = {}
        #: Batches per training/validation group (set by :func:`tasks.fused.configure`).
        self.steps_per_execution = 1
        #: The cross-validation fold to set up, ``(train_rows, test_rows)`` (see
        #: :meth:`use_fold`), or None for the usual split.
        self.fold: tuple[np.ndarray, np.ndarray] | None = None

    def _overrides(self, hook: str) -> bool:
        """Whether this class replaces ``hook`` (a "bring your own data" method such as
        ``load_frame``) of the datamodule class that first defines it."""
        definer = next(c for c in reversed(type(self).__mro__) if hook in vars(c))
        return getattr(type(self), hook) is not vars(definer)[hook]

    # -- fitted state and setup ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The preprocessing state to store in checkpoints: a copy of ``fitted_state``.

        Called by:
            Lightning, whenever it saves a checkpoint (stored under the datamodule's class
            name); the conformance kit compares it with the checkpoint's copy.

        """
        return dict(self.fitted_state)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``fitted_state`` from a checkpoint; :meth:`setup_fit` must then keep it.

        Args:
            state_dict: What :meth:`state_dict` returned when the checkpoint was saved.

        Called by:
            The runner before ``setup`` in ``mode=test``, ``mode=predict`` and when
            resuming (``ckpt_path=``), Lightning when it restores a checkpoint, and the
            conformance kit on a rebuilt datamodule.

        """
        self.fitted_state = dict(state_dict or {})

    def setup(self, stage: str | None = None) -> None:
        """``setup_predict`` for predicting, else ``setup_fit`` once (train/val/test data).

        Args:
            stage: Lightning's stage: ``fit``, ``validate``, ``test`` or ``predict``.

        Called by:
            Lightning at the start of ``fit``, ``validate``, ``test`` and ``predict``, and
            the runner (``setup("fit")`` before :meth:`data_facts` in ``mode=train``).
            Override :meth:`setup_fit` and :meth:`setup_predict` rather than this.

        """
        if stage == "predict":
            self.setup_predict()
        elif self.train_data is None:
            self.setup_fit()

    def setup_fit(self) -> None:
        """Load the data, fit ``fitted_state`` on the training split unless it was restored,
        and fill ``train_data``, ``val_data`` and (when there is one) ``test_data``.

        Each is a tuple of tensors in the ``(*inputs, target)`` layout with one first
        dimension; the base class's loaders slice batches from them.

        Called by:
            :meth:`setup` for every stage but ``predict``, once (while ``train_data`` is
            None): the runner in ``mode=train`` before :meth:`data_facts`, and Lightning's
            ``fit``, ``validate`` and ``test``. In ``mode=test`` and when resuming,
            :meth:`load_state_dict` has restored ``fitted_state`` from the checkpoint
            before: keep it, never refit it.

        """
        raise NotImplementedError

    def setup_predict(self) -> None:
        """Fill ``predict_data`` from ``predict_path`` with the fitted state.

        ``predict_data`` is a tuple of the input tensors only (no target), transformed
        exactly as in :meth:`setup_fit`. The default raises ``ConfigError`` (this
        datamodule does not predict new data).

        Called by:
            :meth:`setup` with stage ``predict`` (``mode=predict``), after
            :meth:`load_state_dict` restored ``fitted_state`` from the checkpoint
            (:meth:`check_predict_ready` checks both). When it raises a ``UserError`` the
            conformance kit predicts the test inputs instead.

        """
        raise ConfigError(f"{type(self).__name__} does not predict new data")

    def check_predict_ready(self, needs_path: bool = True) -> None:
        """Predicting needs ``predict_path`` (unless the data has a default) and the
        preprocessing restored from a checkpoint, never refitted on the new data.

        Args:
            needs_path: Whether ``predict_path`` must be set (False where the data has a
                default, e.g. forecasting the training file's end).

        Raises:
            ConfigError: ``predict_path`` is missing.
            DataError: ``fitted_state`` was not restored.

        Called by:
            A datamodule's :meth:`setup_predict`, before it reads anything (the series,
            forecast and text datamodules do).

        """
        if needs_path and self.hparams.get("predict_path") is None:
            raise ConfigError("predicting needs datamodule.predict_path=FILE")
        if not self.fitted_state:
            raise DataError("restore the datamodule from a checkpoint (ckpt_path=...) first")

    # -- cross-validation (mode=cv) ------------------------------------------------------
    def cv_rows(self, groups: str | None = None) -> CVRows:
        """The rows that cross-validation splits into folds, with what the splitter needs.

        A datamodule supports ``mode=cv`` by overriding this and by splitting with
        :meth:`split_rows` (or reading :attr:`fold` itself) in :meth:`setup_fit`. Rows are
        those of the labelled training data; a separate test set (``test_path``, an
        official test split) takes no part in cross-validation.

        Args:
            groups: The ``cv.groups`` column whose values keep rows together (group
                k-fold), or None.

        Returns:
            A :class:`CVRows`: the row count, the class labels (None for regression), the
            group key of each row (None without ``groups``) and whether rows are in time
            order.

        Raises:
            ConfigError: this datamodule does not support cross-validation (the default),
                or it has no ``groups`` column.

        Called by:
            ``tasks.cv`` in ``mode=cv``, once, on a datamodule of its own (never one that
            trains a fold).
        """
        raise ConfigError(
            f"mode=cv: {type(self).__name__} does not support cross-validation (it implements "
            "no cv_rows()); use mode=train, or see docs/evaluation.md#cross-validation"
        )

    def use_fold(self, train_rows: Sequence[int], test_rows: Sequence[int]) -> None:
        """Set up this fold (row indices into :meth:`cv_rows`'s rows) instead of the usual
        split: ``test_rows`` become the test split, ``val_fraction`` of ``train_rows`` the
        validation split, and preprocessing is fitted on the rest of ``train_rows`` only.

        Args:
            train_rows: The fold's training rows (validation is carved from them).
            test_rows: The fold's test rows; empty to train on every row (``cv.refit``).

        Called by:
            ``tasks.cv`` on each fold's fresh datamodule, before ``setup``.
        """
        self.fold = (np.asarray(train_rows, dtype=np.int64), np.asarray(test_rows, dtype=np.int64))

    def split_rows(
        self,
        n: int,
        val_fraction: float,
        test_fraction: float,
        seed: int,
        stratify: Sequence[Any] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`split_indices` of ``n`` rows, or the cross-validation fold set by
        :meth:`use_fold` (then ``test_fraction`` is ignored: see :func:`fold_split`)."""
        if self.fold is None:
            return split_indices(n, val_fraction, test_fraction, seed, stratify=stratify)
        train_rows, test_rows = self._fold_within(n, "rows")
        return fold_split(train_rows, test_rows, val_fraction, seed, stratify=stratify)

    def _fold_within(self, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        """The fold's ``(train_rows, test_rows)``, checked to lie within ``n`` ``what``."""
        train_rows, test_rows = self.fold
        every = np.concatenate([train_rows, test_rows])
        if len(every) and (every.min() < 0 or every.max() >= n):
            raise DataError(
                f"{type(self).__name__}: the cross-validation fold names {what} outside the "
                f"{n} {what} of the data (did the data change since cv_rows()?)"
            )
        return train_rows, test_rows

    def fold_periods(self, n: int, val_fraction: float) -> dict[str, tuple[int, int]] | None:
        """The fold set by :meth:`use_fold` as time periods of ``n`` steps in time order:
        ``{"train": (0, v), "val": (v, t), "test": (t, e)}`` (steps ``[a, b)``), the last
        ``val_fraction`` of the fold's training steps validating; None without a fold.

        For datamodules of one series (``cv_rows`` with ``ordered=True``), whose folds
        chain forward: the training steps are every step before the test block.

        Raises:
            DataError: the fold is not an earlier period followed by a test block (the
                splitter was not forward-chaining), or names steps outside the data.
        """
        if self.fold is None:
            return None
        train_rows, test_rows = self._fold_within(n, "steps")
        end = len(train_rows)
        test_end = end + len(test_rows)
        if not (
            np.array_equal(np.sort(train_rows), np.arange(end))
            and np.array_equal(np.sort(test_rows), np.arange(end, test_end))
        ):
            raise DataError(
                f"{type(self).__name__}: a fold of a series must train on every step before "
                "its test block (forward-chaining); use cv.strategy=forward"
            )
        cut = len(fold_split(train_rows, test_rows, val_fraction, 0, ordered=True)[0])
        return {"train": (0, cut), "val": (cut, end), "test": (end, test_end)}

    def use_test_for_predict(self) -> None:
        """Make the test split (a cross-validation fold's test rows) the predict data, so
        that :meth:`fold_predictions` can describe the fold's model on them.

        The default takes the inputs of ``test_data`` (every tensor but the last, the
        target). A datamodule whose test batches are built otherwise (windows gathered by
        a collate function) overrides this and :meth:`fold_predictions`.

        Called by:
            ``tasks.cv`` after a fold has trained and tested, on the fold's datamodule.
        """
        self.predict_data = tuple(self.test_data[:-1])
        if hasattr(self, "predict_names"):
            self.predict_names = []

    def fold_predictions(self, outputs: dict[str, Tensor], rows: np.ndarray) -> pd.DataFrame:
        """The out-of-fold predictions of a fold: :meth:`predictions_frame` of the outputs
        for the data :meth:`use_test_for_predict` set up, with a first column ``row``
        naming the row (of :meth:`cv_rows`) that each line predicts.

        Args:
            outputs: The task's predict outputs, concatenated over batches.
            rows: The fold's test rows, in order.

        Raises:
            DataError: the predictions are not one per test row (``setup_fit`` did not make
                the fold's test rows the test split).

        Called by:
            ``tasks.cv``, once per fold, after :meth:`use_test_for_predict` and the fold
            model's predict loop; the lines go to ``oof.csv`` and ``oof_predictions.csv``.
        """
        frame = self.predictions_frame(outputs)
        if len(frame) != len(rows):
            raise DataError(
                f"{type(self).__name__}: {len(frame)} predictions for the fold's {len(rows)} "
                "test rows; its setup_fit must make the fold's test rows the test split"
            )
        frame.insert(0, "row", rows)
        return frame

    def _cv_labels(self, labels: Any, n: int, groups: str | None) -> CVRows:
        """A :class:`CVRows` of ``n`` unordered, labelled rows, for datamodules without
        table columns to group by."""
        if groups is not None:
            raise ConfigError(
                f"cv.groups={groups!r}: {type(self).__name__} has no columns to group rows "
                "by; drop cv.groups"
            )
        return CVRows(n, None if labels is None else np.asarray(labels), None, False)

    # -- what subclasses provide ---------------------------------------------------------
    def data_facts(self) -> dict[str, Any]:
        """Facts learnt from the data that the task needs (e.g. ``num_features``).

        Returns:
            Keyword arguments of the task's constructor, as plain data (numbers, strings,
            lists). A key that the task's constructor chain does not take is left out; a
            config value that contradicts one is a ``ConfigError``.

        Called by:
            The runner in ``mode=train`` and ``tasks.testing.check_preset``, once, after
            ``setup("fit")``: ``build_task(cfg, datamodule.data_facts())``. Not in
            ``mode=test`` or ``predict``, where the task comes from the checkpoint's
            hyperparameters.

        """
        return {}

    def predictions_frame(self, outputs: dict[str, Tensor]) -> pd.DataFrame:
        """Turn concatenated ``predict_step`` outputs into a table, one row per input row.

        Args:
            outputs: What the task's ``predict_outputs`` returned, concatenated over
                batches (and gathered from every process in input order): name -> tensor
                with one row per row of ``predict_data``.

        Returns:
            The table written to ``predictions.csv`` (index column ``row``). The default
            writes a column per 1-D output and ``<name>_<j>`` columns for 2-D ones.

        Called by:
            The runner in ``mode=predict``, once, on rank zero, after ``trainer.predict``.

        """
        columns: dict[str, Any] = {}
        for key, value in outputs.items():
            array = value.detach().cpu().numpy()
            if array.ndim == 1:
                columns[key] = array
            else:
                for j in range(array.shape[1]):
                    columns[f"{key}_{j}"] = array[:, j]
        return pd.DataFrame(columns)

    # -- bundles and serving (tasks.bundle) ----------------------------------------------
    #: What one input of a bundle's ``predict`` is: ``record`` (a table row), ``image``,
    #: ``text``, ``sequence`` (one series of values), or ``series`` (the rows of ONE time
    #: series, predicted together). Row-wise kinds are batched across requests by the server;
    #: ``series`` inputs are predicted one request at a time.
    input_kind: str = "record"
    #: Positions of the predict inputs whose second dimension varies between batches (token
    #: ids trimmed to the longest row): an ONNX export keeps that dimension free.
    variable_length_inputs: tuple[int, ...] = ()

    def input_signature(self) -> dict[str, Any]:
        """What a bundle's ``signature.json`` says about the inputs (with ``input_kind``).

        Returns:
            Plain data: at least ``{"kind": input_kind}``; subclasses add fields (e.g. the
            columns and their types, the image size, the allowed categories).

        Called by:
            ``tasks.bundle.export_bundle``, once, after the fitted state was restored.
        """
        return {"kind": self.input_kind}

    def example_inputs(self, n: int) -> list[Any]:
        """Up to ``n`` real test inputs in the JSON form :meth:`predict_inputs` accepts (a
        bundle's ``example_input.json``, replayed by every load of the bundle).

        Args:
            n: How many inputs at most.

        Returns:
            A list of JSON-ready values: records (dicts) for tables and series, strings for
            texts, lists of numbers for sequences, base64-encoded PNG strings for images.

        Called by:
            ``tasks.bundle.export_bundle``, once, after ``setup("fit")`` with the fitted
            state restored. The default raises ``NotImplementedError``: this datamodule
            cannot make a bundle.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement example_inputs(): it cannot be bundled"
        )

    def predict_inputs(self, inputs: Sequence[Any] | pd.DataFrame) -> None:
        """Fill ``predict_data`` (and what :meth:`predictions_frame` reads) from in-memory
        inputs, with the fitted state, exactly as :meth:`setup_predict` does from a file.

        The default writes the inputs (a DataFrame, or a list of records) to a CSV file in
        a temporary folder and runs ``setup("predict")`` on it, so that a bundle predicts
        through the same code as ``mode=predict``; datamodules whose inputs are not table
        rows (images, texts) override it.

        Args:
            inputs: A DataFrame, a list of inputs in the JSON form of
                :meth:`example_inputs` (Python conveniences such as PIL images are allowed
                where a subclass says so), or (by default) the path of a file that
                ``datamodule.predict_path`` could name.

        Raises:
            DataError: the inputs do not fit the training data (missing columns, wrong
                types...): one line that names the problem.

        Called by:
            The predictor of ``tasks.load_bundle`` (and so the HTTP server), once per call.
        """
        import tempfile

        previous = self.hparams.get("predict_path")
        with tempfile.TemporaryDirectory(prefix="lightning-tasks-") as folder:
            if isinstance(inputs, (str, Path)) and Path(inputs).is_file():
                path = Path(inputs)  # a file as mode=predict reads it
            else:
                frame = inputs if isinstance(inputs, pd.DataFrame) else records_frame(inputs)
                path = Path(folder) / "inputs.csv"
                frame.to_csv(path, index=False)
            self.hparams["predict_path"] = str(path)
            try:
                self.setup("predict")  # what mode=predict runs (some override setup itself)
            finally:
                self.hparams["predict_path"] = previous

    def input_encoder(self) -> torch.nn.Module | None:
        """The numeric part of this datamodule's encoding as a torch module, for an ONNX
        graph that starts from raw values (see :mod:`datamodules._graph`).

        Returns:
            An :class:`~datamodules._graph.InputEncoder` built from ``fitted_state``: its
            ``forward`` maps raw inputs (original units, NaN for missing, category codes)
            to the encoded inputs of ``predict_data``, its ``raw`` maps encoded inputs
            back, and its ``describe`` says what each raw input holds. None (the default)
            when the graph takes the encoded inputs as they are (token ids, uint8 pixels
            that the task normalises itself).

        Called by:
            ``tasks.bundle.export_bundle`` with ``onnx=True`` (the graph is the encoder
            followed by the task's predict step) and ``tasks.load_bundle`` with
            ``backend="onnx"``, after the fitted state was restored.
        """
        return None

    # -- loaders -------------------------------------------------------------------------
    def collate(self, stage: str) -> Callable[[tuple[Tensor, ...]], Any] | None:
        """What turns each batch of slices of a stage's tensors into what the task receives;
        None (the default) passes the slices on as they are.

        Args:
            stage: ``train``, ``validation``, ``test`` or ``predict``.

        Returns:
            A function of the batch's tuple of tensor slices (e.g. window start indices
            into windows gathered from a strided view, or padding trimmed to the longest
            row), or None.

        Called by:
            The loader of each stage, built by ``train_dataloader`` and its siblings, once
            per batch; the function runs before the batch moves to the device.
        """
        return None

    def _loader(
        self, data: tuple[Tensor, ...] | None, stage: str, train: bool = False
    ) -> TensorLoader:
        if data is None:
            raise DataError(
                f"{type(self).__name__} has no {stage} data: setup() did not produce it. "
                + ("Pass datamodule.predict_path=FILE." if stage == "predict" else "")
            )
        hp = self.hparams
        return TensorLoader(
            *data,
            batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
            shuffle=train,
            seed=hp.seed,
            collate=self.collate(stage),
            group=self.steps_per_execution if stage in ("train", "validation") else 1,
            epoch_rows=hp.get("train_rows_per_epoch") if train else None,
        )

    def train_dataloader(self) -> TensorLoader:
        return self._loader(self.train_data, "train", train=True)

    def val_dataloader(self) -> TensorLoader:
        return self._loader(self.val_data, "validation")

    def test_dataloader(self) -> TensorLoader:
        return self._loader(self.test_data, "test")

    def predict_dataloader(self) -> TensorLoader:
        return self._loader(self.predict_data, "predict")
