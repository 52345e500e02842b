"""Interrupted runs: a run killed with SIGKILL and resumed from ``last.ckpt`` ends exactly where
the uninterrupted run ends (same random numbers, same shuffles); its ``metrics.csv`` covers
the whole training."""

from __future__ import annotations

import json
import os
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


def _kill_after_epoch(tmp_path: Path, run_dir: str, epoch: int) -> int:
    """Start the run, SIGKILL it once ``last.ckpt`` holds ``epoch``; the checkpoint's epoch."""
    run = subprocess.Popen(
        [*RUN, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = tmp_path / run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while _checkpoint_epoch(last) < epoch:
            assert run.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint of that epoch in time"
            time.sleep(0.05)
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL
    return _checkpoint_epoch(last)


@pytest.mark.slow
def test_a_killed_and_resumed_run_ends_as_the_uninterrupted_one(tmp_path):
    _run(tmp_path, "hydra.run.dir=whole")
    saved = _kill_after_epoch(tmp_path, "killed", epoch=2)
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
