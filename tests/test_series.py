"""Unsupervised series anomaly detection: time-index checks, windows, the validation
threshold saved with the model, per-step outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.series import SeriesDataModule
from tasks.api import compose, run
from tasks.errors import ConfigError, DataError
from tasks.series import SeriesAnomalyDetection


def _csv(tmp_path, frame: pd.DataFrame, name: str = "series.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _series(n: int = 400, anomaly: slice = slice(300, 310)) -> pd.DataFrame:
    t = pd.date_range("2024-01-01", periods=n, freq="h")
    value = np.sin(np.arange(n) / 5.0)
    label = np.zeros(n, dtype=int)
    value[anomaly] += 3
    label[anomaly] = 1
    return pd.DataFrame({"when": t.astype(str), "value": value, "label": label})


def test_time_index_must_increase(tmp_path):
    frame = _series()
    frame.loc[5, "when"] = frame.loc[4, "when"]
    with pytest.raises(DataError, match=r"duplicated times in rows \[5\]"):
        SeriesDataModule(path=_csv(tmp_path, frame), time_column="when").setup("fit")
    frame = _series()
    frame.loc[[7, 8], "when"] = frame.loc[[8, 7], "when"].to_numpy()
    with pytest.raises(DataError, match=r"time goes backwards at rows \[8\]; sort the file"):
        SeriesDataModule(path=_csv(tmp_path, frame), time_column="when").setup("fit")
    with pytest.raises(DataError, match="no column 'wen'.*Did you mean 'when'"):
        SeriesDataModule(path=_csv(tmp_path, _series()), time_column="wen").setup("fit")


def test_missing_values_short_series_and_bad_labels(tmp_path):
    frame = _series()
    frame.loc[10, "value"] = np.nan
    with pytest.raises(DataError, match=r"missing values in rows \[10\].*nan=interpolate"):
        SeriesDataModule(path=_csv(tmp_path, frame), time_column="when").setup("fit")
    SeriesDataModule(
        path=_csv(tmp_path, frame), time_column="when", nan="interpolate", window=16
    ).setup("fit")
    with pytest.raises(DataError, match="fewer than one window"):
        SeriesDataModule(path=_csv(tmp_path, _series(40)), window=64).setup("fit")
    frame = _series()
    frame.loc[3, "label"] = 2
    with pytest.raises(DataError, match="must hold 0 and 1"):
        SeriesDataModule(path=_csv(tmp_path, frame), label_column="label").setup("fit")


def test_training_windows_skip_labelled_anomalies_and_evaluation_tiles(tmp_path):
    frame = _series(anomaly=slice(100, 110))
    dm = SeriesDataModule(
        path=_csv(tmp_path, frame),
        time_column="when",
        label_column="label",
        window=16,
        stride=2,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    dm.setup("fit")
    starts = dm.parts["train"]["starts"]
    assert not any(s < 110 and s + 16 > 100 for s in starts)
    assert dm.data_facts() == {"in_channels": 1, "window": 16}
    test = dm.parts["test"]
    covered = np.zeros(len(test["time"]), dtype=bool)
    for s in test["starts"]:
        covered[s : s + 16] = True
    assert covered.all()  # every test step gets a score


def _parts_series(seed: int = 0) -> pd.DataFrame:
    """2,000 steps split 1,200 / 400 / 400 (train, validation, test) by the 0.2 fractions, each
    part noisier than the one before, with a labelled anomaly in validation and in test."""
    rng = np.random.default_rng(seed)
    t = np.arange(2000)
    noise = np.select([t < 1200, t < 1600], [0.05, 0.2], 0.4)
    value = np.sin(2 * np.pi * t / 50) + rng.normal(size=2000) * noise
    label = np.zeros(2000, dtype=int)
    for part in (slice(1300, 1340), slice(1700, 1720)):
        value[part] += 4.0
        label[part] = 1
    return pd.DataFrame({"when": t, "value": value, "label": label})


def _step_scores(task, values: np.ndarray, window: int = 16, smooth: int = 5) -> np.ndarray:
    """Per-step scores by the documented recipe: windows tiling the part (the last one
    end-aligned), squared reconstruction error, later windows overwriting, moving average."""
    starts = list(range(0, len(values) - window + 1, window))
    if starts[-1] + window < len(values):
        starts.append(len(values) - window)
    windows = torch.tensor(np.stack([values[s : s + window] for s in starts]), dtype=torch.float32)
    with torch.no_grad():
        errors = (task(windows[:, None]) - windows[:, None]).pow(2).mean(dim=1).numpy()
    score = np.zeros(len(values))
    for s, e in zip(starts, errors):
        score[s : s + window] = e
    return np.convolve(score, np.ones(smooth) / smooth, mode="same")


def test_threshold_is_chosen_on_validation_saved_and_used_for_prediction(tmp_path):
    frame = _parts_series()
    data = [
        "datamodule._name_=series",
        f"+datamodule.path={_csv(tmp_path, frame)}",
        "+datamodule.time_column=when",
        "datamodule.window=16",
        "datamodule.val_fraction=0.2",
        "datamodule.test_fraction=0.2",
        "trainer.enable_progress_bar=false",
    ]
    cfg = compose(
        "series_autoencoder",
        [
            *data,
            "+datamodule.label_column=label",
            "trainer.max_epochs=3",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    summary = run(cfg)
    assert {"test/precision", "test/recall", "test/auroc", "test/event_recall"} <= set(
        summary["metrics"]
    )
    scores = pd.read_csv(tmp_path / "run" / "anomaly_scores.csv")
    assert list(scores.columns) == ["time", "score", "anomaly", "label"]
    assert (tmp_path / "run" / "anomalies.png").is_file()
    task = SeriesAnomalyDetection.load_from_checkpoint(summary["best_checkpoint"]).eval()
    threshold = float(task.threshold)
    # the percentile of the validation steps labelled normal, scored by the saved weights;
    # the training steps, the test steps or the labelled anomaly would give another one
    values = frame["value"].to_numpy()
    standard = (values - values[:1200].mean()) / values[:1200].std()
    labels = frame["label"].to_numpy()
    val = _step_scores(task, standard[1200:1600])
    expected = np.percentile(val[labels[1200:1600] == 0], 99.0)
    assert threshold == pytest.approx(expected, rel=1e-4)
    test = _step_scores(task, standard[1600:])
    others = [val, test[labels[1600:] == 0], _step_scores(task, standard[:1200])]
    for other in others:  # so the planted parts tell them apart
        assert abs(np.percentile(other, 99.0) - expected) > 0.1 * expected
    np.testing.assert_allclose(scores["score"], test, rtol=1e-4, atol=1e-6)
    assert ((scores["score"] > threshold) == scores["anomaly"].astype(bool)).all()

    _parts_series(seed=5).drop(columns="label").to_csv(tmp_path / "new.csv", index=False)
    predicted = run(
        compose(
            "series_autoencoder",
            [
                *data,
                "mode=predict",
                f"ckpt_path={summary['best_checkpoint']}",
                f"+datamodule.predict_path={tmp_path / 'new.csv'}",
                f"output_dir={tmp_path / 'predict'}",
            ],
        )
    )
    out = pd.read_csv(predicted["predictions"]["path"])
    assert len(out) == 2000 and {"time", "score", "anomaly"} <= set(out.columns)
    assert ((out["score"] > threshold) == out["anomaly"].astype(bool)).all()
    assert out["anomaly"].any()  # the planted anomalies are found with the saved threshold


def test_autoencoder_settings_are_checked():
    with pytest.raises(ConfigError, match="divisible by 4"):
        SeriesAnomalyDetection(window=30)
    with pytest.raises(ConfigError, match="threshold_percentile"):
        SeriesAnomalyDetection(threshold_percentile=100)
    task = SeriesAnomalyDetection(in_channels=2, window=32)
    assert task.step_errors(torch.randn(3, 2, 32)).shape == (3, 32)
