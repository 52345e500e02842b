"""Every listed preset composes, names registered classes with valid arguments, and runs tiny."""

from __future__ import annotations

import importlib.util
import math

import pandas as pd
import pytest
import torch
from conftest import user_data_overrides

from tasks.api import compose, list_presets, run
from tasks.engine import registry as _registry
from tasks.engine.runner import accepted_arguments, build_trainer
from tasks.errors import ConfigError

PRESETS = sorted(list_presets())
GPU = torch.cuda.is_available()
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


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
    reported = {**summary["metrics"], **summary.get("baseline", {}), **summary["fit_metrics"]}
    undefined = {k: v for k, v in reported.items() if not math.isfinite(v)}
    assert not undefined, f"{preset}: metrics that are not finite numbers: {undefined}"
    assert (tmp_path / "summary.json").is_file()
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.parametrize(
    "group,option,accelerator,devices,strategy,precision",
    [
        ("trainer", "cpu", "CPUAccelerator", 1, "SingleDeviceStrategy", "32-true"),
        ("trainer", "ddp_cpu", "CPUAccelerator", 2, "DDPStrategy", "32-true"),
        ("precision", "fp32", "CPUAccelerator", 1, "SingleDeviceStrategy", "32-true"),
        ("precision", "bf16", "CPUAccelerator", 1, "SingleDeviceStrategy", "bf16-mixed"),
        ("trainer", "gpu", "CUDAAccelerator", 1, "SingleDeviceStrategy", "32-true"),
        ("trainer", "gpu_bf16", "CUDAAccelerator", 1, "SingleDeviceStrategy", "bf16-mixed"),
        ("trainer", "gpu_fp16", "CUDAAccelerator", 1, "SingleDeviceStrategy", "16-mixed"),
        ("trainer", "ddp", "CUDAAccelerator", "all", "DDPStrategy", "32-true"),
        ("trainer", "fsdp", "CUDAAccelerator", "all", "FSDPStrategy", "bf16-mixed"),
    ],
)
def test_trainer_and_precision_groups_build_the_trainer_they_name(
    group, option, accelerator, devices, strategy, precision, tmp_path
):
    overrides = [f"{group}={option}"] + (["trainer=cpu"] if group == "precision" else [])
    cfg = compose("breast_cancer_mlp", overrides)
    assert cfg.trainer.precision == precision
    if accelerator == "CUDAAccelerator" and not GPU:
        assert cfg.trainer.accelerator == "gpu"  # asked for, and refused in one clear line
        with pytest.raises(ConfigError, match="trainer.accelerator=gpu but this machine has no"):
            build_trainer(cfg, tmp_path)
        return
    trainer = build_trainer(cfg, tmp_path)
    assert type(trainer.accelerator).__name__ == accelerator
    assert type(trainer.strategy).__name__ == strategy
    assert trainer.num_devices == (torch.cuda.device_count() if devices == "all" else devices)
    assert trainer.precision == precision


def _tiny_run(tmp_path, *overrides: str) -> dict:
    cfg = compose("breast_cancer_mlp", [*overrides, *QUIET, f"output_dir={tmp_path}"])
    return run(cfg)


def _test_rows(run_dir) -> int:
    """Test rows the run evaluated: the sum of its confusion matrix."""
    return int(pd.read_csv(run_dir / "confusion_matrix.csv", index_col=0).to_numpy().sum())


def test_debug_tiny_runs_two_short_epochs(tmp_path):
    summary = _tiny_run(tmp_path, "debug=tiny")
    assert summary["epochs"] == 2 and summary["global_step"] == 2 * 3  # limit_train_batches=3
    assert _test_rows(tmp_path) == 2 * 32  # limit_test_batches=2 of eval batches of 32
    history = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["val/loss"])
    assert history["epoch"].tolist() == [0, 1]
    assert (tmp_path / "checkpoints/best.ckpt").is_file()


def test_debug_fdr_runs_one_batch_of_each_without_a_logger(tmp_path):
    summary = _tiny_run(tmp_path, "debug=fdr")
    assert summary["epochs"] == 1 and summary["global_step"] == 1
    assert _test_rows(tmp_path) == 32
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "history.png").exists()


@pytest.mark.parametrize("logger", ["csv", "none", "tensorboard"])
def test_logger_groups_decide_the_metric_files(logger, tmp_path):
    if logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match="logger.tensorboard could not be built"):
            _tiny_run(tmp_path, "debug=tiny", "logger=tensorboard")
        return
    summary = _tiny_run(tmp_path, "debug=tiny", f"logger={logger}")
    assert summary["epochs"] == 2
    assert (tmp_path / "metrics.csv").is_file() == (logger != "none")
    assert (tmp_path / "history.png").is_file() == (logger != "none")
    assert any((tmp_path / "tensorboard").glob("**/events.out.tfevents.*")) == (
        logger == "tensorboard"
    )


def test_default_callbacks_checkpoint_and_stop_early(tmp_path):
    cfg = compose("breast_cancer_mlp", ["debug=tiny"])
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    callbacks = build_trainer(cfg, tmp_path).callbacks
    assert any(isinstance(c, ModelCheckpoint) for c in callbacks)  # timed: TimedModelCheckpoint
    assert any(isinstance(c, EarlyStopping) for c in callbacks)
    summary = _tiny_run(tmp_path / "run", "debug=tiny")
    assert summary["best_checkpoint"] == str(tmp_path / "run/checkpoints/best.ckpt")
    assert (tmp_path / "run/checkpoints/last.ckpt").is_file()


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(["debug=tiny", "callbacks=none"], id="callbacks=none"),
        pytest.param(["debug=fdr"], id="debug=fdr"),
    ],
)
def test_groups_without_checkpoints_write_none(overrides, tmp_path):
    summary = _tiny_run(tmp_path, *overrides)
    assert summary["epochs"] >= 1  # it trained
    assert not list(tmp_path.glob("**/*.ckpt"))
    assert not summary.get("best_checkpoint")


def test_callbacks_none_drops_early_stopping_and_the_named_checkpoint(tmp_path):
    cfg = compose("breast_cancer_mlp", ["debug=tiny", "callbacks=none"])
    callbacks = build_trainer(cfg, tmp_path).callbacks
    assert not any(type(c).__name__ == "EarlyStopping" for c in callbacks)
    assert not any(getattr(c, "filename", None) == "best" for c in callbacks)


def test_experiment_selects_its_preset():
    cfg = compose(overrides=["experiment=breast_cancer_logreg"])
    assert cfg.preset == "breast_cancer_mlp"
    assert cfg.task.hidden_sizes == [] and cfg.task.optimizer == "sgd"


def test_plus_and_plain_task_override_mean_the_same():
    assert compose(overrides=["+task=breast_cancer_mlp"]) == compose(
        overrides=["task=breast_cancer_mlp"]
    )
