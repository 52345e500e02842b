"""A non-editable wheel install finds its configs and runs a preset from any directory."""

from __future__ import annotations

import json
import subprocess
import sys
import venv

import pytest
from conftest import ROOT, run_cli


@pytest.mark.slow
def test_wheel_installs_and_runs_a_preset_from_a_temporary_directory(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("lightning_tasks-*.whl")
    # A fresh venv that reuses the already-installed torch & co. from the system site.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = str(env_dir / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [
            python,
            "-c",
            "import tasks, tasks.conf; print(tasks.__file__); print(list(tasks.conf.__path__)[0])",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
    )
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(str(env_dir)), f"not the wheel's copy: {line}"

    listing = run_cli("list", "--json", python=python, cwd=elsewhere)
    assert listing.returncode == 0, listing.stderr
    preset = json.loads(listing.stdout)["presets"]["breast_cancer_mlp"]
    assert preset["path"].startswith(str(env_dir))

    result = run_cli(
        "+task=breast_cancer_mlp", "debug=tiny", "hydra.run.dir=run", python=python, cwd=elsewhere
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((elsewhere / "run" / "summary.json").read_text())
    assert summary["metrics"]["test/acc"] > 0
    assert (elsewhere / "run" / "checkpoints" / "best.ckpt").is_file()
