"""Forecasting relative to the last value: trends and level shifts beyond the training range
(the ``forecast_csv`` preset's default, ``task.relative``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.api import compose, run
from tasks.forecast import RIDGE, Forecasting, RelativeForecaster
from tasks.nets.forecast import build_forecast_net

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def trend_csv(path, steps: int = 500, slope: float = 0.5, noise: float = 2.0, seed: int = 0):
    """A daily series: a straight line plus white noise."""
    rng = np.random.default_rng(seed)
    value = 200 + slope * np.arange(steps) + rng.normal(0, noise, steps)
    time = pd.date_range("2020-01-01", periods=steps, freq="D")
    pd.DataFrame({"date": time.strftime("%Y-%m-%d"), "value": value}).to_csv(path, index=False)
    return path


def monthly_sales_csv(path, years: int = 20, seed: int = 0):
    """Monthly values: a trend, a yearly cycle and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(12 * years)
    value = 100 + 0.8 * t + 20 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 3, len(t))
    time = pd.date_range("2000-01-01", periods=len(t), freq="MS").strftime("%Y-%m")
    pd.DataFrame({"month": time, "sales": value}).to_csv(path, index=False)
    return path


def windows(series: torch.Tensor, lookback: int, horizon: int) -> tuple[torch.Tensor, ...]:
    """Every window ``(N, lookback, 1)`` of a series and its next ``horizon`` values."""
    x = series.unfold(0, lookback, 1)[: len(series) - lookback - horizon + 1]
    y = series[lookback:].unfold(0, horizon, 1)
    return x.unsqueeze(-1), y[: len(x)].unsqueeze(-1)


def relative_model(lookback: int = 12, horizon: int = 3, targets: int = 1, inputs: int = 1):
    net = build_forecast_net("lstm", inputs, horizon, targets, lookback, hidden_size=8)
    return RelativeForecaster(net, targets, lookback, horizon)


def test_the_linear_part_is_fitted_and_extrapolates_a_trend():
    """Fitted on a noisy line, the forecast of windows ten times higher than any training
    value is the line continued: the least-squares fit, with the network adding nothing."""
    torch.manual_seed(0)
    t = torch.arange(300, dtype=torch.float64)
    train = (0.05 * t + 0.2 * torch.randn(300)).float()
    model = relative_model()
    x, y = windows(train, 12, 3)
    model.fit([{"x": x[:100], "y": y[:100]}, (x[100:], y[100:])])  # dicts or tuples
    assert bool(model.fitted)
    # the spread is the RMS change from the last value over the training windows
    change = x - x[:, -1:]
    assert float(model.spread) == pytest.approx(float(change.pow(2).mean().sqrt()), rel=1e-4)
    far = 0.05 * torch.arange(3000, 3040, dtype=torch.float32)  # steps 3000-3039, no noise
    fx, fy = windows(far, 12, 3)
    with torch.no_grad():
        pred = model(fx)
        assert torch.equal(model.net(fx), torch.zeros_like(pred))  # the head starts at zero
    error = (pred - fy).abs().max()
    assert error < 0.1, error  # the noise sd is 0.2; the level is ~150, training went to ~15


def test_relative_forecasts_move_with_the_level():
    """Adding a constant to a window's targets adds it to the forecast and changes nothing
    else, whatever the weights: the level never reaches the network."""
    torch.manual_seed(1)
    model = relative_model(targets=2, inputs=3)
    for p in model.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(5, 12, 3)
    shift = torch.tensor([100.0, -7.0, 0.0])  # the third input is a covariate: not shifted
    with torch.no_grad():
        moved = model(x + shift)
        np.testing.assert_allclose(moved - shift[:2], model(x), atol=1e-3)


def test_the_fit_sums_windows_over_processes():
    """``reduce`` sums the statistics over ranks: two ranks with the same windows give the
    fit of one."""
    torch.manual_seed(2)
    series = torch.randn(200).cumsum(0)
    x, y = windows(series, 12, 3)
    one, two = relative_model(), relative_model()
    one.fit([(x, y)])
    two.fit([(x, y)], reduce=lambda t: 2 * t)
    assert torch.allclose(one.weight, two.weight, atol=1e-5)
    assert torch.allclose(one.spread, two.spread)


def test_a_fitted_model_is_not_refitted_when_training_resumes():
    task = Forecasting(lookback=12, horizon=3, relative=True)
    assert isinstance(task.model, RelativeForecaster)
    state = task.state_dict()
    assert {"model.weight", "model.bias", "model.spread", "model.fitted"} <= set(state)
    task.model.fitted.fill_(True)  # as a checkpoint restores it

    def refuse():
        raise AssertionError("the training windows were read again")

    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_dataloader=refuse), global_step=0)
    task.trainer = trainer
    task.on_fit_start()
    restored = Forecasting(lookback=12, horizon=3, relative=True)
    restored.load_state_dict(task.state_dict())
    assert bool(restored.model.fitted)
    plain = Forecasting(lookback=12, horizon=3)
    assert not isinstance(plain.model, RelativeForecaster)  # off unless asked for


def _fit(tmp_path, csv, target, *overrides) -> tuple[dict, pd.DataFrame]:
    out = tmp_path / "run"
    summary = run(
        compose(
            "forecast_csv",
            [
                f"datamodule.path={csv}",
                f"datamodule.target={target}",
                "trainer.max_epochs=3",
                *QUIET,
                *overrides,
                f"output_dir={out}",
            ],
        )
    )
    return summary, pd.read_csv(out / "test_forecasts.csv")


def test_the_default_preset_forecasts_a_trend_beyond_the_training_range(tmp_path):
    csv = trend_csv(tmp_path / "trend.csv")
    series = pd.read_csv(csv)["value"]
    summary, table = _fit(tmp_path, csv, "value")
    train_top = series.iloc[: int(0.7 * len(series))].max()
    assert table.truth.min() > train_top  # the test period lies above anything trained on
    assert table.forecast.min() > train_top  # and so do the forecasts
    mae = summary["metrics"]["test/mae"]
    assert mae < 0.01 * (series.max() - series.min())  # within 1 % of the series' range
    assert mae < 1.5 * 2.0  # about the noise (sd 2): the trend itself is forecast
    assert summary["metrics"]["test/skill_vs_naive"] > 0  # naive misses the slope
    # a network on standardised levels cannot leave the training range
    levels, _ = _fit(tmp_path / "levels", csv, "value", "task.relative=false")
    assert levels["metrics"]["test/mae"] > 5 * mae


def test_the_default_preset_beats_both_naive_forecasts_on_trend_and_season(tmp_path):
    csv = monthly_sales_csv(tmp_path / "sales.csv")
    summary, _ = _fit(tmp_path, csv, "sales")
    metrics = summary["metrics"]
    assert metrics["test/skill"] > 0.3, metrics  # vs seasonal naive (a year of trend behind)
    assert metrics["test/skill_vs_naive"] > 0.3, metrics  # vs naive (misses the cycle)
    assert "The model beats the seasonal naive" in summary["notes"][0]
    chosen = [n for n in summary["notes"] if n.startswith("linear part")]
    assert chosen and "chosen on the validation windows and 5 folds of the training" in chosen[0]


def _val_error(model: RelativeForecaster, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x) - y).pow(2).mean())


def test_a_short_random_walk_keeps_the_linear_part_near_the_naive_forecast():
    """30 training windows for 24 weights: the plain least-squares fit learns noise; chosen
    on validation windows, the penalty is strong and the forecast stays near naive."""
    torch.manual_seed(3)
    series = torch.randn(160).cumsum(0)
    x, y = windows(series, 24, 1)
    train, val = (x[:30], y[:30]), (x[60:], y[60:])
    plain, chosen = relative_model(24, 1), relative_model(24, 1)
    plain.fit([train])
    chosen.fit([train], val_batches=[val])
    assert chosen.choice[0].startswith("naive") and float(chosen.choice[0].split()[-1]) >= 1
    assert chosen.weight.abs().max() < 0.5 * plain.weight.abs().max()
    assert _val_error(chosen, *val) < _val_error(plain, *val)
    assert plain.choice == [f"naive with drift, penalty {RIDGE:g}"]  # no validation: as before
    assert chosen.validated and not plain.validated


def test_a_fixed_yearly_pattern_is_shrunk_towards_the_seasonal_mean():
    """Twelve random monthly levels repeated, plus noise: the mean of the two years in the
    window forecasts the level with half the noise of last year's value alone, and wins;
    its weights are 1/2 on each of those values, for every step of the horizon."""
    torch.manual_seed(4)
    series = (10 * torch.randn(12)).repeat(17)[:200] + torch.randn(200)
    x, y = windows(series, 24, 3)
    model = relative_model(24, 3)
    model.fit([(x[:20], y[:20])], val_batches=[(x[100:], y[100:])], season=12)
    assert model.choice[0].startswith("seasonal_mean"), model.choice
    prior = dict(model._priors(12))["seasonal_mean"][0]  # (lookback, horizon)
    for h in range(3):
        assert prior[:, h].nonzero().flatten().tolist() == [h, 12 + h]
        assert torch.allclose(prior[[h, 12 + h], h], torch.tensor([0.5, 0.5], dtype=prior.dtype))


def test_a_drifting_seasonal_pattern_is_shrunk_towards_the_seasonal_naive_forecast():
    """A yearly pattern that changes from year to year (each month a random walk) with few
    training windows: last year's value beats the two-year mean, the seasonal naive prior
    is chosen, and its weights are the value one season back, for every step."""
    torch.manual_seed(4)
    pattern = (10 * torch.randn(20, 12)).cumsum(0).flatten()  # month m of year k
    series = pattern[:240] + 0.1 * torch.randn(240)
    x, y = windows(series, 24, 3)
    model = relative_model(24, 3)
    model.fit([(x[:20], y[:20])], val_batches=[(x[100:], y[100:])], season=12)
    assert model.choice[0].startswith("seasonal_naive"), model.choice
    prior = dict(model._priors(12))["seasonal_naive"][0]  # (lookback, horizon)
    assert [int(prior[:, h].argmax()) for h in range(3)] == [12, 13, 14]
    t = torch.arange(200, dtype=torch.float32)
    exact = 10 * torch.sin(2 * torch.pi * t / 12)  # the prior alone forecasts a pure cycle
    ex, ey = windows(exact, 24, 3)
    with torch.no_grad():
        model.weight.copy_(prior.T.float().unsqueeze(0))
        model.bias.zero_()
        assert torch.allclose(model(ex), ey, atol=1e-4)
    # beyond one season the prior takes the value two seasons back (step 14: 11 steps before
    # the forecast origin, window position 13); a window shorter than a season has none
    assert int(dict(relative_model(24, 14)._priors(12))["seasonal_naive"][0, :, 13].argmax()) == 13
    assert [name for name, _ in relative_model(6, 3)._priors(12)] == ["naive"]
    # one season in the window: no seasonal mean
    assert [name for name, _ in relative_model(15, 1)._priors(12)] == ["naive", "seasonal_naive"]


def test_a_trend_beside_a_yearly_pattern_is_forecast_with_drift():
    """A fixed yearly pattern on a steady slope, few training windows: the seasonal prior
    alone lags a year of slope behind; with the bias free (drift) the forecast adds it."""
    torch.manual_seed(6)
    t = torch.arange(240, dtype=torch.float32)
    series = (10 * torch.randn(12)).repeat(20) + 2.0 * t + 0.5 * torch.randn(240)
    x, y = windows(series, 24, 1)
    model = relative_model(24, 1)
    model.fit([(x[:20], y[:20])], val_batches=[(x[100:120], y[100:120])], season=12)
    assert "with drift" in model.choice[0] and model.choice[0].startswith("seasonal")
    held_x, held_y = x[150:], y[150:]
    seasonal_naive = held_x[:, 12:13, :]  # the value a year before the forecast step
    with torch.no_grad():
        error = (model(held_x) - held_y).abs().mean()
    assert error < 0.1 * (seasonal_naive - held_y).abs().mean()  # ~24 off: a year of slope


def test_the_choice_is_cross_validated_on_the_training_windows_too():
    """An AR(2) series with 400 training windows and a validation period of 3 windows:
    three windows alone pick a penalty by chance (at some placements the prior itself,
    with twice the error), folds of the training windows add the evidence, and the chosen
    fit forecasts fresh data of the same process as well as the best candidate does
    (within 5 %) wherever the validation period falls."""
    from tasks.forecast import PENALTIES

    def ar2(n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        noise, out = torch.randn(n, generator=g), torch.zeros(n)
        for i in range(2, n):
            out[i] = 1.5 * out[i - 1] - 0.75 * out[i - 2] + noise[i]
        return out

    x, y = windows(ar2(460, 5), 24, 1)
    fresh = windows(ar2(3000, 6), 24, 1)
    errors = {}
    for penalty in PENALTIES:  # every naive-prior candidate, fitted on the training windows
        candidate = relative_model(24, 1)
        candidate.fit([(x[:400], y[:400])])
        gram, cross, _, _ = candidate._moments([(x[:400], y[:400])])
        diagonal = gram[0].diagonal(dim1=1, dim2=2)
        ridge = torch.diag_embed(penalty * diagonal + 1e-9 * diagonal.mean(dim=1, keepdim=True))
        solution = torch.linalg.solve(gram[0] + ridge, cross[0])
        with torch.no_grad():
            candidate.weight.copy_(solution[:, :-1].transpose(1, 2))
            candidate.bias.copy_(solution[:, -1])
        errors[penalty] = _val_error(candidate, *fresh)
    for start in range(400, 430, 4):  # wherever the short validation period falls
        model = relative_model(24, 1)
        model.fit([(x[:400], y[:400])], val_batches=[(x[start : start + 3], y[start : start + 3])])
        assert _val_error(model, *fresh) <= 1.05 * min(errors.values()), (model.choice, errors)


def test_a_network_that_never_beats_the_fitted_start_is_not_kept(tmp_path):
    """White noise: the fitted linear part forecasts about the mean, and an LSTM trained
    hard on 200 windows of noise only learns the noise. The start is the first candidate
    of the best checkpoint and early stopping: it stays the best (epoch 0), it is what is
    tested, saved and predicted with, no epoch line claims "best", and the notes say so."""
    from conftest import run_cli

    rng = np.random.default_rng(0)
    time = pd.date_range("2020-01-01", periods=300, freq="D").strftime("%Y-%m-%d")
    csv = tmp_path / "noise.csv"
    pd.DataFrame({"date": time, "value": 50 + rng.normal(0, 5, 300)}).to_csv(csv, index=False)
    out = tmp_path / "run"
    args = [f"datamodule.path={csv}", "datamodule.target=value", "task.lr=0.05"]
    args += ["trainer.max_epochs=4", "callbacks.early_stopping.patience=2", f"output_dir={out}"]
    done = run_cli("+task=forecast_csv", *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 0 and summary["epochs"] >= 2
    assert any("never beat the fitted linear part" in n for n in summary["notes"])
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert lines and not any(line.endswith("best") for line in lines), lines
    best = torch.load(summary["best_checkpoint"], weights_only=True)
    assert best["global_step"] == 0  # taken before the first step
    head = [v for k, v in best["state_dict"].items() if k.startswith("model.net.head")]
    assert head and all(not v.any() for v in head)  # the network adds nothing there
    # predicting with the saved best model gives the forecasts that were tested
    last = pd.read_csv(out / "test_forecasts.csv").iloc[-1]
    series = pd.read_csv(csv)
    history = tmp_path / "history.csv"
    series[series.date <= last.origin].to_csv(history, index=False)  # up to that origin
    predicted = run_cli(
        "+task=forecast_csv",
        *args[:2],
        "mode=predict",
        f"ckpt_path={summary['best_checkpoint']}",
        f"datamodule.predict_path={history}",
        f"output_dir={tmp_path / 'predict'}",
    )
    assert predicted.returncode == 0, predicted.stdout[-3000:] + predicted.stderr[-3000:]
    (row,) = pd.read_csv(tmp_path / "predict" / "predictions.csv").itertuples()
    assert row.time == last.time and row.value == pytest.approx(last.forecast, rel=1e-5)
