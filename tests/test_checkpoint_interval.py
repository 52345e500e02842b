"""Checkpoints written on a clock (``tasks.callbacks.TimedModelCheckpoint``): not two files
per epoch, ``best.ckpt`` still exactly the best epoch, and a run killed or stopped still
leaves a ``last.ckpt`` to resume from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pandas as pd
import pytest
import torch
from conftest import ROOT

from tasks.api import compose, run
from tasks.callbacks import TimedModelCheckpoint
from tasks.engine import checkpoint_io as _checkpoint_io
from tasks.engine.runner import build_datamodule
from tasks.errors import ConfigError
from tasks.tabular import TabularClassification

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
CLOCK_ONLY = [  # nothing written before the end unless an hour passes
    "callbacks.model_checkpoint.write_interval=3600",
    "callbacks.model_checkpoint.max_overhead=0",
]


@pytest.fixture
def writes(monkeypatch) -> list[tuple[str, int]]:
    """(file name, epoch) of every checkpoint the run writes."""
    written: list[tuple[str, int]] = []
    save = _checkpoint_io.AtomicCheckpointIO.save_checkpoint

    def spy(self, checkpoint, path, storage_options=None):
        written.append((Path(path).name, int(checkpoint["epoch"])))
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(_checkpoint_io.AtomicCheckpointIO, "save_checkpoint", spy)
    return written


def test_many_short_epochs_write_each_checkpoint_once_and_best_is_the_best_epoch(tmp_path, writes):
    epochs = 10
    cfg = compose(
        "iris_mlp",
        [
            f"trainer.max_epochs={epochs}",
            "task.lr=0.3",  # so large that the score jumps about: the best epoch is not the last
            "callbacks.early_stopping=null",
            *CLOCK_ONLY,
            *QUIET,
            f"output_dir={tmp_path}",
        ],
    )
    summary = run(cfg)
    # written when fitting ended, once each (one file a epoch or two before)
    history = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["val/loss"])
    history = history.set_index("epoch")["val/loss"]
    best = int(history.idxmin())  # the first of equal scores
    assert best < epochs - 1, "the last epoch is the best: the test would not tell them apart"
    assert sorted(writes) == [("best.ckpt", best), ("last.ckpt", epochs - 1)]

    checkpoint = torch.load(tmp_path / "checkpoints/best.ckpt", weights_only=True)
    assert checkpoint["epoch"] == best
    assert summary["best_epoch"] == best + 1
    assert summary["best_score"]["value"] == pytest.approx(history[best], rel=1e-6)
    # the weights in best.ckpt score the best epoch's validation loss again
    task = TabularClassification.load_from_checkpoint(tmp_path / "checkpoints/best.ckpt")
    datamodule = build_datamodule(cfg)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (scores,) = trainer.validate(task, datamodule=datamodule, verbose=False)
    assert scores["val/loss"] == pytest.approx(history[best], rel=1e-5)
    last = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert last["epoch"] == epochs - 1
    assert any(
        not torch.equal(last["state_dict"][k], v) for k, v in checkpoint["state_dict"].items()
    )


def _trainer(**changes) -> SimpleNamespace:
    values = {
        "should_stop": False,
        "max_epochs": 100,
        "current_epoch": 3,
        "max_steps": -1,
        "global_step": 40,
        "strategy": SimpleNamespace(broadcast=lambda value, src=0: value),
    }
    return SimpleNamespace(**{**values, **changes})


def _clock(callback: TimedModelCheckpoint, since_write: float, write_took: float) -> None:
    callback._written_at = time.monotonic() - since_write
    callback._write_times.clear()
    callback._write_times.append(write_took)


def test_a_write_is_due_after_the_interval_while_cheap_or_at_the_last_epoch():
    callback = TimedModelCheckpoint(write_interval=60, max_overhead=0.05)
    _clock(callback, since_write=61, write_took=10.0)
    assert callback._due(_trainer())  # the interval is over, whatever a write costs
    _clock(callback, since_write=10, write_took=0.4)
    assert callback._due(_trainer())  # 0.4 s in 10 s: under 5 %
    _clock(callback, since_write=10, write_took=0.6)
    assert not callback._due(_trainer())  # 6 %: wait
    assert callback._due(_trainer(current_epoch=99))  # the last epoch of max_epochs
    assert callback._due(_trainer(should_stop=True))  # early stopping ends the run
    assert callback._due(_trainer(max_steps=40))
    _clock(callback, since_write=10, write_took=0.4)
    callback._write_times.extend([9.0, 9.0])  # one cheap write among slow ones: still cheap
    assert callback._due(_trainer())
    callback._write_times.append(9.0)  # three slow ones in a row: wait for the interval
    assert not callback._due(_trainer())
    clock_only = TimedModelCheckpoint(write_interval=60, max_overhead=0)
    _clock(clock_only, since_write=59, write_took=0.0)
    assert not clock_only._due(_trainer())


@pytest.mark.parametrize(
    "setting",
    [{"write_interval": -1}, {"max_overhead": 1.5}, {"train_time_interval": 10}],
)
def test_settings_out_of_range_or_checkpointing_mid_epoch_are_config_errors(setting):
    with pytest.raises(ConfigError, match=f"callbacks.model_checkpoint.{next(iter(setting))}"):
        TimedModelCheckpoint(**setting)


def test_runs_checkpointed_by_lightnings_callback_resume_into_this_one():
    ours = TimedModelCheckpoint(monitor="val/loss", mode="min")
    theirs = L.pytorch.callbacks.ModelCheckpoint(monitor="val/loss", mode="min")
    assert ours.state_key == theirs.state_key


def _checkpoint_run(folder: Path, *overrides: str) -> None:
    run(
        compose(
            "iris_mlp",
            [
                "trainer.max_epochs=4",
                "task.lr=0.01",  # small: the score improves at every epoch, the last is the best
                "callbacks.early_stopping=null",
                *QUIET,
                *overrides,
                f"output_dir={folder}",
            ],
        )
    )


def _same(ours: object, theirs: object, where: str, folders: tuple[str, str]) -> None:
    """Equal checkpoint contents, paths inside the two run folders counted as equal."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        ours = {k.replace(*folders) if isinstance(k, str) else k: v for k, v in ours.items()}
        assert set(ours) == set(theirs), where
        for key in theirs:
            _same(ours[key], theirs[key], f"{where}/{key}", folders)
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _same(a, b, f"{where}[{i}]", folders)
    elif isinstance(theirs, torch.Tensor):
        assert torch.equal(ours, theirs), where
    elif isinstance(theirs, str):
        assert ours.replace(*folders) == theirs, where
    else:
        assert ours == theirs, where


@pytest.mark.parametrize("writing", ["on the clock", "at every epoch"])
def test_checkpoints_hold_what_lightnings_callback_writes(tmp_path, monkeypatch, writing):
    """The same best.ckpt and last.ckpt as Lightning's ModelCheckpoint, whether kept in
    memory until the end or written at once; at an epoch that improves, last.ckpt is taken
    from best.ckpt's state (one gathering of the state per epoch, not two)."""
    _checkpoint_run(
        tmp_path / "theirs",
        "callbacks.model_checkpoint._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        "~callbacks.model_checkpoint.write_interval",
        "~callbacks.model_checkpoint.max_overhead",
        "~callbacks.model_checkpoint.memory_limit_mb",
    )
    from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

    dumps: list[int] = []
    dump = _CheckpointConnector.dump_checkpoint

    def counted(self, *args, **kwargs):
        dumps.append(self.trainer.current_epoch)
        return dump(self, *args, **kwargs)

    monkeypatch.setattr(_CheckpointConnector, "dump_checkpoint", counted)
    import tasks.callbacks as callbacks_module

    copies: list[int] = []  # whole checkpoints copied into memory, by epoch
    copied = callbacks_module._copied

    def counted_copy(value):
        if isinstance(value, dict) and {"state_dict", "epoch"} <= value.keys():
            copies.append(int(value["epoch"]))
        return copied(value)

    monkeypatch.setattr(callbacks_module, "_copied", counted_copy)
    clock = (
        CLOCK_ONLY if writing == "on the clock" else ["callbacks.model_checkpoint.write_interval=0"]
    )
    _checkpoint_run(tmp_path / "ours", *clock)
    assert dumps == [0, 1, 2, 3]  # every epoch improves: best and last from one state
    # one copy an epoch: best.ckpt's, which last.ckpt shares (written at every epoch, the
    # copy of best.ckpt is written with last.ckpt; last.ckpt is never copied)
    assert copies == [0, 1, 2, 3]
    folders = (str(tmp_path / "ours"), str(tmp_path / "theirs"))
    for name in ("best.ckpt", "last.ckpt"):
        ours, theirs = (
            torch.load(tmp_path / side / "checkpoints" / name, weights_only=True)
            for side in ("ours", "theirs")
        )
        assert theirs["epoch"] == 3
        _same(ours, theirs, name, folders)


# -- killed and stopped runs (subprocesses) ----------------------------------------------
RUN = [
    sys.executable,
    "-m",
    "tasks",
    "+task=breast_cancer_mlp",
    "trainer.max_epochs=8",
    "+callbacks.slow._target_=slow_epochs.SlowEpochs",
    "callbacks.model_checkpoint.max_overhead=0",
]


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not there yet (written whole: AtomicCheckpointIO)
        return -1


@pytest.mark.slow
def test_a_run_killed_after_the_interval_resumes_from_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [*RUN, "callbacks.model_checkpoint.write_interval=1", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    try:
        while _epoch(last) < 1:  # written on the clock (not only at the first epoch)
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=60)
    saved = _epoch(last)
    assert 1 <= saved < 7  # killed in the middle of training
    resumed = subprocess.run(
        [*RUN, f"ckpt_path={last}", "hydra.run.dir=resumed"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 8
    history = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert sorted(history.dropna(subset=["val/loss"])["epoch"].unique()) == list(range(8))


@pytest.mark.slow
def test_sigterm_writes_the_checkpoints_kept_in_memory(tmp_path):
    """Nothing is due on the clock: the checkpoints on disk after SIGTERM are the ones the
    signal wrote, with a non-zero exit and a summary marked interrupted."""
    run_dir = tmp_path / "stopped"
    process = subprocess.Popen(
        [*RUN, *CLOCK_ONLY, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # one plain line per epoch in a pipe
            if "epoch 2/8" in line:
                break
        else:
            pytest.fail("the run ended before it could be stopped")
        assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # not written yet
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=300)[0]
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == 143, output[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    assert Path(summary["last_checkpoint"]) == run_dir / "checkpoints" / "last.ckpt"
    assert 1 <= _epoch(run_dir / "checkpoints" / "last.ckpt") < 7
    assert Path(summary["best_checkpoint"]).is_file()


def test_the_random_state_is_kept_as_tensors_and_restores_the_same_draws():
    """A checkpoint kept in memory is copied at every epoch end: Python's random state goes
    in as one tensor, not 625 ints to copy one by one; old checkpoints (a tuple) restore."""
    import random

    from tasks.callbacks import ResumeState, _copied

    random.seed(7)
    state = ResumeState().state_dict()
    expected = [random.random() for _ in range(3)]
    version, words, gauss = state["ranks"][0]["python"]
    assert isinstance(words, torch.Tensor) and words.numel() == 625

    def leaves(value):
        if isinstance(value, dict):
            return sum(leaves(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(leaves(v) for v in value)
        return 1

    assert leaves(_copied(state)) < 20
    for saved in (
        state,
        {"ranks": [{**state["ranks"][0], "python": (version, tuple(words.tolist()), gauss)}]},
    ):  # this format, and the tuple of checkpoints before it
        random.seed(0)
        resumed = ResumeState()
        resumed.load_state_dict(saved)
        resumed.on_train_epoch_start(SimpleNamespace(train_dataloader=None, global_rank=0), None)
        assert [random.random() for _ in range(3)] == expected
