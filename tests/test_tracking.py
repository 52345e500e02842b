"""logger=mlflow: a real local MLflow store, read back with MLflow's own client."""

from __future__ import annotations

import builtins

import pytest

from tasks.api import run
from tasks.errors import ConfigError

mlflow = pytest.importorskip("mlflow")


def test_a_run_logs_metrics_params_and_files_to_a_local_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store is ./mlruns
    out = tmp_path / "run"
    summary = run("iris_mlp", ["debug=tiny", "logger=mlflow", f"output_dir={out}"])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("iris_mlp")  # the preset names the experiment
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id])
    metrics = found.data.metrics
    assert metrics["test/acc"] == pytest.approx(summary["metrics"]["test/acc"])
    assert "val/loss" in metrics
    params = found.data.params
    assert "task.lr" in params and "datamodule.batch_size" in params
    assert params["seed"] == "42"
    tags = found.data.tags
    assert tags["preset"] == "iris_mlp" and tags["run_folder"] == str(out)
    assert tags["best_checkpoint"] == summary["best_checkpoint"]
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"report.html", "summary.json", "config.yaml", "history.png"} <= names


def test_two_runs_of_a_preset_share_its_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        run("iris_mlp", ["debug=tiny", "logger=mlflow", f"output_dir={tmp_path / f'r{i}'}"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("iris_mlp")
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_without_mlflow_the_logger_is_one_clear_line(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ConfigError, match=r'pip install "lightning-tasks\[mlflow\]"'):
        run("iris_mlp", ["debug=tiny", "logger=mlflow", f"output_dir={tmp_path / 'r'}"])
