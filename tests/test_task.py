"""The base task: hyperparameters, optimisers and schedulers by name, weight penalties."""

from __future__ import annotations

import math

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


def _fit(task, tmp_path, epochs=2, callbacks=()):
    x = torch.randn(64, task.hparams.num_features)
    y = (x[:, 0] > 0).long()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
    )
    # validation labels are the opposite rule: learning the training rows makes val/loss
    # worse, so a plateau schedule has something to react to
    trainer.fit(
        task,
        TensorLoader(x, y, batch_size=16, shuffle=True),
        TensorLoader(x, 1 - y, batch_size=32),
    )
    return trainer


class LearningRates(L.Callback):
    """The learning rate of every training step, and val/loss after every validation."""

    def __init__(self):
        self.rates, self.val_losses = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_losses.append(float(trainer.callback_metrics["val/loss"]))


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))


def _expected_rates(scheduler, lr, epochs, steps, val_losses, gamma, step_size, patience):
    """Each step's learning rate by the formulas of torch.optim.lr_scheduler (their defaults
    where the task sets nothing): cosine over ``epochs``, step decay, plateau on val/loss
    (relative threshold 1e-4), one cycle over every step (warm-up 30%, from lr/25 to
    lr/25e4); epoch schedules step when an epoch ends, one cycle after every step."""
    rates, plateau, best, bad = [], lr, math.inf, 0
    total = epochs * steps
    warm_up = 0.3 * total - 1  # the step at which one cycle peaks
    for epoch in range(epochs):
        if epoch:
            loss = val_losses[epoch - 1]
            best, bad = (loss, 0) if loss < best * (1 - 1e-4) else (best, bad + 1)
            if bad > patience:
                plateau, bad = plateau * gamma, 0
        for step in range(steps):
            k = epoch * steps + step
            rates.append(
                {
                    "none": lr,
                    "cosine": _cos(lr, 0.0, epoch / epochs),
                    "step": lr * gamma ** (epoch // step_size),
                    "plateau": plateau,
                    "onecycle": _cos(lr / 25, lr, k / warm_up)
                    if k <= warm_up
                    else _cos(lr, lr / 25e4, (k - warm_up) / (total - 1 - warm_up)),
                }[scheduler]
            )
    return rates


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_optimizer_and_scheduler_trains(optimizer, scheduler, tmp_path):
    L.seed_everything(0, verbose=False)
    settings = {"lr": 0.01, "gamma": 0.5, "step_size": 1, "patience": 0}
    task = TabularClassification(optimizer=optimizer, scheduler=scheduler, **settings)
    before = [p.detach().clone() for p in task.parameters()]
    seen = LearningRates()
    trainer = _fit(task, tmp_path, epochs=3, callbacks=[seen])
    assert trainer.global_step == 12
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters()))
    assert isinstance(trainer.optimizers[0], OPTIMIZERS[optimizer])
    expected = _expected_rates(scheduler, epochs=3, steps=4, val_losses=seen.val_losses, **settings)
    assert seen.rates == pytest.approx(expected, rel=1e-6, abs=1e-12)
    if scheduler != "none":
        assert len(set(seen.rates)) > 1, "the schedule never changed the learning rate"


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


def _graph_ops(tensor):
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(next_fn for next_fn, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


def test_a_zero_penalty_coefficient_adds_no_work_to_the_step():
    """The spam reference net sets l2 only: its penalty takes no abs() (nor its backward)."""
    task = TabularClassification(num_features=3, hidden_sizes=[4, 2], l2=0.1, l1=0.0)
    ops = _graph_ops(task.penalty())
    assert not any(op.startswith("Abs") for op in ops) and any(op.startswith("Pow") for op in ops)
    both = TabularClassification(num_features=3, hidden_sizes=[4, 2], l1=0.01, l2=0.1)
    weights = [m.weight for m in both.model.mlp.linears]
    expected = sum(0.01 * w.abs().sum() + 0.1 * w.pow(2).sum() for w in weights)
    torch.testing.assert_close(both.penalty(), expected)
    only_l1 = TabularClassification(num_features=3, hidden_sizes=[2], l1=0.01, l2=0.0)
    assert not any(op.startswith("Pow") for op in _graph_ops(only_l1.penalty()))


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
