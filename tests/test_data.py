"""The in-memory loader, seeded splits and the tabular datamodule's handling of bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_table

from datamodules.base import TensorLoader, split_indices
from datamodules.tabular import TabularDataModule
from tasks.errors import ConfigError, DataError


def _rows(loader: TensorLoader) -> list[int]:
    return [int(v) for batch in loader for v in batch[0]]


def test_loader_yields_every_row_once_per_epoch_in_a_new_order():
    x, y = torch.arange(10), torch.arange(10) * 2
    loader = TensorLoader(x, y, batch_size=3, shuffle=True, seed=0)
    assert len(loader) == 4
    first, second = _rows(loader), _rows(loader)
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second
    for bx, by in loader:
        torch.testing.assert_close(by, bx * 2)  # rows stay aligned across tensors


def test_loader_is_reproducible_and_ordered_without_shuffle():
    assert _rows(TensorLoader(torch.arange(7), batch_size=3, shuffle=True, seed=5)) == _rows(
        TensorLoader(torch.arange(7), batch_size=3, shuffle=True, seed=5)
    )
    assert _rows(TensorLoader(torch.arange(7), batch_size=3)) == list(range(7))


def test_loader_drop_last_keeps_shapes_fixed():
    loader = TensorLoader(torch.arange(10), batch_size=4, shuffle=True, drop_last=True)
    assert len(loader) == 2 and [len(b[0]) for b in loader] == [4, 4]


def test_loader_shards_equally_across_ranks(monkeypatch):
    x = torch.arange(7)
    shards = []
    for rank in range(3):
        monkeypatch.setattr(TensorLoader, "_world", staticmethod(lambda r=rank: (r, 3)))
        loader = TensorLoader(x, batch_size=2)
        shards.append(_rows(loader))
        assert len(loader) == 2
    assert [len(s) for s in shards] == [3, 3, 3]  # padded by wrapping, ranks in lockstep
    assert sorted(set(sum(shards, []))) == list(range(7))


def test_loader_rejects_mismatched_tensors():
    with pytest.raises(ValueError, match="differ in length"):
        TensorLoader(torch.zeros(3), torch.zeros(4), batch_size=2)


def test_split_is_seeded_disjoint_and_stratified():
    labels = np.array([0] * 80 + [1] * 20)
    train, val, test = split_indices(100, 0.2, 0.2, seed=3, stratify=labels)
    assert len(set(train) | set(val) | set(test)) == 100
    assert not set(train) & set(val) and not set(val) & set(test)
    assert (labels[test] == 1).sum() == 4 and (labels[val] == 1).sum() == 4
    again = split_indices(100, 0.2, 0.2, seed=3, stratify=labels)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))


@pytest.mark.parametrize("val,test", [(0.6, 0.5), (-0.1, 0.2), (0.2, 1.0)])
def test_split_rejects_impossible_fractions(val, test):
    with pytest.raises(ConfigError, match="datamodule"):
        split_indices(10, val, test, seed=0)


def test_statistics_come_from_the_training_split_only(table_csv):
    dm = TabularDataModule(
        path=str(table_csv), target="label", val_fraction=0.2, test_fraction=0.2, seed=0
    )
    dm.setup("fit")
    frame = pd.read_csv(table_csv)
    train_idx, _, _ = split_indices(len(frame), 0.2, 0.2, 0, stratify=frame["label"].to_numpy())
    expected = frame.iloc[train_idx][["a", "b", "c", "d"]].mean().to_numpy()
    np.testing.assert_allclose(dm.state_dict()["prep"]["center"], expected)
    assert dm.train_data[0].mean(0).abs().max() < 1e-5  # standardised on train
    assert dm.data_facts() == {
        "num_features": 4,
        "num_classes": 2,
        "class_counts": [36, 36],
        "categorical_cardinalities": [],
    }


def test_missing_feature_values_are_imputed_with_the_training_median(tmp_path):
    frame = make_table(60)
    train, val, test = split_indices(60, 0.15, 0.15, 0, stratify=frame["label"].to_numpy())
    frame.loc[np.concatenate([val, test]), "c"] += 50.0  # a median over every row would move
    frame.loc[::7, "c"] = np.nan
    frame.to_csv(tmp_path / "holes.csv", index=False)
    new = make_table(12, seed=3)
    new["c"] = np.where(np.arange(12) % 3 == 0, np.nan, new["c"] + 100.0)
    new.drop(columns="label").to_csv(tmp_path / "new.csv", index=False)
    dm = TabularDataModule(
        path=str(tmp_path / "holes.csv"),
        target="label",
        seed=0,
        predict_path=str(tmp_path / "new.csv"),
    )
    dm.setup("fit")
    dm.setup("predict")
    median = np.nanmedian(frame.loc[train, "c"].to_numpy())
    filled = frame.loc[train, "c"].fillna(median).to_numpy()
    prep = dm.state_dict()["prep"]
    j = prep["numeric"].index("c")
    assert prep["fill"][j] == pytest.approx(median)
    assert prep["center"][j] == pytest.approx(filled.mean())
    # a gap becomes the training median, standardised, in every split and at predict time,
    # and the indicator column says which values were missing
    names = dm.prep.feature_names
    value, flag = names.index("c"), names.index("c__missing")
    imputed = (median - filled.mean()) / filled.std()
    parts = {
        "train": (frame.loc[train, "c"], dm.train_data),
        "val": (frame.loc[val, "c"], dm.val_data),
    }
    parts["test"] = (frame.loc[test, "c"], dm.test_data)
    parts["predict"] = (new["c"], dm.predict_data)
    for name, (column, data) in parts.items():
        gaps = column.isna().to_numpy()
        x = data[0].numpy()
        assert gaps.any() and torch.isfinite(data[0]).all(), name
        np.testing.assert_allclose(x[gaps, value], imputed, rtol=1e-5, err_msg=name)
        assert x[:, flag].tolist() == gaps.astype(float).tolist(), name


def test_separate_test_file_is_used_as_the_test_split(table_csv, tmp_path):
    make_table(30, seed=9).to_csv(tmp_path / "test.csv", index=False)
    dm = TabularDataModule(
        path=str(table_csv), target="label", test_path=str(tmp_path / "test.csv")
    )
    dm.setup("fit")
    assert len(dm.test_data[0]) == 30
    assert len(dm.train_data[0]) + len(dm.val_data[0]) == 120


@pytest.fixture
def write(tmp_path):
    def _write(frame: pd.DataFrame | str, name: str = "bad.csv") -> str:
        path = tmp_path / name
        if isinstance(frame, str):
            path.write_text(frame)
        else:
            frame.to_csv(path, index=False)
        return str(path)

    return _write


def test_missing_file_names_the_option_and_path():
    dm = TabularDataModule(path="nowhere/table.csv", target="label")
    with pytest.raises(DataError, match="datamodule.path: no such file 'nowhere/table.csv'"):
        dm.setup("fit")


def test_empty_file_is_reported(write):
    dm = TabularDataModule(path=write(""), target="label")
    with pytest.raises(DataError, match="is empty"):
        dm.setup("fit")


def test_header_without_rows_is_reported(write):
    dm = TabularDataModule(path=write("a,b,label\n"), target="label")
    with pytest.raises(DataError, match="has a header but no rows"):
        dm.setup("fit")


def test_misnamed_target_suggests_the_column(write):
    dm = TabularDataModule(path=write(make_table(30)), target="lable")
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    assert "column 'lable' (did you mean 'label'?) not found" in str(info.value)
    assert "Available columns: a, b, c, d, label" in str(info.value)


def test_misnamed_feature_is_reported(write):
    dm = TabularDataModule(path=write(make_table(30)), target="label", features=["a", "bb"])
    with pytest.raises(DataError, match="column 'bb' \\(did you mean 'b'\\?\\) not found"):
        dm.setup("fit")


def test_missing_labels_are_reported_with_rows(write):
    frame = make_table(30)
    frame.loc[[3, 8], "label"] = None
    dm = TabularDataModule(path=write(frame), target="label")
    with pytest.raises(DataError, match="empty in 2 rows \\(lines 5, 10\\); drop or fill them"):
        dm.setup("fit")


def test_predict_file_without_a_feature_column_is_reported(table_csv, write):
    dm = TabularDataModule(
        path=str(table_csv),
        target="label",
        predict_path=write(make_table(5).drop(columns=["c"]), "new.csv"),
    )
    dm.setup("fit")
    with pytest.raises(DataError, match="datamodule.predict_path: column 'c' not found"):
        dm.setup("predict")


def test_predict_without_fitted_state_says_what_to_do(table_csv, write):
    dm = TabularDataModule(path=str(table_csv), target="label", predict_path=write(make_table(5)))
    with pytest.raises(DataError, match="no fitted preprocessing"):
        dm.setup("predict")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "exactly one data source"),
        ({"path": "x.csv", "dataset": "iris"}, "exactly one data source"),
        ({"path": "x.csv"}, "datamodule.target is required"),
        ({"dataset": "wines"}, "Did you mean 'wine'"),
        ({"dataset": "iris", "batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_constructor_validates_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TabularDataModule(**kwargs)


def test_predictions_decode_labels(table_csv):
    dm = TabularDataModule(path=str(table_csv), target="label")
    dm.setup("fit")
    frame = dm.predictions_frame(
        {"pred": torch.tensor([1, 0]), "prob": torch.tensor([[0.2, 0.8], [0.9, 0.1]])}
    )
    assert list(frame["pred"]) == ["yes", "no"]
    assert list(frame.columns) == ["pred", "prob_no", "prob_yes"]


def test_parquet_tables_read_like_csv(tmp_path):
    """The ``parquet`` extra (pyarrow) is what ``datamodule.path=FILE.parquet`` needs."""
    pytest.importorskip("pyarrow")
    from datamodules._table_prep import read_table

    frame = make_table(50)
    frame.to_parquet(tmp_path / "table.parquet")
    frame.to_csv(tmp_path / "table.csv", index=False)
    from_parquet = read_table(tmp_path / "table.parquet")
    pd.testing.assert_frame_equal(from_parquet, read_table(tmp_path / "table.csv"))
    datamodule = TabularDataModule(path=str(tmp_path / "table.parquet"), target="label")
    datamodule.setup("fit")
    assert sum(len(part[0]) for part in (datamodule.train_data, datamodule.val_data)) > 30
