"""Unsupervised series anomaly detection: time-index checks, windows, the validation
threshold saved with the model, per-step outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.series import SeriesDataModule, SyntheticSeriesDataModule
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


def test_threshold_is_chosen_on_validation_saved_and_used_for_prediction(tmp_path):
    cfg = compose(
        "series_autoencoder",
        [
            "debug=tiny",
            "datamodule.steps=3000",
            "datamodule.anomalies=12",
            f"output_dir={tmp_path}",
        ],
    )
    summary = run(cfg)
    assert {"test/precision", "test/recall", "test/auroc", "test/event_recall"} <= set(
        summary["metrics"]
    )
    scores = pd.read_csv(tmp_path / "anomaly_scores.csv")
    assert list(scores.columns) == ["time", "score", "anomaly", "label"]
    assert (tmp_path / "anomalies.png").is_file()
    task = SeriesAnomalyDetection.load_from_checkpoint(summary["best_checkpoint"])
    threshold = float(task.threshold)
    assert np.isfinite(threshold) and threshold > 0
    assert ((scores["score"] > threshold) == scores["anomaly"].astype(bool)).all()

    frame = SyntheticSeriesDataModule(steps=500, generator_seed=5).load_frame()
    frame.drop(columns="anomaly").to_csv(tmp_path / "new.csv", index=False)
    predicted = run(
        compose(
            "series_autoencoder",
            [
                "mode=predict",
                f"ckpt_path={summary['best_checkpoint']}",
                "datamodule.steps=3000",
                f"datamodule.predict_path={tmp_path / 'new.csv'}",
                "datamodule.label_column=null",
                f"output_dir={tmp_path / 'predict'}",
            ],
        )
    )
    out = pd.read_csv(predicted["predictions"]["path"])
    assert len(out) == 500 and {"time", "score", "anomaly"} <= set(out.columns)


def test_autoencoder_settings_are_checked():
    with pytest.raises(ConfigError, match="divisible by 4"):
        SeriesAnomalyDetection(window=30)
    with pytest.raises(ConfigError, match="threshold_percentile"):
        SeriesAnomalyDetection(threshold_percentile=100)
    task = SeriesAnomalyDetection(in_channels=2, window=32)
    assert task.step_errors(torch.randn(3, 2, 32)).shape == (3, 32)
