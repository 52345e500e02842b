"""End-to-end runs: the CLI's run directory, checkpoint reload, test and predict modes, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import run_cli

from datamodules.tabular import TabularDataModule
from tasks.api import compose, run
from tasks.errors import ConfigError, DataError, UnknownNameError
from tasks.tabular import TabularClassification

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One real CLI training run of the default preset, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli(
        "+task=breast_cancer_mlp", "debug=tiny", f"hydra.run.dir={run_dir}", cwd=run_dir.parent
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def _majority_share() -> float:
    """Accuracy of always answering breast_cancer's commoner diagnosis."""
    from sklearn.datasets import load_breast_cancer

    target = load_breast_cancer().target
    return float(np.bincount(target).max() / len(target))


def test_cli_run_writes_the_run_directory(cli_run):
    for name in (
        "config.yaml",
        "summary.json",
        "metrics.csv",
        "history.png",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        ".hydra/overrides.yaml",
    ):
        assert (cli_run / name).is_file(), name
    summary = json.loads((cli_run / "summary.json").read_text())
    assert summary["preset"] == "breast_cancer_mlp"
    assert summary["epochs"] == 2 and summary["seed"] == 42
    # six steps already beat always answering the commoner diagnosis (a broken model would not)
    assert summary["metrics"]["test/acc"] > _majority_share() + 0.1
    assert summary["versions"]["lightning-tasks"]
    assert summary["best_checkpoint"].endswith("best.ckpt")
    config = yaml.safe_load((cli_run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 2  # resolved, debug applied
    assert config["datamodule"]["seed"] == 42  # interpolation resolved
    metrics = pd.read_csv(cli_run / "metrics.csv")
    assert {"train/loss", "val/loss", "val/acc", "test/acc"} <= set(metrics.columns)
    confusion = pd.read_csv(cli_run / "confusion_matrix.csv", index_col=0)
    assert list(confusion.columns) == ["benign", "malignant"]


def test_checkpoint_reload_rebuilds_the_task_alone(cli_run):
    task = TabularClassification.load_from_checkpoint(cli_run / "checkpoints/best.ckpt")
    assert task.hparams.num_features == 30 and task.hparams.num_classes == 2
    assert task.hparams.hidden_sizes == [32, 16]
    checkpoint = torch.load(cli_run / "checkpoints/best.ckpt", weights_only=True)
    state = checkpoint["TabularDataModule"]
    assert len(state["prep"]["center"]) == 30 and state["classes"] == ["benign", "malignant"]


def test_test_mode_reproduces_the_test_figures(cli_run, tmp_path):
    trained = json.loads((cli_run / "summary.json").read_text())
    cfg = compose(
        "breast_cancer_mlp",
        [
            "mode=test",
            f"ckpt_path={cli_run}/checkpoints/best.ckpt",
            f"output_dir={tmp_path}",
            "trainer.enable_progress_bar=false",
            "debug=tiny",
        ],
    )
    summary = run(cfg)
    assert summary["mode"] == "test"
    assert summary["metrics"]["test/acc"] == pytest.approx(trained["metrics"]["test/acc"])
    assert (tmp_path / "confusion_matrix.csv").is_file()


def test_predict_mode_keeps_input_order_and_matches_the_model(cli_run, tmp_path):
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    rows = frame.sample(n=37, random_state=3)  # shuffled, so order matters
    rows.to_csv(tmp_path / "new.csv", index=False)
    ckpt = cli_run / "checkpoints/best.ckpt"
    cfg = compose(
        "breast_cancer_mlp",
        [
            "mode=predict",
            f"ckpt_path={ckpt}",
            f"datamodule.predict_path={tmp_path}/new.csv",
            f"output_dir={tmp_path}/out",
        ],
    )
    summary = run(cfg)
    predictions = pd.read_csv(tmp_path / "out/predictions.csv")
    assert summary["predictions"]["rows"] == 37
    assert list(predictions["row"]) == list(range(37))
    assert set(predictions["pred"]) <= {"benign", "malignant"}
    # the same rows pushed through the restored preprocessing and model by hand
    prep = torch.load(ckpt, weights_only=True)["TabularDataModule"]["prep"]
    x = (rows.to_numpy() - np.asarray(prep["center"])) / np.asarray(prep["scale"])
    task = TabularClassification.load_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        prob = task(torch.tensor(x, dtype=torch.float32)).softmax(-1).numpy()
    np.testing.assert_allclose(
        predictions[["prob_benign", "prob_malignant"]].to_numpy(), prob, rtol=1e-5, atol=1e-6
    )


def _record_training_start(monkeypatch) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """(global step, network weights) of every fit as its first training step is about to run."""
    starts = []
    on_train_start = TabularClassification.on_train_start

    def record(self):
        on_train_start(self)
        weights = {k: v.detach().clone() for k, v in self.state_dict().items()}
        starts.append((self.trainer.global_step, weights))

    monkeypatch.setattr(TabularClassification, "on_train_start", record)
    return starts


def test_resume_from_last_checkpoint_continues_training(cli_run, tmp_path, monkeypatch):
    last = torch.load(cli_run / "checkpoints/last.ckpt", weights_only=True)
    starts = _record_training_start(monkeypatch)
    cfg = compose(
        "breast_cancer_mlp",
        [
            "debug=tiny",
            "trainer.max_epochs=3",
            f"ckpt_path={cli_run}/checkpoints/last.ckpt",
            f"output_dir={tmp_path}",
        ],
    )
    summary = run(cfg)
    # training went on from the checkpoint's weights and step count, not from scratch
    ((step, weights),) = starts
    assert step == last["global_step"] == 6
    for key, value in last["state_dict"].items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=0)
    assert summary["epochs"] == 3
    assert summary["global_step"] == last["global_step"] + 3  # debug=tiny: 3 batches an epoch
    resumed = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2
    assert any(not torch.equal(resumed["state_dict"][k], v) for k, v in last["state_dict"].items())
    history = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["val/loss"])
    assert history["epoch"].tolist() == [0, 1, 2]  # the earlier epochs come from the first run


def test_summary_names_the_last_checkpoint_when_the_first_epoch_is_the_best(tmp_path):
    summary = run(compose("iris_mlp", ["trainer.max_epochs=1", *QUIET, f"output_dir={tmp_path}"]))
    assert (tmp_path / "checkpoints/last.ckpt").is_file()
    assert summary["last_checkpoint"] == str(tmp_path / "checkpoints/last.ckpt")


def test_user_csv_through_the_api(table_csv, tmp_path):
    cfg = compose(
        "breast_cancer_mlp",
        [
            "datamodule.dataset=null",
            f"datamodule.path={table_csv}",
            "datamodule.target=label",
            "trainer.max_epochs=30",
            "trainer.enable_progress_bar=false",
            f"output_dir={tmp_path}",
            "task.lr=0.01",
        ],
    )
    summary = run(cfg)
    assert summary["metrics"]["test/acc"] >= 0.8  # the label is a simple function of a and b


@pytest.mark.parametrize(
    "overrides,error,message",
    [
        (["mode=predict"], ConfigError, "needs a trained model: pass ckpt_path"),
        (["mode=serve"], ConfigError, "mode='serve' is not one of train, test, predict"),
        (["ckpt_path=/no/such.ckpt"], DataError, "no such checkpoint file '/no/such.ckpt'"),
        (
            ["+task.lrr=0.1"],
            ConfigError,
            "task.lrr is not an argument of tasks.tabular.TabularClassification"
            ". Did you mean task.lr?",
        ),
        (["task.num_classes=3"], ConfigError, "task.num_classes=3 contradicts the data"),
        (["task.optimizer=adamm"], ConfigError, "task.optimizer='adamm' is not supported"),
        (
            ["task._name_=tabular_clasification"],
            UnknownNameError,
            "Did you mean 'tabular_classification'",
        ),
        (["datamodule.dataset=iriss"], ConfigError, "Did you mean 'iris'"),
    ],
)
def test_bad_configuration_fails_early_with_a_clear_message(overrides, error, message, tmp_path):
    cfg = compose("breast_cancer_mlp", [*overrides, f"output_dir={tmp_path}", "debug=fdr"])
    with pytest.raises(error) as info:
        run(cfg)
    assert message in str(info.value)


def test_cli_without_task_prints_usage_not_a_traceback():
    result = run_cli()
    assert result.returncode == 2
    assert "usage: python -m tasks +task=PRESET" in result.stdout
    assert "breast_cancer_mlp" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_unknown_preset_is_one_clear_line():
    result = run_cli("+task=breast_cancer_mpl")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: unknown preset 'breast_cancer_mpl'. Did you mean 'breast_cancer_mlp'?"
    )
    assert "Traceback" not in result.stderr


def test_cli_user_error_is_one_line_and_trace_on_request(tmp_path):
    args = ("+task=breast_cancer_mlp", "mode=test", f"hydra.run.dir={tmp_path}/r")
    result = run_cli(*args)
    assert result.returncode == 2
    assert "error: mode=test needs a trained model: pass ckpt_path=" in result.stderr
    assert "Traceback" not in result.stderr
    traced = run_cli(*args, env={"LIGHTNING_TASKS_FULL_ERROR": "1"})
    assert traced.returncode != 0 and "Traceback" in traced.stderr


def test_cli_missing_required_value_is_reported(tmp_path):
    result = run_cli(
        "+task=breast_cancer_mlp",
        "datamodule.dataset=null",
        "datamodule.path=???",
        f"hydra.run.dir={tmp_path}/r",
    )
    assert result.returncode == 2
    assert (
        "error: missing value for datamodule.path: set it with datamodule.path=VALUE"
        in result.stderr
    )


def test_cli_list_json_names_origins():
    result = run_cli("list", "--json")
    assert result.returncode == 0
    listing = json.loads(result.stdout)
    assert listing["presets"]["breast_cancer_mlp"]["origin"] == "built-in"
    assert (
        listing["tasks"]["tabular_classification"]["value"] == "tasks.tabular:TabularClassification"
    )
    assert listing["datamodules"]["tabular"]["distribution"] == "lightning-tasks"


def test_datamodule_state_survives_a_round_trip(table_csv, tmp_path):
    """Restored preprocessing is the checkpoint's, not refitted on the rows at hand: on the
    training table shifted by +100, a refit would centre the features again; the restored
    statistics leave every row 100 / scale above the original one."""
    features = ["a", "b", "c", "d"]
    dm = TabularDataModule(path=str(table_csv), target="label", seed=1)
    dm.setup("fit")
    prep = dm.state_dict()["prep"]
    center, scale = np.asarray(prep["center"]), np.asarray(prep["scale"])
    shifted = pd.read_csv(table_csv)
    shifted[features] += 100.0
    shifted.to_csv(tmp_path / "shifted.csv", index=False)
    restored = TabularDataModule(
        path=str(tmp_path / "shifted.csv"),
        target="label",
        seed=1,
        predict_path=str(tmp_path / "shifted.csv"),
    )
    restored.load_state_dict(dm.state_dict())
    restored.setup("test")  # what mode=test does once ckpt_path restored the state
    offset = torch.tensor(100.0 / scale, dtype=torch.float32)
    for split in ("train_data", "val_data", "test_data"):
        (x, _, y), (x0, _, y0) = getattr(restored, split), getattr(dm, split)
        torch.testing.assert_close(x, x0 + offset, rtol=1e-5, atol=1e-4)
        assert torch.equal(y, y0)
    restored.setup("predict")
    expected = (shifted[features].to_numpy() - center) / scale
    np.testing.assert_allclose(restored.predict_data[0].numpy(), expected, rtol=1e-5, atol=1e-4)
    assert restored.state_dict() == dm.state_dict()
    assert restored.class_names == dm.class_names == ["no", "yes"]


def _val_history(run_dir, monitor: str) -> pd.Series:
    """``monitor`` per epoch, as the run's metrics.csv has it."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return metrics.dropna(subset=[monitor]).set_index("epoch")[monitor]


@pytest.mark.parametrize("monitor,mode", [("val/loss", "min"), ("val/acc", "max")])
def test_best_checkpoint_is_the_best_epoch_of_the_history(monitor, mode, tmp_path):
    overrides = [
        "trainer.max_epochs=8",
        "task.lr=0.3",  # so large that the score jumps about: the best epoch is not the last
        f"monitor={monitor}",
        f"monitor_mode={mode}",
        *QUIET,
        f"output_dir={tmp_path}",
    ]
    summary = run(compose("iris_mlp", overrides))
    history = _val_history(tmp_path, monitor)
    assert history.index.tolist() == list(range(8))
    # the first of equal scores: a later epoch must do strictly better to replace it
    best = int(history.idxmin() if mode == "min" else history.idxmax())
    assert best < 7, "the last epoch is the best: the test would not see a checkpoint of it"
    assert torch.load(tmp_path / "checkpoints/best.ckpt", weights_only=True)["epoch"] == best
    assert summary["best_epoch"] == best + 1
    assert summary["best_score"]["value"] == pytest.approx(history[best], rel=1e-6)


def test_early_stopping_ends_the_run_once_val_loss_stops_improving(tmp_path):
    patience, max_epochs = 2, 20
    overrides = [
        f"trainer.max_epochs={max_epochs}",
        "task.lr=0.3",
        f"callbacks.early_stopping.patience={patience}",
        *QUIET,
        f"output_dir={tmp_path}",
    ]
    summary = run(compose("iris_mlp", overrides))
    losses = _val_history(tmp_path, "val/loss").tolist()
    # EarlyStopping's rule: stop after `patience` epochs in a row without a lower val/loss
    best, wait, expected = float("inf"), 0, max_epochs
    for epoch, loss in enumerate(losses):
        best, wait = (loss, 0) if loss < best else (best, wait + 1)
        if wait >= patience:
            expected = epoch + 1
            break
    assert expected < max_epochs, "val/loss kept improving: nothing to stop"
    assert summary["epochs"] == len(losses) == expected
    assert summary["stopped_early"] and summary["max_epochs"] == max_epochs


def test_min_steps_raises_the_epochs_of_a_small_data_run(tmp_path, caplog):
    """iris has 105 training rows: 2 batches of 64 an epoch, so 3 epochs are 6 steps; with
    trainer.min_steps=15 the run takes 8 epochs (16 steps) and says why."""
    overrides = [
        "trainer.max_epochs=3",
        "datamodule.batch_size=64",
        "+trainer.min_steps=15",
        "callbacks.early_stopping.patience=1",  # would stop at once: min_steps holds it back
        *QUIET,
        f"output_dir={tmp_path / 'raised'}",
    ]
    with caplog.at_level("INFO", logger="tasks.engine.runner"):
        summary = run(compose("iris_mlp", overrides))
    assert summary["max_epochs"] == 8 and summary["global_step"] == 16, summary
    assert "max_epochs is raised from 3 to 8 to reach trainer.min_steps=15" in caplog.text
    plain = run(compose("iris_mlp", [*overrides[:2], *QUIET, f"output_dir={tmp_path / 'p'}"]))
    assert plain["max_epochs"] == 3 and plain["global_step"] == 6
