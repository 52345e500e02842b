"""Bad configs and checkpoints end in one clear line and exit code 2, before anything is
read or written (the data cases live next to their datamodules' tests)."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import run_cli


class _RunsCode:
    """Pickles as a call of ``os.system``: what a malicious checkpoint carries."""

    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def _checkpoint_files(folder):
    """Files that are not checkpoints lightning-tasks can use, by case name."""
    text = folder / "notes.ckpt"
    text.write_text("these are my notes, not a model\n")
    good = folder / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}, "hyper_parameters": {}}, good)
    truncated = folder / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    malicious = folder / "malicious.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode()}, malicious)
    other_task = folder / "char_lm.ckpt"
    settings = {"vocab": ["a", "b"], "block_size": 8, "embedding_dim": 16, "lr": 1e-3}
    torch.save({"state_dict": {}, "hyper_parameters": settings}, other_task)
    tensors = folder / "tensors.pt"
    torch.save(torch.zeros(3), tensors)
    return {
        "text": text,
        "truncated": truncated,
        "malicious": malicious,
        "other_task": other_task,
        "tensors": tensors,
    }


CHECKPOINT_CASES = {
    "text": "is not a readable checkpoint (truncated, or not a checkpoint file",
    "truncated": "is not a readable checkpoint (truncated, or not a checkpoint file",
    "malicious": "holds Python objects beyond tensors and plain values (posix.system); loading "
    "it could run code, so it is not loaded",
    "other_task": "was trained by another task: its settings block_size, vocab are not "
    "arguments of TabularClassification",
    "tensors": "is a PyTorch file but not a Lightning checkpoint",
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
@pytest.mark.parametrize("mode", ["test", "train"])
def test_unusable_checkpoints_are_one_line(tmp_path, case, mode):
    path = _checkpoint_files(tmp_path)[case]
    result = run_cli(
        "+task=iris_mlp", f"mode={mode}", f"ckpt_path={path}", "hydra.run.dir=run", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ckpt_path=") and CHECKPOINT_CASES[case] in lines[0]
    assert "weights_only=False" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written


TRAINER_CASES = [
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc' is not valid: expected a whole number"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5 is not valid: expected a whole number"),
    ("trainer.max_epoch=3", "trainer.max_epoch is not an argument of lightning.pytorch"),
    ("trainer.enable_progress_bar=maybe", "is not valid: expected true or false"),
    ("trainer.precision=17", "trainer.precision=17 is not valid: expected 16 or 16-mixed or"),
    ("trainer=gpu", "trainer.accelerator=gpu but this machine has no usable GPU"),
]


@pytest.mark.parametrize("override,message", TRAINER_CASES)
def test_bad_trainer_settings_are_one_line(tmp_path, override, message):
    if override == "trainer=gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_cli("+task=iris_mlp", override, "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and message in result.stderr
    if "max_epoch=" in override:
        assert "Did you mean trainer.max_epochs?" in result.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()


FULL_DISK = """
import errno, os, sys

real_fsync, calls = os.fsync, []


def fsync(fd):  # every file the library writes is flushed once: the 6th write finds no space
    calls.append(fd)
    if len(calls) > 5:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real_fsync(fd)


os.fsync = fsync
sys.argv = ["tasks", "+task=iris_mlp", "trainer.max_epochs=20", "hydra.run.dir=run"]
from tasks.engine.cli import main

main()
"""


def test_a_full_disk_is_one_line_and_leaves_whole_files(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[0]
    assert line.startswith("error: the disk is full") and "are intact" in line
    run = tmp_path / "run"
    assert f"resume with ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in line
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"))
    assert checkpoints  # written before the disk filled, and each of them whole
    for path in checkpoints:
        assert "state_dict" in torch.load(path, map_location="cpu", weights_only=True)
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # no half-written leftovers


def test_a_checkpoint_of_another_preset_names_the_preset_it_needs(tmp_path):
    trained = run_cli("+task=breast_cancer_mlp", "debug=tiny", "hydra.run.dir=run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    result = run_cli(
        "+task=wine_mlp", "mode=test", "ckpt_path=run/checkpoints/best.ckpt", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines()[0] == (
        "error: ckpt_path=run/checkpoints/best.ckpt was trained on "
        "datamodule.dataset='breast_cancer', but this run has datamodule.dataset='wine': "
        "use it with +task=breast_cancer_mlp"
    )


SETTING_CASES = [
    ("sed=3", "sed is not a setting. Did you mean 'seed'?"),
    ("trainr.max_epochs=3", "trainr.max_epochs is not a setting. Did you mean 'trainer'?"),
    ("sample.tempature=2", "sample.tempature is not a setting. Did you mean sample.temperature?"),
    ("output_dir=/proc/lightning-tasks-run", "output_dir=/proc/lightning-tasks-run cannot hold"),
    ("hydra.run.dir=/proc/lightning-tasks-run", "hydra.run.dir=/proc/lightning-tasks-run cannot"),
    ("output_dir=FILE/run", "is a file); choose a folder you can write to"),
]


@pytest.mark.parametrize("override,message", SETTING_CASES)
def test_misspelt_settings_and_unusable_folders_are_one_line(tmp_path, override, message):
    (tmp_path / "FILE").write_text("a file where a folder should be\n")
    override = override.replace("FILE", str(tmp_path / "FILE"))
    result = run_cli("+task=iris_mlp", "debug=tiny", override, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    written = [p for p in tmp_path.rglob("config.yaml") if ".hydra" not in p.parts]
    assert not written  # stopped before the run wrote anything (Hydra's own .hydra/ aside)


def test_a_new_key_added_on_purpose_is_accepted(tmp_path):
    result = run_cli("+task=iris_mlp", "debug=tiny", "+my_note=first try", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_callback_config_mistake_is_one_line_but_a_callback_bug_keeps_its_traceback(tmp_path):
    from conftest import ROOT

    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])
        )
    }
    mistake = run_cli(
        "+task=iris_mlp", "debug=tiny", "+callbacks.x._target_=nope.Nope", cwd=tmp_path
    )
    assert mistake.returncode == 2
    assert mistake.stderr.startswith("error: callbacks.x could not be built: Error locating target")
    bug = run_cli(
        "+task=iris_mlp",
        "debug=tiny",
        "+callbacks.b._target_=slow_epochs.BrokenCallback",
        cwd=tmp_path,
        env=env,
    )
    assert bug.returncode not in (0, 2)
    assert "Traceback" in bug.stderr and "RuntimeError: a bug in the callback" in bug.stderr


def test_a_config_group_a_plugin_ships_is_not_taken_for_a_misspelt_setting(tmp_path, monkeypatch):
    from tasks.engine import hydra_config as _hydra

    (tmp_path / "plugin_conf" / "loss_shape").mkdir(parents=True)
    (tmp_path / "plugin_conf" / "loss_shape" / "pinball.yaml").write_text("{}\n")
    real = _hydra.config_search_paths()
    monkeypatch.setattr(
        _hydra,
        "config_search_paths",
        lambda: [*real, ("lightning-tasks:a-plugin", f"file://{tmp_path / 'plugin_conf'}")],
    )
    assert "loss_shape" in _hydra.config_groups()
    _hydra._check_known_key("loss_shape")  # a plugin's group: accepted
    _hydra._check_known_key("hydra/job_logging")  # a group path: left to Hydra
    with pytest.raises(Exception, match="loss_shap is not a setting"):
        _hydra._check_known_key("loss_shap")
