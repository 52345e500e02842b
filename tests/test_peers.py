"""The peer check: scikit-learn peers on the network's own training and test rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_table, make_texts

from datamodules.base import split_indices
from datamodules.tabular import TabularDataModule
from datamodules.text import TextDataModule
from tasks import peers
from tasks.peers import peer_scores, verdict
from tasks.tabular import TabularClassification, TabularRegression
from tasks.text import TextClassification


def _task(datamodule, cls, **options):
    datamodule.setup("fit")
    return cls(**datamodule.data_facts(), **options)


def _classes_table(n: int = 600) -> pd.DataFrame:
    """Three learnable classes, a categorical column with an embedded code (40 values)
    and a few missing numbers."""
    frame = make_table(n, classes=("low", "mid", "high"))
    rng = np.random.default_rng(1)
    frame["shop"] = rng.choice([f"shop{i}" for i in range(40)], n)
    frame.loc[rng.choice(n, 20, replace=False), "c"] = np.nan
    return frame


def test_table_peers_learn_and_use_the_tasks_metric_names():
    dm = TabularDataModule(frame=_classes_table(), target="label", seed=0)
    task = _task(dm, TabularClassification)
    assert dm.train_data[1].shape[1] == 1  # the shop column is integer-coded
    out = peer_scores(task, dm, test_metrics={"test/acc": 0.5})
    names = set(task.configure_metrics())
    for peer in ("logistic_regression", "hist_gradient_boosting"):
        assert {k.split("/")[2] for k in out["metrics"] if k.split("/")[1] == peer} == names
    majority = max(dm.data_facts()["class_counts"]) / len(dm.train_data[-1])
    assert out["metrics"]["peer/logistic_regression/acc"] > majority + 0.3
    assert out["metrics"]["peer/hist_gradient_boosting/acc"] > majority + 0.2
    best = out["best"]
    assert all(
        out["metrics"][f"peer/{best}/acc"] >= v
        for k, v in out["metrics"].items()
        if k.endswith("/acc")
    )
    assert out["notes"][0].startswith(f"the network does not beat the best peer, {best}")


def test_binary_peer_metrics_are_the_task_definitions():
    """Accuracy, F1 and AUROC of the linear peer equal scikit-learn's on its predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    dm = TabularDataModule(frame=make_table(400), target="label", seed=0)
    task = _task(dm, TabularClassification)
    out = peer_scores(task, dm)
    (x, _, y), (tx, _, ty) = dm.train_data, dm.test_data
    model = LogisticRegression(max_iter=1000, random_state=0).fit(x.numpy(), y.numpy())
    prob = model.predict_proba(tx.numpy())[:, 1]
    got = {k.split("/")[2]: v for k, v in out["metrics"].items() if "logistic" in k}
    assert got["acc"] == pytest.approx(accuracy_score(ty, prob >= 0.5), abs=1e-6)
    assert got["f1"] == pytest.approx(f1_score(ty, prob >= 0.5), abs=1e-6)
    assert got["auroc"] == pytest.approx(roc_auc_score(ty, prob), abs=1e-5)
    assert out["notes"][0].startswith("the best peer, ")  # no network metrics given


def test_regression_peers_score_in_original_units():
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    frame = make_table(500).drop(columns="label")
    frame["price"] = 1000 + 300 * frame.a - 150 * frame.b + 40 * frame.c**2
    dm = TabularDataModule(frame=frame, target="price", problem="regression", seed=0)
    task = _task(dm, TabularRegression)
    out = peer_scores(task, dm, test_metrics={"test/r2": 0.99})
    assert set(task.configure_metrics()) == {"mse", "rmse", "mae", "r2"}
    (x, _, _), (tx, _, _) = dm.train_data, dm.test_data
    # the original targets of the same rows, straight from the table (the seeded split)
    hp = dm.hparams
    train_idx, _, test_idx = split_indices(len(frame), hp.val_fraction, hp.test_fraction, hp.seed)
    assert (frame.index[test_idx] == dm.test_rows.index).all()
    y, ty = frame.price.to_numpy()[train_idx], frame.price.to_numpy()[test_idx]
    for name, model in (
        ("ridge", Ridge(alpha=1.0)),
        ("hist_gradient_boosting", HistGradientBoostingRegressor(random_state=0)),
    ):
        pred = model.fit(x.numpy(), y).predict(tx.numpy())
        got = {k.split("/")[2]: v for k, v in out["metrics"].items() if f"/{name}/" in k}
        assert got["mae"] == pytest.approx(mean_absolute_error(ty, pred), rel=1e-3)
        assert got["rmse"] == pytest.approx(mean_squared_error(ty, pred) ** 0.5, rel=1e-3)
        assert got["r2"] == pytest.approx(r2_score(ty, pred), abs=1e-4)
        assert got["mae"] > 10  # original units: prices in the hundreds, not standard units
    assert out["notes"][0].startswith("the network beats the best peer")


def test_text_peer_reads_the_raw_training_texts(tmp_path):
    path = tmp_path / "texts.csv"
    make_texts(400).to_csv(path, index=False)
    dm = TextDataModule(path=str(path), seed=0)
    task = _task(dm, TextClassification, network="bow")
    out = peer_scores(task, dm, test_metrics={"test/acc": 0.0})
    assert out["best"] == "tfidf_logistic_regression"
    assert set(out["metrics"]) == {
        f"peer/tfidf_logistic_regression/{m}" for m in task.configure_metrics()
    }
    assert out["metrics"]["peer/tfidf_logistic_regression/acc"] > 0.8  # cue words: learnable
    assert "does not beat" in out["notes"][0]


def test_a_peer_over_budget_is_skipped_with_a_note(monkeypatch):
    dm = TabularDataModule(frame=make_table(300), target="label", seed=0)
    task = _task(dm, TabularClassification)
    # boosting "costs" a million seconds per million cells; the linear model stays cheap
    monkeypatch.setitem(peers.SECONDS_PER_MILLION_CELLS, "hist_gradient_boosting", 1e6)
    out = peer_scores(task, dm, budget_s=30.0, test_metrics={"test/acc": 1.0})
    assert out["best"] == "logistic_regression"
    assert not any("hist_gradient_boosting" in k for k in out["metrics"])
    (skipped,) = [n for n in out["notes"] if "skipped" in n]
    assert skipped.startswith("peer hist_gradient_boosting skipped") and "30 s" in skipped
    nothing = peer_scores(task, dm, budget_s=0.0)
    assert nothing["metrics"] == {} and nothing["best"] is None
    assert len(nothing["notes"]) == 2


def test_the_note_says_beats_or_does_not_beat():
    assert verdict("acc", "lr", 0.80, {"test/acc": 0.85}).startswith(
        "the network beats the best peer, lr, on test acc: 0.85 against 0.8 (better by 0.05)"
    )
    assert "does not beat" in verdict("acc", "lr", 0.80, {"acc": 0.72})
    assert "worse by 0.08" in verdict("acc", "lr", 0.80, {"acc": 0.72})
    assert "does not beat" in verdict("acc", "lr", 0.80, {"acc": 0.80})  # a tie is no win
    # lower is better for errors
    assert "beats" in verdict("rmse", "ridge", 3.0, {"test/rmse": 2.0})
    assert "does not beat" in verdict("rmse", "ridge", 3.0, {"test/rmse": 4.0})


def test_other_data_gets_no_peers():
    class Other:
        train_data = test_data = None

    out = peer_scores(TabularClassification(), Other())
    assert out == {"metrics": {}, "best": None, "notes": []}


# -- network=auto for texts (issue 20: a few thousand documents get the bag of words) -------
def test_auto_picks_bow_for_small_data_and_the_sequence_network_for_large():
    from tasks.errors import ConfigError
    from tasks.text import AUTO_THRESHOLD, choose_text_network

    assert choose_text_network(3_000) == "bow"
    assert choose_text_network(AUTO_THRESHOLD - 1) == "bow"
    assert choose_text_network(AUTO_THRESHOLD) == "gru"
    assert choose_text_network(500_000, sequence_network="lstm") == "lstm"
    assert choose_text_network(3_000, embeddings=True) == "gru"  # word vectors need embeddings
    with pytest.raises(ConfigError, match=r"task.sequence_network='bow'"):
        choose_text_network(10, sequence_network="bow")


def test_auto_counts_the_training_texts_of_the_datamodule(tmp_path):
    from tasks.nets.text import BiGRU, TfidfMLP

    path = tmp_path / "texts.csv"
    make_texts(240).to_csv(path, index=False)
    dm = TextDataModule(path=str(path), seed=0)
    small = _task(dm, TextClassification, network="auto")
    assert small.hparams.network == "bow" and isinstance(small.model, TfidfMLP)
    training = len(dm.texts["train"])
    assert small.summary_notes() == [
        f"network=auto chose bow: {training} training texts, below task.auto_threshold=100,000"
    ]
    large = _task(dm, TextClassification, network="auto", auto_threshold=training)
    assert large.hparams.network == "gru" and isinstance(large.model, BiGRU)
    assert "at or above task.auto_threshold" in large.summary_notes()[0]
    fixed = _task(dm, TextClassification, network="lstm")
    assert fixed.hparams.network == "lstm" and fixed.summary_notes() == []


def test_a_tiny_run_with_network_auto_trains(tmp_path):
    import torch

    from tasks.api import compose, run

    path = tmp_path / "texts.csv"
    make_texts(240).to_csv(path, index=False)
    cfg = compose(
        "sentiment_gru", [f"datamodule.path={path}", "debug=tiny", f"output_dir={tmp_path}"]
    )
    assert cfg.task.network == "auto"
    summary = run(cfg)
    assert summary["status"] == "completed" and "test/acc" in summary["metrics"]
    assert any(n.startswith("network=auto chose bow") for n in summary["notes"])
    ckpt = torch.load(summary["best_checkpoint"], weights_only=True)
    assert ckpt["hyper_parameters"]["network"] == "bow"  # the checkpoint keeps the choice
    assert "model.idf" in ckpt["state_dict"]
