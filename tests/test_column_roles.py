"""Column roles of a table: identifier-like columns left out, dates as calendar features, and
an extreme-value check that holds for skewed but valid data."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules._table_prep import DataWarning, _outliers, date_format
from datamodules.tabular import TabularDataModule
from tasks.api import run
from tasks.errors import ConfigError, DataError

FIRST = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas"]
LAST = ["Smith", "Jones", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Thomas", "Roberts"]
LAST += ["Walker", "Wright", "Hughes", "Green", "Hall", "Wood", "Clarke", "Harris", "Baker"]
LAST += ["King", "Lewis", "Allen", "Young", "Hill", "Scott", "Moore", "Adams", "Ward", "Turner"]


def passengers(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """A Titanic-like table: a row number, a unique name per row, infants among adult ages,
    a skewed fare with a distinct float in every row; survival depends on sex, class, age."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["male", "female"], n)
    title = np.where(sex == "male", "Mr.", "Mrs.")
    people = [(last, first, initial) for last in LAST for first in FIRST for initial in "ABCDEFGH"]
    chosen = [people[k] for k in rng.permutation(len(people))[:n]]
    name = [f"{last}, {t} {first} {i}." for (last, first, i), t in zip(chosen, title)]
    age = np.clip(rng.normal(30, 14, n), 1, 80).round()
    infants = rng.choice(n, size=max(3, n // 30), replace=False)
    age[infants] = rng.choice([0.42, 0.67, 0.75, 0.83, 0.92], len(infants))
    klass = rng.integers(1, 4, n)
    fare = rng.lognormal(3, 1, n) * (4 - klass) + rng.random(n) / 100
    score = 2.0 * (sex == "female") - 0.9 * (klass - 2) - 0.03 * (age - 30) + rng.normal(0, 1, n)
    return pd.DataFrame(
        {
            "passenger_id": np.arange(1, n + 1),
            "name": name,
            "sex": sex,
            "age": age,
            "klass": klass,
            "fare": fare,
            "survived": np.where(score > 0.6, "yes", "no"),
        }
    )


def _setup(**kwargs) -> tuple[TabularDataModule, list[str]]:
    dm = TabularDataModule(target=kwargs.pop("target", "survived"), **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    return dm, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


@pytest.fixture
def csv(tmp_path):
    def write(frame: pd.DataFrame, name: str = "t.csv") -> str:
        frame.to_csv(tmp_path / name, index=False)
        return str(tmp_path / name)

    return write


# -- identifier-like columns -------------------------------------------------------------------
def test_a_name_and_a_row_number_are_left_out_with_a_warning_naming_the_option(csv):
    dm, found = _setup(path=csv(passengers()))
    assert set(dm.prep.excluded) == {"passenger_id", "name"}
    assert sorted(dm.prep.features) == ["age", "fare", "klass", "sex"]
    for col in ("passenger_id", "name"):
        (message,) = [m for m in found if f"column {col!r}" in m]
        assert f"left out of the features. Keep it with datamodule.keep_columns=[{col}]" in message
    assert any("'name' has a distinct value in" in m and "like names or ids" in m for m in found)
    assert any("'passenger_id' is a unique, monotonic integer, like a row id" in m for m in found)
    assert len(dm.data_warnings) == 2  # the infants in 'age' are no extreme values
    # the fitted state keeps the decision, so a checkpoint restores it
    restored = TabularDataModule(predict_path=csv(passengers(10, seed=4), "new.csv"))
    restored.load_state_dict(dm.state_dict())
    assert restored.prep.excluded == dm.prep.excluded
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # no "ignoring columns" for them either
        restored.setup("predict")
    assert restored.predict_data[0].shape[1] == dm.train_data[0].shape[1]


def test_leaving_them_out_gives_the_same_data_as_dropping_them_by_hand(csv):
    """The same tensors, so the same training and accuracy, as with drop_columns."""
    path = csv(passengers())
    auto, _ = _setup(path=path)
    by_hand, found = _setup(path=path, drop_columns=["passenger_id", "name"])
    assert not found  # dropped on purpose: nothing to warn about
    for split in ("train_data", "val_data", "test_data"):
        for mine, theirs in zip(getattr(auto, split), getattr(by_hand, split)):
            assert torch.equal(mine, theirs)


def test_keep_columns_keeps_them(csv):
    dm, found = _setup(path=csv(passengers()), keep_columns=["name", "passenger_id"])
    assert dm.prep.excluded == {}
    assert {"name", "passenger_id"} <= set(dm.prep.features)
    assert "name" in dm.prep.state["embedded"]
    assert not [m for m in found if "'name'" in m or "'passenger_id'" in m]


def test_columns_the_user_typed_or_listed_are_never_left_out(csv):
    path = csv(passengers())
    typed, _ = _setup(path=path, column_types={"passenger_id": "numeric"})
    assert set(typed.prep.excluded) == {"name"}
    listed, _ = _setup(path=path, features=["name", "sex", "age"])
    assert listed.prep.excluded == {} and listed.prep.features == ["age", "name", "sex"]


def test_a_shuffled_row_number_is_an_identifier_but_unique_measurements_are_not():
    frame = passengers().drop(columns="name").sample(frac=1.0, random_state=1)
    rng = np.random.default_rng(2)
    frame["population"] = rng.choice(10**6, size=len(frame), replace=False)  # wide span
    frame["visits"] = rng.poisson(20, size=len(frame))  # whole numbers that repeat
    dm, _ = _setup(frame=frame.reset_index(drop=True))
    assert list(dm.prep.excluded) == ["passenger_id"]
    assert "spanning about the row count (1 to 240 over 240 rows)" in dm.data_warnings[0]
    assert {"fare", "population", "visits"} <= set(dm.prep.features)


def test_free_text_is_left_out_but_repeated_multi_word_categories_are_not():
    frame = passengers().drop(columns=["name", "passenger_id"])
    rng = np.random.default_rng(3)
    words = ["good", "trip", "bad", "cabin", "food", "was", "very", "cold", "nice", "crew"]
    reviews = [" ".join(rng.choice(words, 8)) for _ in range(len(frame) // 2)]
    frame["review"] = rng.choice(reviews, len(frame))  # some said twice: not unique per row
    frame["deck"] = rng.choice(["upper sun deck level", "lower cargo deck level"], len(frame))
    dm, found = _setup(frame=frame)
    assert list(dm.prep.excluded) == ["review"]
    assert "holds free text (8 words per value, median), not categories" in found[0]
    assert "deck" in dm.prep.features


def test_keep_columns_that_do_not_exist_or_clash_are_errors(csv):
    path = csv(passengers())
    with pytest.raises(DataError, match="datamodule.keep_columns: column 'nmae' \\(did you mean"):
        _setup(path=path, keep_columns=["nmae"])
    with pytest.raises(ConfigError, match="keep_columns lists \\['name'\\], which is also"):
        _setup(path=path, keep_columns=["name"], drop_columns=["name"])


def test_a_table_of_identifiers_only_is_an_error():
    frame = passengers()[["passenger_id", "name", "survived"]]
    with pytest.raises(DataError, match="every feature column looks like an identifier"):
        _setup(frame=frame)


def test_the_cli_preset_warns_and_lists_it_in_the_summary(tmp_path, csv):
    args = [
        f"datamodule.path={csv(passengers(120))}",
        "datamodule.target=survived",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    with pytest.warns(DataWarning) as caught:
        summary = run("tabular_classification", [*args, f"output_dir={tmp_path}/run"])
    assert any("datamodule.keep_columns=[name]" in str(w.message) for w in caught)
    assert sum("left out of the features" in w for w in summary["data_warnings"]) == 2
    keep = "datamodule.keep_columns=[name,passenger_id]"
    kept = run("tabular_classification", [*args, keep, f"output_dir={tmp_path}/kept"])
    assert not any("left out" in w for w in kept.get("data_warnings", []))


# -- dates ---------------------------------------------------------------------------------------
def bookings(n: int = 200, seed: int = 0, fmt: str = "%Y-%m-%d", times: bool = False):
    """Bookings whose label is the season of the booking date."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2019, 1, 1)
    when = [
        start + dt.timedelta(days=int(d), hours=int(h)) for d, h in rng.integers(0, 900, (n, 2))
    ]
    frame = pd.DataFrame(
        {
            "booked": [w.strftime(fmt) if times else w.date().strftime(fmt) for w in when],
            "guests": rng.integers(1, 5, n),
            "label": ["summer" if w.month in (6, 7, 8) else "other" for w in when],
        }
    )
    return frame, [w if times else dt.datetime.combine(w.date(), dt.time()) for w in when]


def _calendar(dm: TabularDataModule, x_num: torch.Tensor, col: str) -> dict[str, np.ndarray]:
    """The calendar columns of ``col`` in original units (undoing the standardisation)."""
    state, names = dm.prep.state, dm.prep.feature_names
    out = {}
    for part in state["dates"][col]["parts"]:
        j = state["numeric"].index(f"{col}__{part}")
        column = x_num[:, names.index(f"{col}__{part}")].double().numpy()
        out[part] = column * state["scale"][j] + state["center"][j]
    return out


def _expected(when: list[dt.datetime], parts: list[str]) -> dict[str, np.ndarray]:
    values = {
        "year": [w.year for w in when],
        "month": [w.month for w in when],
        "day_of_week": [w.weekday() for w in when],
        "day_of_year": [w.timetuple().tm_yday for w in when],
        "hour": [w.hour for w in when],
    }
    return {p: np.asarray(values[p], dtype=np.float64) for p in parts}


def test_a_date_column_becomes_calendar_features_and_a_test_file_gets_the_same(csv):
    train, _ = bookings()
    test, when = bookings(60, seed=1)
    dm, _ = _setup(path=csv(train), test_path=csv(test, "test.csv"), target="label")
    assert dm.prep.state["dates"] == {
        "booked": {"format": "%Y-%m-%d", "parts": ["year", "month", "day_of_week", "day_of_year"]}
    }
    assert dm.prep.features == ["guests", "booked"]
    assert "booked=<unknown>" not in dm.prep.feature_names  # not a category
    got = _calendar(dm, dm.test_data[0], "booked")
    for part, values in _expected(when, list(got)).items():
        np.testing.assert_allclose(got[part], values, atol=1e-3, err_msg=part)


def test_day_first_dates_with_times_read_day_first_and_add_the_hour(csv):
    train, _ = bookings(fmt="%d/%m/%Y %H:%M", times=True)
    new, when = bookings(30, seed=2, fmt="%d/%m/%Y %H:%M", times=True)
    dm, _ = _setup(
        path=csv(train), target="label", predict_path=csv(new.drop(columns="label"), "new.csv")
    )
    assert dm.prep.state["dates"]["booked"]["format"] == "%d/%m/%Y %H:%M"
    assert dm.prep.state["dates"]["booked"]["parts"][-1] == "hour"
    dm.setup("predict")
    got = _calendar(dm, dm.predict_data[0], "booked")
    for part, values in _expected(when, list(got)).items():
        np.testing.assert_allclose(got[part], values, atol=1e-3, err_msg=part)


def test_dates_in_another_format_at_predict_time_are_an_error(csv):
    train, _ = bookings()
    new, _ = bookings(10, seed=3, fmt="%d.%m.%Y")
    dm = TabularDataModule(
        path=csv(train), target="label", predict_path=csv(new.drop(columns="label"), "new.csv")
    )
    dm.setup("fit")
    with pytest.raises(DataError, match="column 'booked' held dates written as '%Y-%m-%d' in"):
        dm.setup("predict")


def test_a_category_column_can_opt_out_of_dates_and_a_bad_forced_date_is_an_error():
    train, _ = bookings()
    dm, _ = _setup(frame=train, target="label", column_types={"booked": "categorical"})
    assert dm.prep.state["dates"] == {} and "booked" in dm.prep.state["categories"]
    train["code"] = [f"A{k}" for k in range(len(train))]
    with pytest.raises(DataError, match="column 'code' is declared a date, but its values"):
        _setup(frame=train, target="label", column_types={"code": "date"})


def test_a_datetime_column_of_a_dataframe_is_a_date_too():
    frame, when = bookings(fmt="%Y-%m-%d %H:%M", times=True)
    frame["booked"] = pd.to_datetime(frame["booked"])
    dm, _ = _setup(frame=frame, target="label")
    assert dm.prep.state["dates"]["booked"]["parts"][-1] == "hour"
    got = _calendar(dm, dm.prep.transform(frame, "frame")[0], "booked")
    for part, values in _expected(when, list(got)).items():
        np.testing.assert_allclose(got[part], values, atol=1e-3, err_msg=part)


def test_codes_and_words_are_not_dates():
    codes = pd.Series([f"A/5 {k}" for k in range(50)] + ["PC 17599"] * 10)
    words = pd.Series(["March", "April", "May"] * 20)
    year_month = pd.Series(["2020-01", "2020-02"] * 30)
    assert date_format(codes) is None and date_format(words) is None
    assert date_format(pd.Series(["2020-01-03", "2021-12-31", "n/a"] * 20)) is None  # 2/3 parse
    assert date_format(year_month) == "ISO8601"  # a month is a date (day 1)


# -- extreme values -----------------------------------------------------------------------------
def _extreme(values: np.ndarray, name: str = "x") -> list[str]:
    return _outliers(pd.Series(values, name=name))


def test_infant_ages_and_skewed_incomes_are_not_extreme():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        assert not _extreme(passengers(891, seed)["age"].to_numpy(), "age"), seed
        assert not _extreme(rng.lognormal(10.5, 0.8, 1000), "income"), seed
        assert not _extreme(rng.negative_binomial(1, 0.05, 500).astype(float), "count"), seed
        assert not _extreme(rng.normal(170, 9, 300), "height"), seed


@pytest.mark.parametrize("planted", [1e6, -999.0, 350.0])
def test_a_typo_or_sentinel_in_an_age_column_is_extreme(planted):
    ages = passengers(891)["age"].to_numpy().copy()
    ages[100] = planted
    (message,) = _extreme(ages, "age")
    assert f"column 'age' has 1 extreme value(s) (row 100: {planted:g};" in message


def test_a_cluster_of_sentinels_and_a_unit_mistake_are_extreme():
    ages = passengers(891)["age"].to_numpy().copy()
    ages[[5, 50, 500]] = -999
    assert "has 3 extreme value(s) (row 5: -999, row 50: -999, row 500: -999" in _extreme(ages)[0]
    heights = np.random.default_rng(0).normal(170, 9, 300)
    heights[7] = heights[7] / 100  # metres among centimetres
    assert "has 1 extreme value(s) (row 7: 1.7" in _extreme(heights)[0]


def test_a_planted_outlier_warns_through_the_datamodule_and_infants_do_not(csv):
    frame = passengers(300)
    dm, found = _setup(path=csv(frame), keep_columns=["passenger_id"], drop_columns=["name"])
    assert not [m for m in found if "extreme" in m]
    frame.loc[42, "age"] = 1e6
    dm, found = _setup(path=csv(frame), drop_columns=["name", "passenger_id"])
    assert [m for m in found if "column 'age' has 1 extreme value(s) (line 44: 1e+06" in m]
