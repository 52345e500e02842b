"""Forecasting: the time grid, splits in time, lazy windows, baselines, units, predict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_on_file, write_demand_csv

from datamodules._table_prep import DataWarning
from datamodules.forecast import (
    ForecastDataModule,
    SyntheticDemandDataModule,
    calendar_features,
    default_season,
)
from tasks.api import compose, run
from tasks.errors import ConfigError, DataError
from tasks.forecast import Forecasting
from tasks.nets.forecast import build_forecast_net


def hourly(steps: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    time = pd.date_range("2024-03-04", periods=steps, freq="h")
    value = 10 + np.sin(2 * np.pi * np.arange(steps) / 24) + rng.normal(0, 0.1, steps)
    return pd.DataFrame({"when": time.strftime("%Y-%m-%d %H:%M"), "load": value})


def datamodule(frame: pd.DataFrame, tmp_path, **options) -> ForecastDataModule:
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    options.setdefault("lookback", 24)
    return ForecastDataModule(path=str(path), **options)


# -- time grid and missing values ----------------------------------------------------------
def test_rows_out_of_order_are_sorted_with_a_warning(tmp_path):
    frame = hourly()
    dm = datamodule(frame.sample(frac=1.0, random_state=0), tmp_path)
    dm.setup("fit")
    ordered = datamodule(frame, tmp_path / ".." / tmp_path.name)
    ordered.setup("fit")
    assert torch.equal(dm.series, ordered.series)
    assert any("not in time order" in w for w in dm.data_warnings)


def test_duplicated_times_are_an_error_naming_them(tmp_path):
    frame = hourly()
    frame = pd.concat([frame, frame.iloc[[5, 9]]])
    with pytest.raises(DataError, match=r"duplicated times 2024-03-04 05:00:00, 2024-03-04 09"):
        datamodule(frame, tmp_path).setup("fit")


def test_a_time_off_the_grid_is_an_error(tmp_path):
    frame = hourly()
    frame.loc[7, "when"] = "2024-03-04 07:30"
    with pytest.raises(DataError, match=r"07:30:00 are off the 'h' grid"):
        datamodule(frame, tmp_path).setup("fit")


def test_unreadable_times_name_their_rows(tmp_path):
    frame = hourly()
    frame.loc[3, "when"] = "not a time"
    with pytest.raises(DataError, match=r"rows 3 \(e.g. 'not a time'\)"):
        datamodule(frame, tmp_path).setup("fit")


def berlin(steps: int = 24 * 14) -> pd.DataFrame:
    """Hourly local times across the switch to summer time (2024-03-31): +01:00, +02:00."""
    frame = hourly(steps)
    local = pd.date_range("2024-03-25", periods=steps, freq="h", tz="Europe/Berlin")
    frame["when"] = [t.isoformat() for t in local]
    return frame


def test_daylight_saving_offsets_become_utc_with_a_warning(tmp_path):
    frame = berlin()
    assert frame["when"].iloc[145:147].tolist() == [
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",
    ]
    dm = datamodule(frame, tmp_path, val_start="2024-04-04 00:00")
    with pytest.warns(DataWarning, match="converted its times to UTC"):
        dm.setup("fit")
    assert dm.data_warnings == [
        "datamodule.path: the time column 'when' has several UTC offsets (+01:00, +02:00; "
        "daylight saving?); converted its times to UTC"
    ]
    assert str(dm.time.tz) == "UTC" and len(dm.time) == len(frame)  # one grid, no gap
    assert dm.time[0] == pd.Timestamp("2024-03-24 23:00", tz="UTC")
    assert dm.bounds["val"][0] == 24 * 10 + 1  # a naive val_start is read in UTC
    naive = datamodule(hourly(), tmp_path)
    naive.setup("fit")
    assert naive.time.tz is None and not naive.data_warnings


def test_times_with_and_without_an_offset_are_one_line_in_the_cli(tmp_path):
    frame = berlin()
    frame.loc[5, "when"] = "2024-03-25 05:00"
    with pytest.raises(DataError, match=r"mixes times with and without a UTC offset .*rows 5"):
        datamodule(frame, tmp_path).setup("fit")
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    result = run_on_file(
        "forecast_csv",
        tmp_path / "mixed.csv",
        "load",
        "debug=tiny",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 2, result.stderr
    assert "error: datamodule.path: the time column 'when' mixes times with and" in result.stderr


def test_missing_times_and_nans_follow_the_policy(tmp_path):
    frame = hourly()
    frame.loc[50, "load"] = np.nan
    gappy = frame.drop(index=[80, 81])  # two missing hours
    with pytest.raises(DataError, match=r"3 steps have no value \(2 missing times.*set "):
        datamodule(gappy, tmp_path).setup("fit")

    ffill = datamodule(gappy, tmp_path, missing="ffill")
    ffill.setup("fit")
    raw = (
        ffill.series[:, 0].numpy() * ffill.fitted_state["scale"][0]
        + ffill.fitted_state["center"][0]
    )
    assert len(raw) == 200
    np.testing.assert_allclose(raw[[80, 81]], frame.load[79], rtol=1e-5)
    assert raw[50] == pytest.approx(frame.load[49], rel=1e-5)

    linear = datamodule(gappy, tmp_path, missing="interpolate")
    linear.setup("fit")
    raw = (
        linear.series[:, 0].numpy() * linear.fitted_state["scale"][0]
        + linear.fitted_state["center"][0]
    )
    expected = frame.load[79] + (frame.load[82] - frame.load[79]) * np.array([1, 2]) / 3
    np.testing.assert_allclose(raw[[80, 81]], expected, rtol=1e-5)
    assert any("filled 3 steps (2 missing times) by interpolate" in w for w in linear.data_warnings)

    leading = frame.copy()
    leading.loc[0, "load"] = np.nan
    with pytest.raises(DataError, match="starts with missing values"):
        datamodule(leading, tmp_path, missing="ffill").setup("fit")


def test_column_errors_name_the_fix(tmp_path):
    frame = hourly().assign(site="north", temp=1.0)
    with pytest.raises(DataError, match=r"no column 'lod' \(datamodule.target\). Did you mean"):
        datamodule(frame, tmp_path, target="lod").setup("fit")
    with pytest.raises(DataError, match=r"columns \['site'\] are not numeric"):
        datamodule(frame, tmp_path, target="load", covariates=["site"]).setup("fit")
    with pytest.raises(ConfigError, match=r"datamodule.target=NAME \(numeric columns: \['load', "):
        datamodule(frame, tmp_path).setup("fit")
    with pytest.raises(DataError, match=r"no time column 'time'"):
        datamodule(frame, tmp_path, target="load", time_column="time").setup("fit")
    with pytest.raises(ConfigError, match="exactly one source"):
        ForecastDataModule()
    with pytest.raises(ConfigError, match="Did you mean 'airline'"):
        ForecastDataModule(dataset="airlines")
    with pytest.raises(DataError, match="fewer than horizon=30"):
        datamodule(hourly(), tmp_path, horizon=30, test_fraction=0.1).setup("fit")


@pytest.mark.parametrize(
    ("freq", "season"),
    [("30min", 48), ("h", 24), ("15min", 96), ("D", 7), ("W-SUN", 52), ("MS", 12), ("QS", 4)],
)
def test_default_season_follows_the_frequency(freq, season):
    assert default_season(freq) == season


def test_calendar_features_are_cyclic():
    time = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 06:00", "2024-01-08 00:00"])
    features = calendar_features(time, ["time_of_day", "day_of_week"])
    np.testing.assert_allclose(features[0], [0, 1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(features[1, :2], [1, 0], atol=1e-12)  # a quarter day
    np.testing.assert_allclose(features[2], features[0], atol=1e-12)  # a week later


def test_monthly_data_infers_its_frequency_and_month_features(tmp_path):
    dm = ForecastDataModule(dataset="airline", lookback=12, log_target=True)
    dm.setup("fit")
    assert dm.fitted_state["freq"] == "MS" and dm.fitted_state["calendar"] == ["month"]
    assert dm.season == 12 and dm.data_facts()["target_log"] is True


@pytest.mark.parametrize(
    ("freq", "calendar"),
    [("D", ["day_of_week", "day_of_year"]), ("W-SUN", ["day_of_year"]), ("QS", ["month"])],
)
def test_auto_calendar_gives_the_position_in_the_year(tmp_path, freq, calendar):
    """Daily, weekly and quarterly data see where in the year each step falls (a yearly
    cycle longer than the window is otherwise invisible)."""
    time = pd.date_range("2001-01-07", periods=120, freq=freq)
    frame = pd.DataFrame({"when": time.strftime("%Y-%m-%d"), "load": np.arange(120.0)})
    dm = datamodule(frame, tmp_path, lookback=8)
    dm.setup("fit")
    assert dm.fitted_state["calendar"] == calendar
    assert dm.data_facts()["num_inputs"] == 1 + 2 * len(calendar)


# -- splits, scaling and windows -----------------------------------------------------------
def test_every_window_targets_only_its_own_period(tmp_path):
    dm = datamodule(hourly(300), tmp_path, horizon=5, val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    lookback, horizon = 24, 5
    val, test = dm.bounds["val"][0], dm.bounds["test"][0]
    assert (val, test) == (180, 240)
    train, vals, tests = dm.starts["train"], dm.starts["val"], dm.starts["test"]
    assert (train + lookback + horizon).max() <= val  # no training target after the boundary
    assert (vals + lookback).min() == val and (vals + lookback + horizon).max() == test
    assert (tests + lookback).min() == test and (tests + lookback + horizon).max() == 300
    # scaling comes from the training period only
    values = hourly(300).load.to_numpy()
    assert dm.fitted_state["center"][0] == pytest.approx(values[:val].mean())
    assert dm.fitted_state["scale"][0] == pytest.approx(values[:val].std())


def test_split_by_dates(tmp_path):
    dm = datamodule(hourly(), tmp_path, val_start="2024-03-09 00:00", test_start="2024-03-10")
    dm.setup("fit")
    assert dm.time[dm.bounds["val"][0]] == pd.Timestamp("2024-03-09")
    assert dm.time[dm.bounds["test"][0]] == pd.Timestamp("2024-03-10")
    with pytest.raises(ConfigError, match="outside the data"):
        datamodule(hourly(), tmp_path, test_start="2030-01-01").setup("fit")


def test_batches_are_gathered_from_strided_views(tmp_path):
    dm = datamodule(hourly(), tmp_path, horizon=3, season=24, batch_size=7)
    dm.setup("fit")
    assert dm.train_data[0].dim() == 1  # only window starts are stored
    batch = next(iter(dm.test_dataloader()))
    start = batch["start"]
    series, target = dm.series, dm.target_series
    for i, s in enumerate(start.tolist()):
        assert torch.equal(batch["x"][i], series[s : s + 24])
        assert torch.equal(batch["y"][i], target[s + 24 : s + 27])
        assert torch.equal(batch["naive"][i], target[s + 23].expand(3, 1))
        assert torch.equal(batch["seasonal_naive"][i], target[s : s + 3])  # one day back
    assert batch["x"].shape == (7, 24, 1 + 4)  # load + sin/cos of time of day and weekday
    # training and validation batches carry only what the model needs: baselines are
    # gathered for test batches alone (they are scored there)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert set(next(iter(loader))) == {"x", "y"}


# -- networks and task -----------------------------------------------------------------------
@pytest.mark.parametrize("network", ["lstm", "gru", "mlp", "cnn"])
def test_networks_map_windows_to_horizon_by_targets(network):
    net = build_forecast_net(network, inputs=5, horizon=4, targets=2, lookback=12, hidden_size=8)
    assert net(torch.randn(3, 12, 5)).shape == (3, 4, 2)


def test_cnn_is_causal_and_unknown_networks_are_named():
    net = build_forecast_net("cnn", inputs=1, horizon=1, targets=1, lookback=16, hidden_size=4)
    convs = net.convs
    x = torch.randn(1, 1, 16)
    y = x.clone()
    y[..., 10:] += 1.0
    assert torch.equal(convs(x)[..., :10], convs(y)[..., :10])  # nothing leaks backwards
    with pytest.raises(ConfigError, match="Did you mean 'lstm'"):
        build_forecast_net("lstn", 1, 1, 1, 4)


def test_residual_and_log_units():
    task = Forecasting(
        num_inputs=2,
        lookback=3,
        residual=True,
        target_center=[1.0],
        target_scale=[2.0],
        target_log=True,
    )
    x = torch.zeros(1, 3, 2)
    x[0, -1, 0] = 0.5
    with torch.no_grad():
        expected = task.model(x) + 0.5
        assert torch.allclose(task(x), expected)
        assert torch.allclose(task.unscale(torch.tensor([0.5])), torch.exp(torch.tensor(2.0)))


# -- end to end ------------------------------------------------------------------------------
def test_multi_step_run_reports_original_units_and_baselines(tmp_path):
    csv = write_demand_csv(tmp_path / "demand.csv", steps=24 * 7 * 4)
    setup = [
        f"datamodule.path={csv}",
        "datamodule.target=demand",
        "datamodule.covariates=[temperature]",
        "datamodule.horizon=3",
        "task.network=gru",
    ]
    train = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false"]
    summary = run(compose("forecast_csv", [*setup, *train, f"output_dir={tmp_path / 'run'}"]))
    metrics, baseline = summary["metrics"], summary["baseline"]
    table = pd.read_csv(tmp_path / "run" / "test_forecasts.csv")
    assert set(table.step) == {1, 2, 3}
    # the logged metrics are those of the written table, in megawatt-like original units
    assert metrics["test/mse"] == pytest.approx(((table.forecast - table.truth) ** 2).mean(), 1e-4)
    assert metrics["test/mae"] == pytest.approx((table.forecast - table.truth).abs().mean(), 1e-4)
    # the seasonal naive baseline is the value 24 hours before, read back from the file
    raw = pd.read_csv(csv, index_col="timestamp")["demand"]
    day_before = (pd.to_datetime(table.time) - pd.Timedelta(hours=24)).dt.strftime("%Y-%m-%d %H:%M")
    np.testing.assert_allclose(table.seasonal_naive, raw.loc[day_before].to_numpy(), rtol=1e-5)
    seasonal_mse = ((table.seasonal_naive - table.truth) ** 2).mean()
    assert baseline["baseline/seasonal_naive_mse"] == pytest.approx(seasonal_mse, rel=1e-4)
    assert metrics["test/skill"] == pytest.approx(1 - metrics["test/mse"] / seasonal_mse, rel=1e-3)
    assert "seasonal naive" in summary["notes"][0]
    for name in ("forecast.png", "forecast_residuals.png"):
        assert (tmp_path / "run" / name).stat().st_size > 10_000

    # forecast beyond the end of the file, from the checkpoint
    ckpt = summary["best_checkpoint"]
    run(
        compose(
            "forecast_csv",
            [*setup, "mode=predict", f"ckpt_path={ckpt}", f"output_dir={tmp_path / 'predict'}"],
        )
    )
    future = pd.read_csv(tmp_path / "predict" / "predictions.csv")
    assert future.time.tolist() == [
        "2024-01-29 00:00:00",
        "2024-01-29 01:00:00",
        "2024-01-29 02:00:00",
    ]
    assert future.step.tolist() == [1, 2, 3]
    assert future.demand.between(raw.min() * 0.5, raw.max() * 1.5).all()


def test_a_model_worse_than_seasonal_naive_says_so(tmp_path):
    csv = write_demand_csv(tmp_path / "demand.csv")
    cfg = compose(
        "forecast_csv",
        [
            f"datamodule.path={csv}",
            "datamodule.target=demand",
            "task.lr=1e-7",  # an untrained network: the seasonal naive forecast must win
            "task.relative=false",  # (a relative model starts from a least-squares fit)
            "debug=tiny",
            f"output_dir={tmp_path}",
        ],
    )
    summary = run(cfg)
    assert summary["metrics"]["test/skill"] < 0
    assert "does NOT beat the seasonal naive" in summary["notes"][0]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["notes"] == summary["notes"]


def test_predict_rejects_a_file_with_other_columns(tmp_path):
    dm = SyntheticDemandDataModule(steps=24 * 7 * 2)
    dm.setup("fit")
    other = tmp_path / "other.csv"
    dm.load_frame().rename(columns={"demand": "load"}).to_csv(other, index=False)
    restored = SyntheticDemandDataModule(steps=24 * 7 * 2, predict_path=str(other))
    restored.load_state_dict(dm.state_dict())
    with pytest.raises(DataError, match=r"no column 'demand'"):
        restored.setup("predict")


def test_several_targets_are_forecast_together(tmp_path):
    csv = write_demand_csv(tmp_path / "demand.csv")
    setup = [
        f"datamodule.path={csv}",
        "datamodule.target=[demand,temperature]",
        "datamodule.horizon=2",
        "task.network=mlp",
    ]
    summary = run(compose("forecast_csv", [*setup, "debug=tiny", f"output_dir={tmp_path / 'r'}"]))
    table = pd.read_csv(tmp_path / "r" / "test_forecasts.csv")
    assert set(table.target) == {"demand", "temperature"} and set(table.step) == {1, 2}
    # R^2 is the mean of the two targets' R^2, each in its own units
    r2 = []
    for _, part in table.groupby("target"):
        ss_res = ((part.forecast - part.truth) ** 2).sum()
        r2.append(1 - ss_res / ((part.truth - part.truth.mean()) ** 2).sum())
    assert summary["metrics"]["test/r2"] == pytest.approx(np.mean(r2), abs=1e-3)
    ckpt = summary["best_checkpoint"]
    predict = [*setup, "mode=predict", f"ckpt_path={ckpt}", f"output_dir={tmp_path / 'p'}"]
    run(compose("forecast_csv", predict))
    future = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert list(future.columns) == ["row", "time", "step", "demand", "temperature"]
    assert len(future) == 2


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"calendar": ["hour"]}, ConfigError, r"unknown features \['hour'\]"),
        ({"lookback": 0}, ConfigError, r"datamodule.lookback must be >= 1, got 0"),
        ({"freq": "fortnightly"}, ConfigError, r"freq='fortnightly' is not a pandas frequency"),
        ({"lookback": 150, "test_fraction": 0.2}, DataError, r"training period has \d+ steps"),
        ({"target": "load", "covariates": ["load"]}, ConfigError, r"\['load'\] are used twice"),
    ],
)
def test_bad_options_name_the_fix(tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        datamodule(hourly(), tmp_path, **options).setup("fit")


def test_log_target_needs_positive_values(tmp_path):
    frame = hourly()
    frame.loc[4, "load"] = 0.0
    with pytest.raises(DataError, match=r"log_target=true needs positive targets; \['load'\]"):
        datamodule(frame, tmp_path, log_target=True).setup("fit")


def test_predict_file_must_match_the_training_data(tmp_path):
    dm = datamodule(hourly(), tmp_path)
    dm.setup("fit")
    short, daily = tmp_path / "short.csv", tmp_path / "daily.csv"
    hourly(10).to_csv(short, index=False)
    frame = hourly(60).assign(when=pd.date_range("2024-01-01", periods=60, freq="D"))
    frame.to_csv(daily, index=False)
    for path, message in (
        (short, r"10 steps, fewer than lookback=24"),
        (daily, r"frequency 'D', the model was trained on 'h'"),
    ):
        restored = ForecastDataModule(path=str(tmp_path / "series.csv"), predict_path=str(path))
        restored.load_state_dict(dm.state_dict())
        with pytest.raises(DataError, match=message):
            restored.setup("predict")


def test_network_and_size_errors_are_named():
    with pytest.raises(ConfigError, match=r"num_targets=3 exceeds num_inputs=2"):
        Forecasting(num_inputs=2, num_targets=3)
    with pytest.raises(ConfigError, match=r"network_options do not fit network 'cnn'"):
        build_forecast_net("cnn", 1, 1, 1, 8, hidden_sizes=[4])


def test_constant_target_is_named_and_its_undefined_scores_are_null(tmp_path):
    """R^2 and skill are 0/0 on a series that never moves: a warning, null in strict JSON."""
    steps = 24 * 21
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=steps, freq="h"),
            "demand": np.full(steps, 5.0),
            "temperature": np.sin(np.arange(steps) / 5),
        }
    )
    frame.to_csv(tmp_path / "flat.csv", index=False)
    result = run_on_file(
        "forecast_csv",
        tmp_path / "flat.csv",
        "demand",
        "debug=tiny",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: datamodule.target: 'demand' is constant (5) in the training part" in (
        result.stderr
    )
    text = (tmp_path / "run" / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert summary["metrics"]["test/skill"] is None
    assert "test/skill" in summary["undefined_metrics"]
    assert any("is constant" in w for w in summary["data_warnings"])
