"""The base task: hyperparameters, optimisers and schedulers by name, weight penalties."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from datamodules.base import TensorLoader
from tasks.base import OPTIMIZERS, SCHEDULERS
from tasks.errors import ConfigError
from tasks.tabular import TabularClassification


def test_default_construction_is_small_and_runs():
    task = TabularClassification()
    out = task(torch.zeros(5, 4))
    assert out.shape == (5, 2)
    assert task.hparams.optimizer == "adam"


def test_hparams_include_the_whole_constructor_chain():
    task = TabularClassification(
        num_features=3, num_classes=4, hidden_sizes=[5], lr=0.02, scheduler="cosine"
    )
    hp = dict(task.hparams)
    assert hp["num_features"] == 3 and hp["num_classes"] == 4 and hp["hidden_sizes"] == [5]
    assert hp["lr"] == 0.02 and hp["scheduler"] == "cosine"


def _fit(task, tmp_path, epochs=2):
    x = torch.randn(64, task.hparams.num_features)
    y = (x[:, 0] > 0).long()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(
        task, TensorLoader(x, y, batch_size=16, shuffle=True), TensorLoader(x, y, batch_size=32)
    )
    return trainer


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_optimizer_and_scheduler_trains(optimizer, scheduler, tmp_path):
    task = TabularClassification(optimizer=optimizer, scheduler=scheduler, lr=0.01)
    before = [p.detach().clone() for p in task.parameters()]
    trainer = _fit(task, tmp_path)
    assert trainer.global_step == 8
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters()))
    assert isinstance(trainer.optimizers[0], OPTIMIZERS[optimizer])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"optimizer": "adamm"}, "task.optimizer='adamm' is not supported"),
        ({"scheduler": "cosin"}, "task.scheduler='cosin' is not supported"),
        ({"lr": 0.0}, "task.lr must be positive"),
        ({"num_classes": 1}, "at least 2 classes"),
        ({"activation": "relux"}, "unknown activation 'relux'"),
        ({"dropout": 1.5}, "dropout must be in"),
        ({"l2": -1.0}, "weight penalties must be >= 0"),
    ],
)
def test_bad_arguments_fail_in_the_constructor(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TabularClassification(**kwargs)


def test_first_layer_l2_penalty_matches_keras_definition():
    task = TabularClassification(num_features=3, hidden_sizes=[2], l2=0.1, penalty_layers="first")
    first = task.model.mlp.linears[0].weight
    torch.testing.assert_close(task.penalty(), 0.1 * first.pow(2).sum())
    assert TabularClassification(l2=0.0).penalty() == 0.0


def test_multiclass_metrics_and_confusion(tmp_path):
    task = TabularClassification(num_features=4, num_classes=3)
    assert set(task.test_metrics.keys()) == {
        "test/acc",
        "test/precision",
        "test/recall",
        "test/f1",
        "test/auroc",
    }
    task.record_test_outputs(torch.tensor([[3.0, 0, 0], [0, 3.0, 0]]), torch.tensor([0, 2]))
    task.on_test_epoch_end()  # Lightning's order: the (synced) matrix first, then the files
    files = task.save_artifacts(tmp_path, datamodule=None)
    assert [f.name for f in files] == ["confusion_matrix.csv", "confusion_matrix.png"]
    lines = (tmp_path / "confusion_matrix.csv").read_text().splitlines()
    assert lines[1] == "0,1,0,0" and lines[3] == "2,0,1,0"
