"""Tables a user gets wrong: each ends in one line naming the problem, where it is and the fix,
or, where the intent is plain (another separator), is read correctly with a warning."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import make_table, run_on_file

from datamodules._table_prep import DataWarning, line_break_hint, read_table
from datamodules.tabular import TabularDataModule
from tasks.api import compose, run
from tasks.errors import ConfigError, DataError


def _infinite(path):
    frame = make_table(120)
    frame.loc[[100, 110], "b"] = np.inf  # rows that land in the validation/test splits too
    frame.loc[105, "c"] = -np.inf
    frame.to_csv(path, index=False)


def _latin1(path):
    frame = make_table(60)
    frame["city"] = ["Zürich", "Köln", "Malmö"] * 20
    frame.to_csv(path, index=False, encoding="latin-1")


def _continuous(path):
    frame = make_table(300)
    frame["label"] = np.random.default_rng(0).normal(size=300).round(3)
    frame.to_csv(path, index=False)


def _many_small_classes(path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=1000), "label": np.repeat(np.arange(500), 2)})
    frame.to_csv(path, index=False)


@pytest.mark.parametrize(
    "write,overrides,message",
    [
        pytest.param(
            _infinite,
            [],
            "infinite values in column 'b' (lines 102, 112) and column 'c' (line 107) of '",
            id="infinite_values_name_file_lines_and_every_column",
        ),
        pytest.param(
            _latin1,
            [],
            "is not valid UTF-8 (byte 0xfc at line 2); "
            "pass datamodule.encoding=latin-1 (or the file's encoding)",
            id="latin1_file",
        ),
        pytest.param(
            _latin1,
            ["datamodule.encoding=latin9x"],
            "datamodule.encoding='latin9x' is not an encoding Python knows",
            id="unknown_encoding",
        ),
        pytest.param(
            _continuous,
            [],
            "target 'label' looks continuous (283 distinct values in 300 rows, e.g. 0.126, "
            "-0.132, 0.64), not a set of classes; for a numeric target use the regression "
            "preset +task=tabular_regression",
            id="continuous_target_for_classification",
        ),
        pytest.param(
            _many_small_classes,
            [],
            "no rows left for validation: 500 of 500 classes have fewer than 3 rows (the "
            "smallest has 2), too few to put one in each of train/validation/test; add rows, "
            "predict fewer classes, or merge rare classes into one",
            id="many_classes_with_two_rows",
        ),
    ],
)
def test_bad_table_ends_the_cli_with_one_line(tmp_path, write, overrides, message):
    path = tmp_path / "table.csv"
    write(path)
    result = run_on_file(
        "tabular_classification",
        path,
        "label",
        *overrides,
        "debug=tiny",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]


def test_a_row_torn_by_a_carriage_return_names_the_line_and_the_quoting(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_bytes(b"note,a,label\nfine,1,x\ntorn\rin two,2,y,extra\nok,3,x\n")
    with pytest.raises(DataError) as error:
        read_table(path, "datamodule.path")
    assert "is not a readable table" in str(error.value)
    assert "line 3 holds a carriage return (\\r) that ends no line" in str(error.value)
    assert "quoting=csv.QUOTE_ALL" in str(error.value)
    # line endings are not hints: \r\n (Windows) and \r alone (old Macs)
    for ending in (b"\r\n", b"\r"):
        path.write_bytes(ending.join([b"note,a", b"x,1", b"y,2,3"]) + ending)
        assert line_break_hint(path) == ""
    # nor is a \r inside a quoted field, nor \r\n in UTF-16 (bytes \r 0 \n 0)
    path.write_bytes(b'note,a\n"quoted\rinside",1\nnext,\n')
    assert line_break_hint(path) == ""
    path.write_bytes("note,a\r\nx,1\r\n".encode("utf-16"))
    assert line_break_hint(path, "utf-16") == ""
    # a corrupt gzip file: no hint, and no second error
    gz = tmp_path / "notes.csv.gz"
    gz.write_bytes(gzip.compress(b"note,a\nx\ry,1\n" * 100)[:40] + b"\xff" * 64)
    assert line_break_hint(gz) == ""


def test_a_truncated_or_corrupt_compressed_table_is_one_line(tmp_path):
    whole = gzip.compress(b"a,b\n" + b"1,2\n" * 5000)
    for name, data in [
        ("cut.csv.gz", whole[: len(whole) // 2]),
        ("corrupt.csv.gz", whole[:30] + bytes(range(256)) + whole[30:]),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match="looks truncated or corrupt: copy or download it"):
            read_table(tmp_path / name, "datamodule.path")
    # as a user meets it: one line, exit code 2, and no run folder left behind
    run_dir = tmp_path / "run"
    result = run_on_file(
        "tabular_classification",
        tmp_path / "cut.csv.gz",
        "b",
        "debug=tiny",
        f"hydra.run.dir={run_dir}",
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "cut.csv.gz' cannot be read whole" in errors[0]
    assert "looks truncated or corrupt: copy or download it again" in errors[0]
    assert not (run_dir / "summary.json").exists()


# -- 1. infinite values -------------------------------------------------------------------------
def test_infinite_values_in_a_file_to_predict_name_its_lines_and_columns(tmp_path):
    make_table(60).to_csv(tmp_path / "train.csv", index=False)
    new = make_table(6, seed=1).drop(columns="label")
    new.loc[1, "a"], new.loc[[3, 4], "d"] = np.inf, -np.inf
    new.to_csv(tmp_path / "new.csv", index=False)
    dm = TabularDataModule(
        path=str(tmp_path / "train.csv"), target="label", predict_path=str(tmp_path / "new.csv")
    )
    dm.setup("fit")
    with pytest.raises(DataError) as info:
        dm.setup("predict")
    assert str(info.value) == (
        f"datamodule.predict_path: infinite values in column 'a' (line 3) and column 'd' "
        f"(lines 5, 6) of {str(tmp_path / 'new.csv')!r}; replace them with finite numbers or "
        "leave them empty"
    )


def test_infinite_values_in_a_dataframe_name_its_index_labels():
    frame = make_table(60)
    frame.loc[40, "a"] = np.inf
    dm = TabularDataModule(frame=frame, target="label")
    with pytest.raises(DataError, match=r"^datamodule frame: infinite values in column 'a' "):
        dm.setup("fit")
    with pytest.raises(DataError, match=r"column 'a' \(row 40\); replace them"):
        dm.setup("fit")


# -- 2. encoding --------------------------------------------------------------------------------
def test_a_latin1_file_reads_with_the_encoding_option(tmp_path):
    _latin1(tmp_path / "t.csv")
    dm = TabularDataModule(path=str(tmp_path / "t.csv"), target="label", encoding="latin-1")
    dm.setup("fit")
    assert dm.prep.state["categories"]["city"] == ["Köln", "Malmö", "Zürich"]
    assert dm.hparams.encoding == "latin-1"  # saved, so predicting reads files the same way


def test_a_decode_error_without_an_encoding_option_says_to_resave(tmp_path):
    _latin1(tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"\(byte 0xfc at line 2\); re-save it as UTF-8$"):
        read_table(tmp_path / "t.csv")


# -- 3. separators ------------------------------------------------------------------------------
def test_a_semicolon_file_is_read_with_a_warning(tmp_path):
    make_table(60).to_csv(tmp_path / "t.csv", index=False, sep=";")
    dm = TabularDataModule(path=str(tmp_path / "t.csv"), target="label")
    with pytest.warns(DataWarning) as caught:
        dm.setup("fit")
    assert any(
        "has a single column when split at commas, but its header 'a;b;c;d;label' is split by "
        "';': reading it as ';'-separated (5 columns); set datamodule.sep=';' to say so"
        in str(w.message)
        for w in caught
    )
    assert dm.prep.features == ["a", "b", "c", "d"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # said so: no warning
        frame = read_table(tmp_path / "t.csv", sep=";")
    assert list(frame.columns) == ["a", "b", "c", "d", "label"]


def test_tab_separated_files_read_with_sep_tab_or_by_detection(tmp_path):
    make_table(30).to_csv(tmp_path / "t.csv", index=False, sep="\t")
    with pytest.warns(DataWarning, match="reading it as tab-separated"):
        assert read_table(tmp_path / "t.csv").shape == (30, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert read_table(tmp_path / "t.csv", sep="tab").shape == (30, 5)


def test_decimal_commas_in_a_semicolon_file_are_read_as_numbers(tmp_path):
    frame = make_table(40)
    frame.to_csv(tmp_path / "t.csv", index=False, sep=";", decimal=",")
    with pytest.warns(DataWarning, match=r"decimal comma .* in column\(s\) \['a', 'b', 'c', 'd'\]"):
        read = read_table(tmp_path / "t.csv", sep=";")
    np.testing.assert_allclose(read[["a", "b", "c", "d"]], frame[["a", "b", "c", "d"]])


def test_a_semicolon_inside_a_one_column_header_is_not_taken_for_a_separator(tmp_path):
    (tmp_path / "notes.csv").write_text("note; remark\nhello\nworld; again\nbye\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        frame = read_table(tmp_path / "notes.csv")
    assert list(frame.columns) == ["note; remark"] and len(frame) == 3


# -- 4./6. targets that classification cannot use ---------------------------------------------
def test_few_float_classes_are_not_taken_for_a_continuous_target():
    frame = make_table(120)
    frame["label"] = frame["label"].map({"no": 0.0, "yes": 1.0})
    dm = TabularDataModule(frame=frame, target="label")
    dm.setup("fit")
    assert dm.class_names == ["0.0", "1.0"]


def test_many_rare_classes_are_one_warning_not_one_per_class():
    frame = make_table(160)
    frame.loc[:9, "label"] = [f"rare{k}" for k in range(10)]
    dm = TabularDataModule(frame=frame, target="label")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    rare = [str(w.message) for w in caught if "fewer than 3 rows" in str(w.message)]
    assert len(rare) == 1
    assert "10 of 12 classes have fewer than 3 rows ('rare0': 1, 'rare1': 1," in rare[0]
    assert "merge rare classes" in rare[0]


def test_a_test_file_may_hold_a_single_class(tmp_path):
    make_table(80).to_csv(tmp_path / "train.csv", index=False)
    test = make_table(40, seed=2)
    test[test["label"] == "yes"].to_csv(tmp_path / "test.csv", index=False)
    dm = TabularDataModule(
        path=str(tmp_path / "train.csv"), target="label", test_path=str(tmp_path / "test.csv")
    )
    dm.setup("fit")
    assert set(dm.test_data[2].tolist()) == {1}


# -- 5. categories stored as whole numbers -----------------------------------------------------
@pytest.mark.parametrize("encoding", ["onehot", "embedding"])
def test_whole_number_categories_match_when_a_gap_makes_the_column_float(encoding):
    frame = make_table(120)
    frame["zip"] = np.random.default_rng(0).choice([10115, 20095, 80331], size=len(frame))
    dm = TabularDataModule(
        frame=frame,
        target="label",
        column_types={"zip": "categorical"},
        categorical_encoding=encoding,
    )
    dm.setup("fit")
    assert dm.prep.state["categories"]["zip"] == ["10115", "20095", "80331"]
    new = frame.drop(columns="label").head(3).assign(zip=[10115, np.nan, 20095])
    assert new["zip"].dtype == np.float64  # pandas made it float for the gap
    x_num, x_cat = dm.prep.transform(new, "datamodule.predict_path")
    if encoding == "onehot":  # unknown, 10115, 20095, 80331
        assert x_num[:, 4:].tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]]
    else:
        assert x_cat[:, 0].tolist() == [1, 0, 2]


def test_categories_fitted_on_a_float_column_match_integers():
    frame = make_table(120)
    zips = np.random.default_rng(0).choice([10115.0, 20095.0, np.nan], size=len(frame))
    frame["zip"] = zips
    dm = TabularDataModule(
        frame=frame,
        target="label",
        column_types={"zip": "categorical"},
        categorical_encoding="embedding",
    )
    dm.setup("fit")
    assert dm.prep.state["categories"]["zip"] == ["10115", "20095"]
    new = frame.drop(columns="label").head(2).assign(zip=[20095, 10115])
    assert dm.prep.transform(new, "predict")[1][:, 0].tolist() == [2, 1]
    dm.prep.state["categories"]["zip"] = ["10115.0", "20095.0"]  # as older checkpoints saved
    assert dm.prep.transform(new, "predict")[1][:, 0].tolist() == [2, 1]


# -- 7. predicting needs only predict_path ------------------------------------------------------
def test_predicting_needs_only_predict_path_and_the_fitted_state(tmp_path):
    make_table(80).to_csv(tmp_path / "train.csv", index=False)
    new = make_table(5, seed=4).drop(columns="label")
    new.to_csv(tmp_path / "new.csv", index=False)
    trained = TabularDataModule(path=str(tmp_path / "train.csv"), target="label")
    trained.setup("fit")
    dm = TabularDataModule(predict_path=str(tmp_path / "new.csv"))  # no path, no target
    dm.load_state_dict(trained.state_dict())
    dm.setup("predict")
    expected = trained.prep.transform(new, "predict")
    assert all(a.equal(b) for a, b in zip(dm.predict_data, expected))
    with pytest.raises(ConfigError, match="training and testing need the labelled table"):
        dm.setup("fit")
    with pytest.raises(ConfigError, match="datamodule.target is required"):
        TabularDataModule(path="x.csv", predict_path="new.csv").setup("fit")
    with pytest.raises(ConfigError, match="or datamodule.predict_path=FILE to predict; got none"):
        TabularDataModule()


def test_the_predict_preset_runs_with_only_predict_path_and_ckpt_path(tmp_path):
    make_table(120).to_csv(tmp_path / "train.csv", index=False)
    make_table(5, seed=4).drop(columns="label").to_csv(tmp_path / "new.csv", index=False)
    trained = run(
        compose(
            "tabular_classification",
            [
                f"datamodule.path={tmp_path / 'train.csv'}",
                "datamodule.target=label",
                "debug=tiny",
                f"output_dir={tmp_path}/fit",
            ],
        )
    )
    predicted = run(
        compose(
            "tabular_classification",
            [
                "mode=predict",
                f"ckpt_path={trained['best_checkpoint']}",
                f"datamodule.predict_path={tmp_path / 'new.csv'}",
                f"output_dir={tmp_path}/predict",
            ],
        )
    )
    assert predicted["predictions"]["rows"] == 5
