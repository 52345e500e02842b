"""Every listed preset composes, names registered classes with valid arguments, and runs tiny."""

from __future__ import annotations

import pytest
from conftest import user_data_overrides

from tasks import _registry
from tasks._runner import accepted_arguments
from tasks.api import compose, list_presets, run

PRESETS = sorted(list_presets())


def test_there_is_at_least_one_preset():
    assert {
        "breast_cancer_mlp",
        "spam_mlp",
        "iris_mlp",
        "wine_mlp",
        "diabetes_regression",
        "height_weight_regression",
        "tabular_classification",
        "tabular_regression",
        "mnist_cnn",
        "fashion_mnist_cnn",
        "cifar10_cnn",
        "cifar10_resnet",
        "digits_cnn",
        "image_folder",
        "curves_conv1d",
        "curves_mlp",
        "curves_features_mlp",
        "curves_resnet",
        "gunpoint_cnn",
        "sequence_classification",
        "series_autoencoder",
        "electricity_lstm",
        "airline_lstm",
        "forecast_csv",
        "sentiment_lstm",
        "sentiment_gru",
        "movie_reviews_lstm",
        "names_lstm",
        "names_transformer",
        "text_char_lm",
    } <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_to_registered_classes(preset):
    cfg = compose(preset)
    assert cfg.preset == preset
    for kind in ("task", "datamodule"):
        section = cfg[kind]
        cls = _registry.load(kind, section._name_)
        accepted = accepted_arguments(cls)
        unknown = set(section) - {"_name_"} - (accepted or set(section))
        assert not unknown, f"{preset}: {kind} arguments {unknown} are not accepted by {cls}"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_fit_and_test_on_cpu(preset, tmp_path, monkeypatch):
    overrides = user_data_overrides(preset, tmp_path, monkeypatch)
    cfg = compose(
        preset, ["debug=fdr", "trainer.accelerator=cpu", f"output_dir={tmp_path}", *overrides]
    )
    summary = run(cfg)
    assert summary["preset"] == preset
    assert summary["metrics"], "test metrics were not recorded"
    assert (tmp_path / "summary.json").is_file()
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.parametrize(
    "group,option",
    [
        ("trainer", "cpu"),
        ("trainer", "gpu"),
        ("trainer", "gpu_bf16"),
        ("trainer", "gpu_fp16"),
        ("trainer", "ddp"),
        ("trainer", "ddp_cpu"),
        ("logger", "tensorboard"),
        ("logger", "none"),
        ("callbacks", "none"),
        ("debug", "tiny"),
        ("debug", "fdr"),
    ],
)
def test_config_groups_compose(group, option):
    cfg = compose("breast_cancer_mlp", [f"{group}={option}"])
    assert cfg.trainer.max_epochs >= 1
    if (group, option) == ("trainer", "gpu_bf16"):
        assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    if (group, option) == ("trainer", "ddp_cpu"):
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.accelerator == "cpu"
    if (group, option) == ("debug", "tiny"):
        assert cfg.trainer.max_epochs == 2  # debug overrides the preset's epochs


def test_experiment_selects_its_preset():
    cfg = compose(overrides=["experiment=breast_cancer_logreg"])
    assert cfg.preset == "breast_cancer_mlp"
    assert cfg.task.hidden_sizes == [] and cfg.task.optimizer == "sgd"


def test_plus_and_plain_task_override_mean_the_same():
    assert compose(overrides=["+task=breast_cancer_mlp"]) == compose(
        overrides=["task=breast_cancer_mlp"]
    )
