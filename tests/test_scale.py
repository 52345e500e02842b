"""Scaling by config: precision, compile, FSDP and launcher presets; sweeps and their table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from conftest import run_cli

from tasks.api import compose, run


def test_precision_compile_and_strategy_presets_compose():
    cfg = compose("iris_mlp", ["trainer=ddp_cpu", "precision=bf16", "compile=on"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.strategy == "ddp"
    assert cfg.callbacks.compile._target_ == "tasks.callbacks.CompileModel"
    assert compose("iris_mlp", ["+precision=fp16"]).trainer.precision == "16-mixed"
    fsdp = compose("iris_mlp", ["trainer=fsdp"]).trainer
    assert (fsdp.strategy, fsdp.accelerator, fsdp.precision) == ("fsdp", "gpu", "bf16-mixed")
    accumulate = compose("iris_mlp", ["trainer.accumulate_grad_batches=4"])
    assert accumulate.trainer.accumulate_grad_batches == 4


def test_compile_preset_compiles_the_network_that_trains(tmp_path, monkeypatch):
    """``nn.Module.compile`` as torch defines it (the module's calls then go through
    ``_compiled_call_impl``), with a counting wrapper in place of torch.compile, whose code
    generation takes minutes on a CPU."""
    compiled = []

    def fake_compile(self, **options):
        call, seen = self._call_impl, {"training": 0}

        def compiled_call(*args, **kwargs):
            seen["training"] += self.training
            return call(*args, **kwargs)

        self._compiled_call_impl = compiled_call
        compiled.append((self, options, seen))

    monkeypatch.setattr(torch.nn.Module, "compile", fake_compile)
    overrides = ["compile=on", "debug=tiny", "trainer.enable_progress_bar=false"]
    summary = run(compose("iris_mlp", [*overrides, f"output_dir={tmp_path}"]))
    ((network, options, seen),) = compiled
    assert type(network).__name__ == "TabularNet"
    assert options == {"mode": "default", "dynamic": None, "fullgraph": False}
    # every training step ran the compiled call, on the network whose weights were saved
    assert seen["training"] >= summary["global_step"] == 6
    best = torch.load(summary["best_checkpoint"], weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in best)  # loads into an uncompiled task
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, best[f"model.{key}"], rtol=0, atol=0)
    assert all(math.isfinite(v) for v in summary["metrics"].values())
    assert summary["metrics"]["test/acc"] > 0.5  # three balanced species: chance is 1/3


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("local", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ],
)
def test_launcher_presets_compose(launcher, target):
    result = run_cli(
        "+task=iris_mlp", f"launcher={launcher}", "--cfg", "hydra", "-p", "hydra.launcher"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"_target_: {target}" in result.stdout


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    result = run_cli(
        "-m",
        "+task=iris_mlp",
        "debug=tiny",
        "task.lr=0.01,-1,0.05",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode != 0  # Hydra reports the failed job at the end
    table = pd.read_csv(tmp_path / "sweep_results.csv")
    assert table.job.tolist() == [0, 1, 2]
    assert table.status.tolist() == ["completed", "failed", "completed"]
    assert "task.lr must be positive" in table.error[1]
    assert table["task.lr"].tolist() == [0.01, -1, 0.05]
    assert table["test/acc"].notna().tolist() == [True, False, True]
    assert all((tmp_path / str(job) / "summary.json").is_file() for job in (0, 2))


@pytest.mark.slow
@pytest.mark.parametrize(("monitor", "mode"), [("val/loss", "min"), ("val/acc", "max")])
def test_optuna_sweep_optimises_the_monitored_score(tmp_path, monitor, mode):
    result = run_cli(
        "-m",
        "+task=iris_mlp",
        "debug=tiny",
        "sweep=optuna",
        "hydra.sweeper.n_trials=2",
        f"monitor={monitor}",
        f"monitor_mode={mode}",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "sweep_results.csv")
    assert len(table) == 2 and (table.status == "completed").all()
    assert table["task.lr"].between(1e-4, 1e-1).all()
    scores = table[f"best {monitor}"]
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert f"best_value: {scores.min() if mode == 'min' else scores.max()}" in best


def test_optuna_preset_keeps_going_after_failed_trials():
    """The plugin's default max_failure_rate (0.0) stops a study at its first failed trial;
    the preset records failures (sweep_results.csv) and goes on."""
    result = run_cli("+task=iris_mlp", "sweep=optuna", "--cfg", "hydra", "-p", "hydra.sweeper")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max_failure_rate: 1.0" in result.stdout
    assert "_target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper" in (
        result.stdout
    )
