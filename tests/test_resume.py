"""Interrupted runs: a run killed with SIGKILL and resumed from ``last.ckpt`` ends exactly where
the uninterrupted run ends (same random numbers, same shuffles); its ``metrics.csv`` covers
the whole training."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ROOT

RUN = [
    sys.executable,
    "-m",
    "tasks",
    "+task=breast_cancer_mlp",  # dropout 0.1 and shuffled batches: both need the saved state
    "trainer.max_epochs=8",
    "+callbacks.slow._target_=slow_epochs.SlowEpochs",
    # checkpoints every epoch (the default writes on a clock): these tests kill the run at a
    # given epoch's last.ckpt, whatever the machine's write speed
    "callbacks.model_checkpoint.write_interval=0",
]


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _run(tmp_path: Path, *extra: str) -> None:
    result = subprocess.run(
        [*RUN, *extra], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not there yet, or being written
        return -1


def _signal_after_epoch(
    tmp_path: Path, run_dir: str, epoch: int, signum: int = signal.SIGKILL
) -> tuple[int, str]:
    """Start the run, send ``signum`` once ``last.ckpt`` holds ``epoch``; the run's exit code
    and output."""
    run = subprocess.Popen(
        [*RUN, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = tmp_path / run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while _checkpoint_epoch(last) < epoch:
            assert run.poll() is None, "the run ended before it could be stopped"
            assert time.monotonic() < deadline, "no checkpoint of that epoch in time"
            time.sleep(0.05)
        os.kill(run.pid, signum)
        output = run.communicate(timeout=120)[0]
    finally:
        run.kill()
        run.wait(timeout=60)
    return run.returncode, output


@pytest.mark.slow
def test_a_killed_and_resumed_run_ends_as_the_uninterrupted_one(tmp_path):
    _run(tmp_path, "hydra.run.dir=whole")
    code, _ = _signal_after_epoch(tmp_path, "killed", epoch=2)
    assert code == -signal.SIGKILL
    saved = _checkpoint_epoch(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    assert 2 <= saved < 7  # killed in the middle of training
    _run(tmp_path, "ckpt_path=killed/checkpoints/last.ckpt", "hydra.run.dir=resumed")

    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert resumed["metrics"] == pytest.approx(whole["metrics"], rel=1e-6, abs=1e-7)
    assert resumed["best_epoch"] == whole["best_epoch"]
    for name in ("best", "last"):
        a = torch.load(tmp_path / "whole" / "checkpoints" / f"{name}.ckpt", weights_only=True)
        b = torch.load(tmp_path / "resumed" / "checkpoints" / f"{name}.ckpt", weights_only=True)
        for key, value in a["state_dict"].items():
            torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-6, atol=1e-7)
    # the history covers all 8 epochs, the ones before the kill included, as the whole run's
    history = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    expected = pd.read_csv(tmp_path / "whole" / "metrics.csv")
    assert sorted(history.dropna(subset=["val/loss"])["epoch"].unique()) == list(range(8))
    pd.testing.assert_frame_equal(history, expected, check_exact=False, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_stop_with_a_partial_summary_and_the_resume_command(
    tmp_path, signum, code
):
    """What a scheduler (SIGTERM) or a person (Ctrl-C) gets: a non-zero exit, a summary
    marked interrupted, the last checkpoint kept, and a resume command that works."""
    returncode, output = _signal_after_epoch(tmp_path, "stopped", epoch=1, signum=signum)
    assert returncode == code, output[-3000:]
    name = signal.Signals(signum).name
    assert f"interrupted by {name} after " in output
    summary = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == name
    last = Path(summary["last_checkpoint"])
    assert last == tmp_path / "stopped" / "checkpoints" / "last.ckpt" and last.is_file()

    resume = next(line for line in output.splitlines() if line.startswith("resume: "))
    args = shlex.split(resume.removeprefix("resume: "))
    assert f"ckpt_path={last}" in args and "hydra.run.dir=stopped" not in args
    finished = subprocess.run(
        [sys.executable, *args[1:]], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    folder = next(
        line.removeprefix("run folder: ")
        for line in finished.stdout.splitlines()
        if line.startswith("run folder: ")
    )
    resumed = json.loads((Path(folder) / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs"] == 8
