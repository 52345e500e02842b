"""Tabular problems: type inference, encodings, data checks, bad input, regression, presets."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_table, run_cli, run_on_file

from datamodules._table_prep import DataWarning, infer_column_type
from datamodules.tabular import TabularDataModule
from tasks.api import compose, run
from tasks.errors import ConfigError, DataError
from tasks.tabular import TabularClassification


def mixed_table(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Numeric, boolean, text-category and gappy columns; the label needs the category."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=n)
    x = rng.normal(size=n)
    flag = rng.random(n) > 0.5
    score = x + np.where(colour == "red", 2.0, -1.0)
    frame = pd.DataFrame(
        {
            "x": x,
            "flag": flag,
            "colour": colour,
            "gappy": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
            "label": np.where(score > 0, "pos", "neg"),
        }
    )
    return frame


def _setup(frame, **kwargs) -> TabularDataModule:
    dm = TabularDataModule(frame=frame, target=kwargs.pop("target", "label"), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        dm.setup("fit")
    return dm


# -- type inference and encodings -------------------------------------------------------------
def test_column_types_are_inferred():
    frame = mixed_table()
    frame["as_text"] = frame["x"].round(3).astype(str)
    assert [
        infer_column_type(frame[c], "t") for c in ("x", "flag", "colour", "gappy", "as_text")
    ] == ["numeric", "boolean", "categorical", "numeric", "numeric"]


def test_mostly_numeric_text_column_shows_the_bad_values():
    values = pd.Series([str(v) for v in range(40)] + ["n/a", "?"], name="age")
    with pytest.raises(DataError) as info:
        infer_column_type(values, "datamodule.path")
    message = str(info.value)
    assert "column 'age' is numeric except for 2 rows (row 40: 'n/a', row 41: '?')" in message
    assert "datamodule.column_types={age: categorical}" in message


def test_onehot_encoding_has_an_unknown_bucket_for_new_categories(tmp_path):
    dm = _setup(mixed_table(), drop_columns=["gappy"])
    names = dm.prep.feature_names
    assert names == ["x", "flag", "colour=<unknown>", "colour=blue", "colour=green", "colour=red"]
    new = pd.DataFrame({"x": [0.0, 0.0], "flag": [True, False], "colour": ["purple", "red"]})
    x_num, x_cat = dm.prep.transform(new, "predict")
    assert x_num[0, 2:].tolist() == [1, 0, 0, 0]  # purple -> unknown
    assert x_num[1, 2:].tolist() == [0, 0, 0, 1]
    assert x_cat.shape == (2, 0)


def test_embedding_encoding_codes_unknown_and_missing_as_zero():
    dm = _setup(mixed_table(), categorical_encoding="embedding")
    assert dm.data_facts()["categorical_cardinalities"] == [4]  # 3 colours + unknown
    new = pd.DataFrame(
        {"x": [0.0] * 3, "flag": [True] * 3, "colour": ["purple", None, "blue"], "gappy": [0.0] * 3}
    )
    _, x_cat = dm.prep.transform(new, "predict")
    assert x_cat[:, 0].tolist() == [0, 0, 1]


def test_column_type_override_turns_numbers_into_categories():
    frame = mixed_table()
    frame["zip"] = np.random.default_rng(1).choice([1010, 2020, 3030], size=len(frame))
    dm = _setup(frame, column_types={"zip": "categorical"})
    assert "zip=2020" in dm.prep.feature_names


def test_gaps_are_imputed_with_an_indicator_column():
    dm = _setup(mixed_table())
    names = dm.prep.feature_names
    assert "gappy__missing" in names
    x = dm.train_data[0]
    assert torch.isfinite(x).all()
    indicator = x[:, names.index("gappy__missing")]
    assert 0 < indicator.sum() < len(indicator) and set(indicator.unique().tolist()) <= {0.0, 1.0}


def test_auto_transform_takes_the_log_of_heavy_right_tails_only():
    """numeric_transform=auto: log1p for a skewed non-negative column (lognormal amounts,
    zero-inflated rainfall), never for a symmetric one, a rare 0/1 flag (skewed, but the log
    only rescales it), a column with negative values, or a near-uniform count."""
    rng = np.random.default_rng(3)
    frame = mixed_table()
    n = len(frame)
    frame["amount"] = rng.lognormal(3.0, 1.5, size=n)
    frame["rain"] = np.where(rng.random(n) < 0.6, 0.0, rng.exponential(5.0, size=n) ** 1.5)
    frame["rare"] = (rng.random(n) < 0.05).astype(float)
    frame["level"] = rng.normal(50.0, 5.0, size=n)
    frame["age"] = rng.integers(18, 80, size=n)
    frame["debt"] = -rng.lognormal(3.0, 1.5, size=n)
    dm = _setup(frame, numeric_transform="auto")
    assert sorted(dm.prep.state["log1p"]) == ["amount", "rain"]
    assert _setup(frame).prep.state["log1p"] == []  # the datamodule's default stays none


def test_generic_classification_preset_evens_out_heavy_tails():
    cfg = compose("tabular_classification", ["datamodule.path=x.csv", "datamodule.target=y"])
    assert cfg.datamodule.numeric_transform == "auto"


def test_log1p_applies_to_non_negative_columns_only():
    frame = mixed_table()
    frame["count"] = np.random.default_rng(2).poisson(3.0, size=len(frame)) * 100
    dm = _setup(frame, numeric_transform="log1p")
    assert dm.prep.state["log1p"] == ["count"]  # x and gappy take negative values


def test_embedding_and_categorical_signal_train_end_to_end(tmp_path):
    dm = TabularDataModule(frame=mixed_table(600), target="label", categorical_encoding="embedding")
    cfg = compose(
        "tabular_classification",
        [
            "datamodule.path=unused.csv",
            "datamodule.target=label",
            "trainer.max_epochs=40",
            "trainer.enable_progress_bar=false",
            f"output_dir={tmp_path}",
            "task.lr=0.01",
        ],
    )
    summary = run(cfg, datamodule=dm)
    assert summary["datamodule"] == "TabularDataModule"
    assert summary["metrics"]["test/acc"] >= 0.9  # needs the colour embedding to get there
    assert summary["baseline"]["baseline/acc"] < 0.8


# -- data checks -------------------------------------------------------------------------------
def _warnings_for(frame, **kwargs) -> list[str]:
    dm = TabularDataModule(frame=frame, target=kwargs.pop("target", "label"), **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    return [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_leaks_and_useless_columns_are_warned_about():
    frame = mixed_table()
    frame = frame.sort_values("label").reset_index(drop=True)
    frame.insert(0, "row_id", np.arange(len(frame)))
    frame["const"] = 7
    frame["label_copy"] = frame["label"].map({"pos": 1, "neg": 0})
    found = " | ".join(_warnings_for(frame))
    assert "column 'row_id' is a unique, monotonic integer, like a row id" in found
    assert "datamodule.drop_columns=[row_id]" in found
    assert "column 'const' is constant" in found
    assert "column 'label_copy' determines the target 'label' one to one" in found


def test_rare_class_and_outliers_are_warned_about():
    frame = make_table(100, classes=("a", "b"))
    frame.loc[0, "label"] = "c"
    frame.loc[5, "d"] = 1e4
    found = " | ".join(_warnings_for(frame))
    assert "class 'c' has only 1 row(s), fewer than the 3 splits" in found
    assert "column 'd' has 1 extreme value(s) (row 5: 10000" in found


def test_warnings_land_in_the_summary(tmp_path):
    frame = mixed_table()
    frame["const"] = 1
    dm = TabularDataModule(frame=frame, target="label")
    cfg = compose(
        "tabular_classification",
        ["datamodule.path=x", "datamodule.target=label", "debug=fdr", f"output_dir={tmp_path}"],
    )
    with pytest.warns(DataWarning):
        summary = run(cfg, datamodule=dm)
    assert any("'const' is constant" in w for w in summary["data_warnings"])


# -- bad input ----------------------------------------------------------------------------------
@pytest.fixture
def csv(tmp_path):
    def write(frame: pd.DataFrame | str, name: str = "t.csv") -> str:
        path = tmp_path / name
        path.write_text(frame) if isinstance(frame, str) else frame.to_csv(path, index=False)
        return str(path)

    return write


def _fails(message: str, **kwargs) -> None:
    dm = TabularDataModule(target=kwargs.pop("target", "label"), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError) as info:
            dm.setup("fit")
    assert message in str(info.value), str(info.value)


def test_single_class_is_an_error(csv):
    frame = make_table(30)
    frame["label"] = "yes"
    _fails(
        "target 'label' has a single class 'yes'; classification needs at least two",
        path=csv(frame),
    )


def test_all_empty_column_is_an_error(csv):
    frame = make_table(30)
    frame["blank"] = np.nan
    _fails(
        "column 'blank' is empty in every row; drop it with datamodule.drop_columns=[blank]",
        path=csv(frame),
    )


def test_duplicate_column_names_are_an_error(csv):
    _fails("duplicate column names ['a']", path=csv("a,a,label\n1,2,x\n3,4,y\n"))
    frame = pd.DataFrame([[1, 2, "x"], [3, 4, "y"]], columns=["a", "a", "label"])
    _fails("duplicate column names ['a']", frame=frame)


def test_infinite_values_are_an_error(csv):
    frame = make_table(30)
    frame.loc[4, "b"] = np.inf
    _fails("infinite values in column 'b' (line 6) of '", path=csv(frame))


def test_non_numeric_regression_target_is_an_error(csv):
    _fails(
        "regression target 'label' must be numeric", path=csv(make_table(30)), problem="regression"
    )


def test_predict_file_with_extra_columns_warns_and_ignores_them(csv):
    dm = TabularDataModule(
        path=csv(make_table(60)),
        target="label",
        predict_path=csv(make_table(5).assign(note="hi"), "new.csv"),
    )
    dm.setup("fit")
    with pytest.warns(DataWarning, match="ignoring columns not used in training: \\['note'\\]"):
        dm.setup("predict")
    assert dm.predict_data[0].shape == (5, 4)


# -- regression --------------------------------------------------------------------------------
def linear_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return pd.DataFrame(
        {
            "a": x[:, 0],
            "b": x[:, 1],
            "c": x[:, 2],
            "y1": 100 + 20 * x[:, 0] - 10 * x[:, 1] + rng.normal(scale=1.0, size=n),
            "y2": -5 + 3 * x[:, 2] + rng.normal(scale=0.3, size=n),
        }
    )


def test_multi_target_regression_in_original_units(tmp_path, csv):
    path = csv(linear_table(), "lin.csv")
    cfg = compose(
        "tabular_regression",
        [
            f"datamodule.path={path}",
            "datamodule.target=[y1,y2]",
            "trainer.max_epochs=60",
            "trainer.enable_progress_bar=false",
            f"output_dir={tmp_path}/fit",
            "task.lr=0.01",
            "task.dropout=0.0",
        ],
    )
    summary = run(cfg)
    assert summary["metrics"]["test/r2"] > 0.95
    assert summary["baseline"]["baseline/r2"] < 0.05
    assert summary["metrics"]["test/mae"] < 3.0  # original units: y1 spans ~100 +- 60
    assert (tmp_path / "fit" / "predictions_vs_truth.png").is_file()

    rows = linear_table(7, seed=5)
    rows.drop(columns=["y1", "y2"]).to_csv(tmp_path / "new.csv", index=False)
    predicted = run(
        compose(
            "tabular_regression",
            [
                f"datamodule.path={path}",
                "datamodule.target=[y1,y2]",
                "mode=predict",
                f"ckpt_path={summary['best_checkpoint']}",
                f"datamodule.predict_path={tmp_path}/new.csv",
                f"output_dir={tmp_path}/pred",
            ],
        )
    )
    frame = pd.read_csv(predicted["predictions"]["path"])
    assert list(frame.columns) == ["row", "pred_y1", "pred_y2"]
    np.testing.assert_allclose(frame["pred_y1"], rows["y1"], atol=6.0)
    np.testing.assert_allclose(frame["pred_y2"], rows["y2"], atol=2.0)


def test_balanced_class_weights_follow_training_counts():
    task = TabularClassification(num_classes=3, class_counts=[60, 30, 10], class_weights="balanced")
    torch.testing.assert_close(task.criterion.weight, torch.tensor([100 / 180, 100 / 90, 100 / 30]))
    baseline = task.baseline_output(torch.zeros(4, 3))
    assert baseline.argmax(-1).tolist() == [0, 0, 0, 0]  # majority class


def test_generic_preset_on_a_users_csv_through_the_cli(tmp_path, csv):
    path = csv(make_table(150, classes=("cat", "dog", "eel")), "animals.csv")
    result = run_on_file(
        "tabular_classification", path, "label", "debug=tiny", f"hydra.run.dir={tmp_path}/run"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["preset"] == "tabular_classification"
    assert "baseline/acc" in summary["baseline"]
    confusion = pd.read_csv(tmp_path / "run" / "confusion_matrix.csv", index_col=0)
    assert list(confusion.columns) == ["cat", "dog", "eel"]


def test_generic_preset_says_which_values_are_missing():
    result = run_cli("+task=tabular_regression", "hydra.run.dir=/tmp/never")
    assert result.returncode == 2
    assert (
        "error: missing value for datamodule.path: set it with datamodule.path=VALUE"
        in result.stderr
    )


def test_text_in_a_numeric_column_at_predict_time_names_rows_and_values(csv):
    new = make_table(4).drop(columns="label").astype({"a": object})
    new.loc[2, "a"] = "abc"
    dm = TabularDataModule(
        path=csv(make_table(60)), target="label", predict_path=csv(new, "new.csv")
    )
    dm.setup("fit")
    with pytest.raises(
        DataError, match="numeric column 'a' has non-numeric values in 1 rows \\(line 4: 'abc'\\)"
    ):
        dm.setup("predict")


class _OwnTable(TabularDataModule):
    """A subclass that makes its own rows (as a plugin's generated or fetched table)."""

    def __init__(self, rows: int = 120, target: str = "label", **kwargs):
        super().__init__(target=target, **kwargs)

    def load_frame(self):
        return make_table(self.hparams.rows)


def test_a_subclass_can_supply_its_own_table():
    dm = _OwnTable(rows=90, seed=3)
    dm.setup("fit")
    assert dm.data_facts()["num_classes"] == 2
    assert len(dm.train_data[0]) + len(dm.val_data[0]) + len(dm.test_data[0]) == 90
    rebuilt = type(dm)(**dm.hparams)  # hyperparameters alone rebuild it
    rebuilt.setup("fit")
    assert torch.equal(rebuilt.val_data[0], dm.val_data[0])


def test_a_subclass_with_its_own_table_rejects_a_second_source(csv):
    with pytest.raises(ConfigError, match="_OwnTable makes its own table; do not set path"):
        _OwnTable(path=csv("a,label\n1,x\n"))


def test_a_load_frame_that_returns_no_frame_is_named():
    class Broken(_OwnTable):
        def load_frame(self):
            return [[1, 2]]

    with pytest.raises(
        DataError, match=r"Broken.load_frame\(\): expected a pandas DataFrame, got list"
    ):
        Broken().setup("fit")
