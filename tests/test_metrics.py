"""Every task's metrics against an independent computation (scikit-learn / numpy), on batches
built so that torchmetrics' compute groups would merge metrics that only agree at first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from tasks.forecast import Forecasting
from tasks.image import ImageClassification
from tasks.tabular import TabularClassification, TabularRegression


def _perfect_then_random(num_classes: int, rows: int = 200, seed: int = 0):
    """Logits: a first batch predicting every class right with certainty, then noise."""
    g = torch.Generator().manual_seed(seed)
    first_y = torch.arange(num_classes).repeat(3)
    first = torch.nn.functional.one_hot(first_y, num_classes).float() * 20 - 10
    second_y = torch.randint(0, num_classes, (rows,), generator=g)
    second = torch.randn(rows, num_classes, generator=g)
    return [(first, first_y), (second, second_y)]


def _computed(task, batches, stage: str = "test") -> dict[str, float]:
    collection = getattr(task, f"{stage}_metrics")
    for output, target in batches:
        collection.update(*task.metric_inputs(output, target))
    return {k.split("/", 1)[1]: float(v) for k, v in collection.compute().items()}


def _inputs(task, batches) -> tuple[np.ndarray, np.ndarray]:
    pairs = [task.metric_inputs(o, t) for o, t in batches]
    return (
        torch.cat([p for p, _ in pairs]).numpy(),
        torch.cat([t for _, t in pairs]).numpy(),
    )


@pytest.mark.parametrize("stage", ["val", "test", "baseline"])
def test_image_accuracies_match_scikit_learn(stage):
    task = ImageClassification(num_classes=10, in_channels=1, image_size=[8, 8], backbone="convnet")
    batches = _perfect_then_random(10)
    got = _computed(task, batches, stage)
    logits, y = _inputs(task, batches)
    assert got["acc"] == pytest.approx(sk.accuracy_score(y, logits.argmax(1)), abs=1e-6)
    assert got["balanced_acc"] == pytest.approx(
        sk.balanced_accuracy_score(y, logits.argmax(1)), abs=1e-6
    )
    top5 = sk.top_k_accuracy_score(y, logits, k=5, labels=list(range(10)))
    assert got["top5_acc"] == pytest.approx(top5, abs=1e-6)
    assert got["top5_acc"] != pytest.approx(got["balanced_acc"], abs=1e-3)  # not merged


def test_multiclass_table_metrics_match_scikit_learn():
    task = TabularClassification(num_features=4, num_classes=3)
    batches = _perfect_then_random(3)
    got = _computed(task, batches)
    prob, y = _inputs(task, batches)
    pred = prob.argmax(1)
    assert got["acc"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-6)
    for name, fn in (
        ("precision", sk.precision_score),
        ("recall", sk.recall_score),
        ("f1", sk.f1_score),
    ):
        assert got[name] == pytest.approx(fn(y, pred, average="macro"), abs=1e-5), name
    auroc = sk.roc_auc_score(y, prob, multi_class="ovr", average="macro")
    assert got["auroc"] == pytest.approx(auroc, abs=1e-4)


def test_binary_table_metrics_match_scikit_learn():
    task = TabularClassification(num_features=4, num_classes=2)
    batches = _perfect_then_random(2)
    got = _computed(task, batches)
    prob, y = _inputs(task, batches)
    pred = (prob > 0.5).astype(int)
    assert got["acc"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-6)
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred), abs=1e-5)
    assert got["recall"] == pytest.approx(sk.recall_score(y, pred), abs=1e-5)
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred), abs=1e-5)
    assert got["auroc"] == pytest.approx(sk.roc_auc_score(y, prob), abs=1e-4)


def _regression_batches(targets: int, seed: int = 0):
    """A perfect first batch (every error state zero, R^2 one), then noisy predictions."""
    g = torch.Generator().manual_seed(seed)
    shape = (40, targets) if targets > 1 else (40,)
    first = torch.randn(*shape, generator=g) + 3
    second_y = torch.randn(*shape, generator=g) + 3
    second = second_y + torch.randn(*shape, generator=g) * 0.7
    return [(first.clone(), first), (second, second_y)]


@pytest.mark.parametrize("targets", [1, 2])
def test_regression_metrics_match_scikit_learn(targets):
    task = TabularRegression(num_features=4, num_targets=targets)
    batches = _regression_batches(targets)
    got = _computed(task, batches)
    pred, y = _inputs(task, batches)
    mse = sk.mean_squared_error(y, pred)
    assert got["mse"] == pytest.approx(mse, rel=1e-5)
    assert got["rmse"] == pytest.approx(np.sqrt(mse), rel=1e-5)
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, pred), rel=1e-5)
    assert got["r2"] == pytest.approx(sk.r2_score(y, pred), rel=1e-5)


def test_forecast_metrics_match_scikit_learn():
    task = Forecasting(num_inputs=1, num_targets=1, lookback=8)
    batches = _regression_batches(1, seed=1)
    for output, target in batches:
        task.test_metrics.update(output, target)
    got = {k.split("/", 1)[1]: float(v) for k, v in task.test_metrics.compute().items()}
    pred = torch.cat([o for o, _ in batches]).numpy()
    y = torch.cat([t for _, t in batches]).numpy()
    assert got["mse"] == pytest.approx(sk.mean_squared_error(y, pred), rel=1e-5)
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, pred), rel=1e-5)
    assert got["mape"] == pytest.approx(sk.mean_absolute_percentage_error(y, pred), rel=1e-4)
    smape = np.mean(2 * np.abs(pred - y) / (np.abs(y) + np.abs(pred)))
    assert got["smape"] == pytest.approx(smape, rel=1e-4)
    assert got["r2"] == pytest.approx(sk.r2_score(y, pred), rel=1e-5)


def test_no_task_collection_merges_states():
    task = ImageClassification(num_classes=10, in_channels=1, image_size=[8, 8], backbone="convnet")
    for stage in ("train", "val", "test", "baseline"):
        collection = getattr(task, f"{stage}_metrics")
        batches = _perfect_then_random(10)
        for output, target in batches:
            collection.update(output, target)
        groups = collection.compute_groups
        assert all(len(members) == 1 for members in groups.values()), (stage, groups)
