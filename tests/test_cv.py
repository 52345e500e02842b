"""mode=cv: k-fold cross-validation of a preset (tasks/cv.py and the datamodule hook)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.base import BaseDataModule, CVRows, fold_split
from datamodules.tabular import TabularDataModule
from tasks.api import compose, run
from tasks.cv import Options, choose_strategy, make_splits, read_options
from tasks.errors import ConfigError, DataError
from tests.conftest import make_table

FAST = [
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
]
FOLDS = 3


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    frame = make_table(60, classes=("a", "b", "c"))
    frame["site"] = np.arange(len(frame)) % 6  # groups for group k-fold
    return frame


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, table):
    """One small CV run of a generated table (3 folds of 60 rows, 2 epochs)."""
    folder = tmp_path_factory.mktemp("cv") / "run"
    csv = folder.parent / "table.csv"
    table.drop(columns="site").to_csv(csv, index=False)
    overrides = [
        f"datamodule.path={csv}",
        "datamodule.target=label",
        "mode=cv",
        f"cv.folds={FOLDS}",
        f"output_dir={folder}",
        *FAST,
    ]
    summary = run("tabular_classification", overrides)
    return summary, folder, overrides


def test_folds_partition_the_rows(cv_run, table):
    summary, folder, _ = cv_run
    assert summary["mode"] == "cv" and summary["cv"]["strategy"] == "stratified"
    folds = pd.read_csv(folder / "cv_folds.csv")
    assert sorted(folds["row"]) == list(range(len(table)))
    assert sorted(folds["fold"].unique()) == list(range(FOLDS))
    for k in range(FOLDS):
        fold_summary = json.loads((folder / f"fold_{k}" / "summary.json").read_text())
        assert fold_summary["status"] == "completed"
        assert (folder / f"fold_{k}" / "checkpoints" / "best.ckpt").is_file()
        assert fold_summary["cv_fold"]["test_rows"] == int((folds["fold"] == k).sum())


def test_preprocessing_is_fitted_per_fold(cv_run, table):
    """Each fold's scaler holds the means of that fold's training rows (less its inner
    validation rows), never of the whole table or of its test rows."""
    _, folder, _ = cv_run
    folds = pd.read_csv(folder / "cv_folds.csv")
    features = table[["a", "b", "c", "d"]].to_numpy()
    labels = table["label"].to_numpy()
    centers = []
    for k in range(FOLDS):
        ckpt = torch.load(folder / f"fold_{k}" / "checkpoints" / "best.ckpt", weights_only=True)
        center = np.asarray(ckpt["TabularDataModule"]["prep"]["center"])
        centers.append(center)
        test_rows = np.sort(folds.loc[folds["fold"] == k, "row"].to_numpy())
        train_rows = np.setdiff1d(np.arange(len(table)), test_rows)
        inner, val, test = fold_split(train_rows, test_rows, 0.15, 42, stratify=labels)
        assert test.tolist() == test_rows.tolist() and len(val) > 0
        assert np.allclose(center, features[inner].mean(axis=0))
        assert not np.allclose(center, features.mean(axis=0))
    assert not np.allclose(centers[0], centers[1])
    assert not np.allclose(centers[1], centers[2])


def test_out_of_fold_predictions_in_row_order(cv_run, table):
    _, folder, _ = cv_run
    oof = pd.read_csv(folder / "oof_predictions.csv")
    assert oof["row"].tolist() == list(range(len(table)))
    folds = pd.read_csv(folder / "cv_folds.csv").set_index("row")
    assert (oof["fold"].to_numpy() == folds.loc[oof["row"], "fold"].to_numpy()).all()
    assert set(oof["pred"]) <= {"a", "b", "c"}
    probs = oof[["prob_a", "prob_b", "prob_c"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_summary_equals_the_results_table(cv_run):
    summary, folder, _ = cv_run
    results = pd.read_csv(folder / "cv_results.csv")
    assert len(results) == FOLDS and results["repeat"].eq(0).all()
    cv_summary = json.loads((folder / "cv_summary.json").read_text())
    assert cv_summary["folds"] == FOLDS and cv_summary["repeats"] == 1
    assert "test/acc" in cv_summary["metrics"]
    for metric, stats in cv_summary["metrics"].items():
        values = results[metric]
        assert stats["mean"] == pytest.approx(values.mean())
        assert stats["std"] == pytest.approx(values.std(ddof=1))
        assert stats["values"] == pytest.approx(values.tolist())
        assert stats["ci95_low"] <= stats["mean"] <= stats["ci95_high"]
        assert summary["metrics"][metric] == pytest.approx(values.mean())
    assert (folder / "cv_scores.png").stat().st_size > 0
    # the peers on the same folds: each fold's peer scores, described as the network's are
    folds = [json.loads((folder / f"fold_{k}" / "summary.json").read_text()) for k in range(FOLDS)]
    peer = cv_summary["peers"]["peer/logistic_regression/acc"]
    assert peer["values"] == pytest.approx(
        [f["peers"]["peer/logistic_regression/acc"] for f in folds]
    )
    assert peer["mean"] == pytest.approx(np.mean(peer["values"]))
    assert cv_summary["best_peer"] in ("logistic_regression", "hist_gradient_boosting")
    best = cv_summary["peers"][f"peer/{cv_summary['best_peer']}/acc"]["mean"]
    assert cv_summary["peer_check"].startswith("over the folds, the network")
    assert f"{best:.4g}" in cv_summary["peer_check"]


def test_interrupted_cv_resumes_the_missing_fold_only(cv_run):
    """Last test of the module's run: it re-runs a fold (and adds the refit)."""
    _, folder, overrides = cv_run
    kept = {
        k: {p: p.stat().st_mtime_ns for p in (folder / f"fold_{k}").rglob("*") if p.is_file()}
        for k in (0, 2)
    }
    (folder / "fold_1" / "summary.json").unlink()  # as if fold 1 had been interrupted
    summary = run("tabular_classification", [*overrides, "cv.refit=true"])
    for files in kept.values():
        assert {p: p.stat().st_mtime_ns for p in files} == files
    again = json.loads((folder / "fold_1" / "summary.json").read_text())
    assert again["status"] == "completed"
    assert len(pd.read_csv(folder / "oof_predictions.csv")) == 60
    refit = json.loads((folder / "refit" / "summary.json").read_text())
    epochs = json.loads((folder / "cv_summary.json").read_text())["best_epochs"]
    assert refit["max_epochs"] == max(1, round(float(np.median(epochs))))
    assert summary["refit"]["final_checkpoint"]


def test_resuming_with_other_folds_is_refused(cv_run):
    _, folder, overrides = cv_run
    with pytest.raises(ConfigError, match="other folds"):
        run("tabular_classification", [*overrides, "cv.folds=4"])


# -- the splitters (no training) -----------------------------------------------------------
def test_stratified_folds_keep_every_class(table):
    rows = CVRows(len(table), table["label"].to_numpy())
    options = Options(folds=4, repeats=2)
    splits = make_splits(choose_strategy(options, rows), options, rows, seed=0)
    assert len(splits) == 8
    for repeat in (0, 1):
        tests = [test for r, _, _, test in splits if r == repeat]
        assert sorted(np.concatenate(tests)) == list(range(len(table)))
    for _, _, train, test in splits:
        assert set(table["label"].iloc[test]) == {"a", "b", "c"}
        assert set(table["label"].iloc[train]) == {"a", "b", "c"}
        assert not set(train) & set(test)


def test_group_folds_never_split_a_group(tmp_path, table):
    dm = TabularDataModule(frame=table, target="label", drop_columns=["site"])
    rows = dm.cv_rows("site")
    options = read_options(compose("iris_mlp", ["cv.groups=site", "cv.folds=3"]))
    strategy = choose_strategy(options, rows)
    assert strategy == "group"
    for _, _, train, test in make_splits(strategy, options, rows, seed=0):
        assert not set(table["site"].iloc[train]) & set(table["site"].iloc[test])


def test_regression_and_ordered_rows_choose_their_splitter():
    assert choose_strategy(Options(), CVRows(30)) == "kfold"
    ordered = CVRows(30, ordered=True)
    assert choose_strategy(Options(), ordered) == "forward"
    for _, _, train, test in make_splits("forward", Options(folds=3), ordered, seed=0):
        assert train.max() < test.min()  # an expanding window, never shuffled across time
    with pytest.raises(ConfigError, match="time order"):
        choose_strategy(Options(strategy="kfold"), ordered)
    with pytest.raises(ConfigError, match="stratified needs class labels"):
        choose_strategy(Options(strategy="stratified"), CVRows(30))


def test_bad_settings_are_one_line():
    with pytest.raises(ConfigError, match="cv.folds"):
        read_options(compose("iris_mlp", ["cv.folds=1"]))
    with pytest.raises(ConfigError, match="cv.strategy=group needs cv.groups"):
        read_options(compose("iris_mlp", ["cv.strategy=group"]))


def test_datamodule_without_the_hook_is_refused(tmp_path):
    class NoFolds(BaseDataModule):
        def setup_fit(self) -> None:  # pragma: no cover - never reached
            raise AssertionError

    cfg = compose("iris_mlp", ["mode=cv", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="mode=cv: NoFolds does not support cross-validation"):
        run(cfg, datamodule=NoFolds())
    assert not (tmp_path / "run").exists()


def test_a_fold_sets_up_its_rows_only(table):
    """use_fold: the fold's test rows are the test split; validation comes from its
    training rows; test_fraction is ignored."""
    dm = TabularDataModule(frame=table, target="label", drop_columns=["site"])
    train_rows, test_rows = np.arange(20, 60), np.arange(0, 20)
    dm.use_fold(train_rows, test_rows)
    dm.setup("fit")
    assert len(dm.test_data[-1]) == 20
    assert len(dm.train_data[-1]) + len(dm.val_data[-1]) == 40
    assert dm.test_rows.index.tolist() == list(range(20))


# -- series in time order: forward-chaining folds ------------------------------------------
def hourly(steps: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hours = np.arange(steps)
    value = 10 + 0.01 * hours + np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.1, steps)
    time = pd.date_range("2024-03-04", periods=steps, freq="h").strftime("%Y-%m-%d %H:%M")
    return pd.DataFrame({"when": time, "load": value})


def test_a_forecasting_fold_never_trains_on_a_later_time_than_it_tests(tmp_path):
    from datamodules.forecast import ForecastDataModule

    frame = hourly(300)
    frame.to_csv(tmp_path / "series.csv", index=False)
    dm = ForecastDataModule(path=str(tmp_path / "series.csv"), lookback=24, horizon=3)
    rows = dm.cv_rows()
    assert rows == CVRows(300, None, None, True)
    dm.use_fold(np.arange(150), np.arange(150, 200))
    dm.setup("fit")
    assert dm.bounds == {"train": (0, 128), "val": (128, 150), "test": (150, 200)}
    last_train_target = dm.train_data[0].max().item() + 24 + 3 - 1
    assert last_train_target < 128  # every training target lies before validation
    test_targets = dm.test_data[0].numpy()[:, None] + 24 + np.arange(3)
    assert test_targets.min() == 150 and test_targets.max() == 199  # inside the test block
    # the scaler saw the training period only (log-free, standard scaling)
    assert dm.fitted_state["center"][0] == pytest.approx(frame["load"][:128].mean())

    shuffled = ForecastDataModule(path=str(tmp_path / "series.csv"), lookback=24)
    shuffled.use_fold(np.r_[0:100, 150:200], np.arange(100, 150))
    with pytest.raises(DataError, match="every step before its test block"):
        shuffled.setup("fit")
    with pytest.raises(ConfigError, match="cv.groups='site'"):
        dm.cv_rows("site")


def test_a_series_fold_scores_its_test_block_only(tmp_path):
    from datamodules.series import SyntheticSeriesDataModule

    dm = SyntheticSeriesDataModule(steps=2000, window=32, val_fraction=0.2)
    assert dm.cv_rows() == CVRows(2000, None, None, True)
    dm.use_fold(np.arange(1000), np.arange(1000, 1500))
    dm.setup("fit")
    steps = {split: [int(t) for t in dm.parts[split]["time"]] for split in dm.parts}
    assert steps["train"] == list(range(800))  # the scaler and the model: before validation
    assert steps["val"] == list(range(800, 1000))  # the threshold: the last 0.2 of them
    assert steps["test"] == list(range(1000, 1500))
    frame = dm.load_frame()
    assert dm.fitted_state["mean"][0] == pytest.approx(frame["value"][:800].mean())

    small = SyntheticSeriesDataModule(steps=2000, window=32)
    small.use_fold(np.arange(1000), np.arange(1000, 1010))
    with pytest.raises(DataError, match="tests 10 steps, fewer than one window"):
        small.setup("fit")


def test_forecasting_cv_chains_forward_end_to_end(tmp_path):
    frame = hourly(400)
    frame.to_csv(tmp_path / "series.csv", index=False)
    folder = tmp_path / "run"
    overrides = [
        f"datamodule.path={tmp_path / 'series.csv'}",
        "datamodule.target=load",
        "datamodule.horizon=2",
        "mode=cv",
        f"output_dir={folder}",
        *FAST,
    ]
    summary = run("forecast_csv", overrides)
    assert summary["cv"]["strategy"] == "forward" and summary["cv"]["folds"] == 5
    folds = pd.read_csv(folder / "cv_folds.csv")
    oof = pd.read_csv(folder / "oof_predictions.csv")
    assert oof[["row", "step"]].equals(oof.sort_values(["row", "step"])[["row", "step"]])
    for k in range(5):
        test_rows = folds.loc[folds["fold"] == k, "row"].to_numpy()
        ckpt = torch.load(folder / f"fold_{k}" / "checkpoints" / "best.ckpt", weights_only=True)
        center = ckpt["ForecastDataModule"]["center"][0]
        start = test_rows.min()
        assert folds.loc[folds["row"] < start, "fold"].lt(k).all()  # earlier blocks only
        # scaled with the steps before validation (the last 0.15 before the test block)
        cut = start - round(0.15 * start)
        assert center == pytest.approx(frame["load"][:cut].mean())
        mine = oof[oof["fold"] == k]
        assert mine["row"].between(test_rows.min(), test_rows.max()).all()
        assert (mine["origin"] >= test_rows.min()).all()
        assert np.allclose(mine["load_actual"], frame["load"].to_numpy()[mine["row"]])
    results = pd.read_csv(folder / "cv_results.csv")
    assert len(results) == 5 and "test/mae" in results.columns


def test_series_anomaly_cv_scores_every_test_step_once(tmp_path):
    folder = tmp_path / "run"
    overrides = ["datamodule.steps=3000", "mode=cv", "cv.folds=3", f"output_dir={folder}", *FAST]
    summary = run("series_autoencoder", overrides)
    assert summary["cv"]["strategy"] == "forward"
    folds = pd.read_csv(folder / "cv_folds.csv")
    oof = pd.read_csv(folder / "oof_predictions.csv")
    assert oof["row"].tolist() == folds["row"].tolist()  # one score per tested step, in order
    assert oof["row"].min() == 3000 - 3 * 750 and oof["row"].max() == 2999
    assert oof["time"].tolist() == oof["row"].tolist()  # the generated series' own step index
    assert set(oof["anomaly"]) <= {0, 1} and np.isfinite(oof["score"]).all()
    assert "label" in oof.columns


# -- folds as separate jobs ----------------------------------------------------------------
def test_folds_run_as_parallel_hydra_jobs_meet_in_one_folder(tmp_path):
    """``-m cv.fold=0,1,2`` with the joblib launcher: one process per fold, and the job that
    completes the last fold writes the CV's results."""
    from conftest import run_cli

    folder = tmp_path / "cv"
    result = run_cli(
        "-m",
        "+task=iris_mlp",
        "launcher=local",
        "mode=cv",
        "cv.folds=3",
        "cv.fold=0,1,2",
        f"output_dir={folder}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0 of 3 folds" not in result.stdout
    summary = json.loads((folder / "cv_summary.json").read_text())
    assert summary["folds"] == 3 and len(summary["metrics"]["test/acc"]["values"]) == 3
    oof = pd.read_csv(folder / "oof_predictions.csv")
    assert oof["row"].tolist() == list(range(150))
    for k in range(3):
        fold = json.loads((folder / f"fold_{k}" / "summary.json").read_text())
        assert fold["status"] == "completed" and fold["cv_fold"]["fold"] == k


def test_one_fold_job_leaves_the_others_to_a_later_run(tmp_path):
    folder = tmp_path / "cv"
    overrides = ["mode=cv", "cv.folds=3", f"output_dir={folder}", *FAST]
    partial = run("iris_mlp", [*overrides, "cv.fold=1"])
    assert partial["cv"] == {"folds_completed": 1, "folds_planned": 3}
    assert (folder / "fold_1" / "oof.csv").is_file() and not (folder / "fold_0").exists()
    assert not (folder / "cv_summary.json").exists()
    kept = (folder / "fold_1" / "summary.json").stat().st_mtime_ns
    whole = run("iris_mlp", overrides)  # runs the two missing folds, keeps fold 1
    assert (folder / "fold_1" / "summary.json").stat().st_mtime_ns == kept
    assert len(whole["cv"]["metrics"]["test/acc"]["values"]) == 3

    with pytest.raises(ConfigError, match=r"cv.fold=3: expected fold numbers from 0 to 2"):
        run("iris_mlp", [*overrides, "cv.fold=3"])
    with pytest.raises(ConfigError, match="set output_dir=FOLDER"):
        read_options(compose("iris_mlp", ["cv.fold=0"]))


def test_the_job_completing_the_last_fold_writes_the_results(tmp_path, monkeypatch):
    """A fold job re-reads the other folds after training: fold 0 finishing in another job
    while this one trains fold 1 still gets the results written (no job left to do it)."""
    import shutil

    from tasks import cv

    done = tmp_path / "done"
    overrides = ["mode=cv", "cv.folds=3", *FAST]
    run("iris_mlp", [*overrides, f"output_dir={done}"])  # what the other jobs produce
    folder = tmp_path / "cv"
    real = cv._run_fold

    def others_finish_meanwhile(cfg, given, fold, console):
        summary = real(cfg, given, fold, console)
        for k in (0, 2):
            shutil.copytree(done / f"fold_{k}", folder / f"fold_{k}")
        return summary

    monkeypatch.setattr(cv, "_run_fold", others_finish_meanwhile)
    result = run("iris_mlp", [*overrides, "cv.fold=1", f"output_dir={folder}"])
    assert "folds_completed" not in result["cv"]
    assert len(json.loads((folder / "cv_summary.json").read_text())["best_epochs"]) == 3
