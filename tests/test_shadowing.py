"""A task subclass whose new argument reuses a base argument's name is warned about when the
class is defined; re-declaring one to change its default, and passing it on, is not."""

from __future__ import annotations

import warnings

import pytest

from tasks._contract import shadowed_arguments
from tasks.errors import ArgumentShadowWarning
from tasks.tabular import TabularClassification


def test_a_new_argument_named_like_a_base_argument_is_warned_about():
    with pytest.warns(ArgumentShadowWarning, match=r"takes 'gamma', which BaseTask already"):

        class Focal(TabularClassification):
            def __init__(self, gamma: float = 2.0, **kwargs):
                super().__init__(**kwargs)

    assert set(shadowed_arguments(Focal)) == {"gamma"}


def test_passing_it_on_or_declaring_it_shared_is_fine():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArgumentShadowWarning)

        class FasterDefault(TabularClassification):
            def __init__(self, lr: float = 3e-3, **kwargs):
                super().__init__(lr=lr, **kwargs)

        class Shared(TabularClassification):
            shared_arguments = ("patience",)

            def __init__(self, patience: int = 9, **kwargs):
                super().__init__(**kwargs)
                self.hparams.patience = patience

    assert shadowed_arguments(FasterDefault) == {} and shadowed_arguments(Shared) == {}


def test_the_documented_example_takes_no_base_argument():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "examples"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ArgumentShadowWarning)
            from focal_tabular import FocalTabularClassification
    finally:
        sys.path.pop(0)
    task = FocalTabularClassification(num_features=3, num_classes=2, focal_gamma=3.0)
    assert task.hparams.focal_gamma == 3.0 and task.hparams.gamma == 0.1  # untouched


def test_a_setting_a_subclass_ignores_is_refused():
    """task.loss=huber on a subclass with a loss of its own would change nothing."""
    from torch import nn

    from tasks._contract import ignored_options
    from tasks.api import compose
    from tasks.errors import ConfigError
    from tasks.tabular import TabularRegression

    class OwnLoss(TabularRegression):
        def configure_loss(self) -> nn.Module:
            return nn.L1Loss()

    class WrappedLoss(TabularRegression):
        def configure_loss(self) -> nn.Module:
            return super().configure_loss()

    assert set(ignored_options(OwnLoss)) == {"loss", "huber_delta"}
    assert ignored_options(WrappedLoss) == {} and ignored_options(TabularRegression) == {}

    from tasks.engine import runner as _runner

    facts = {"num_features": 3, "num_targets": 1}
    for name, cls in (("own", OwnLoss), ("wrapped", WrappedLoss)):
        globals()[f"_{name}"] = cls
    cfg = compose(
        "height_weight_regression",  # its preset sets task.loss=huber
        [f"task._name_={__name__}:_own"],
    )
    with pytest.raises(ConfigError, match=r"task.loss='huber' has no effect: .*OwnLoss"):
        _runner.build_task(cfg, facts)
    wrapped = compose("height_weight_regression", [f"task._name_={__name__}:_wrapped"])
    assert isinstance(_runner.build_task(wrapped, facts).criterion, nn.HuberLoss)
    plain = compose("diabetes_regression", [f"task._name_={__name__}:_own"])  # loss default
    assert isinstance(_runner.build_task(plain, facts).criterion, nn.L1Loss)


def test_what_a_task_reads_from_its_datamodule_is_declared():
    """Reads beyond data_facts() go through datamodule_value, which refuses undeclared
    names; mixins' declarations count (ClassificationOutputs' class_names)."""
    from types import SimpleNamespace

    import pytest

    from tasks._contract import datamodule_value, declared_datamodule_reads
    from tasks.forecast import Forecasting
    from tasks.text import TextClassification

    assert {"class_names", "idf", "tokenizer", "texts"} <= declared_datamodule_reads(
        TextClassification
    )
    assert declared_datamodule_reads(Forecasting) == {"time", "targets", "season"}
    task = TextClassification.__new__(TextClassification)  # no network needed
    datamodule = SimpleNamespace(class_names=["neg", "pos"])
    assert datamodule_value(task, datamodule, "class_names") == ["neg", "pos"]
    assert datamodule_value(task, datamodule, "texts", {}) == {}  # declared, absent
    assert datamodule_value(task, None, "idf") is None
    with pytest.raises(TypeError, match="reads datamodule.season without declaring it"):
        datamodule_value(task, datamodule, "season")
