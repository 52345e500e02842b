"""Non-editable wheels, installed as users install them: the library alone finds its configs
and runs a preset from any directory; the example plugin adds its presets and is removed
cleanly by ``pip uninstall``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli

PLUGIN = ROOT / "plugins" / "lightning-tasks-quantile"


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def _wheel(source: Path, out: Path, dist: str) -> Path:
    """Build from a copy: setuptools leaves ``build/`` and ``*.egg-info`` beside the sources,
    and a stale ``egg-info`` in the checkout would shadow the installed metadata."""
    copy = out.parent / f"src-{dist}"
    shutil.copytree(
        source,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", "outputs"
        ),
    )
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
        str(copy),
        cwd=out.parent,
    )
    (wheel,) = out.glob(f"{dist.replace('-', '_')}-*.whl")
    return wheel


def running_site_packages() -> list[str]:
    """The site-packages folders of the interpreter running the tests, in ``sys.path`` order:
    a venv's, a conda prefix's or the system's (and the base's when a venv sees it)."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]


def make_venv(env_dir: Path) -> str:
    """A fresh venv that borrows torch & co. from the running environment, whatever it is.

    ``system_site_packages=True`` would show the *base* interpreter's packages, which lack
    everything when pytest itself runs inside a venv. A ``.pth`` of plain folder lines
    appends the running environment's folders after the venv's own site-packages, so what is
    installed into the venv comes first, and the ``.pth`` files in those folders (an
    editable install's import hook among them) are not run.
    """
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run(python, "-c", code).stdout.strip())
    (site / "_running_environment.pth").write_text("\n".join(running_site_packages()) + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv (reusing torch & co. from the running environment) with the library's
    wheel."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    wheels.mkdir()
    env_dir = root / "venv"
    python = make_venv(env_dir)
    _run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        str(_wheel(ROOT, wheels, "lightning-tasks")),
    )
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return {"python": python, "env": env_dir, "wheels": wheels, "cwd": elsewhere}


def _listing(installed) -> dict:
    result = run_cli("list", "--json", python=installed["python"], cwd=installed["cwd"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_wheel_installs_and_runs_a_preset_from_a_temporary_directory(installed):
    python, env_dir, elsewhere = installed["python"], installed["env"], installed["cwd"]
    code = "import tasks, tasks.conf; print(tasks.__file__); print(list(tasks.conf.__path__)[0])"
    for line in _run(python, "-c", code, cwd=elsewhere).stdout.split():
        assert line.startswith(str(env_dir)), f"not the wheel's copy: {line}"
    preset = _listing(installed)["presets"]["breast_cancer_mlp"]
    assert preset["path"].startswith(str(env_dir))

    result = run_cli(
        "+task=breast_cancer_mlp", "debug=tiny", "hydra.run.dir=run", python=python, cwd=elsewhere
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((elsewhere / "run" / "summary.json").read_text())
    # above always answering the commoner diagnosis: the installed copy trains
    from sklearn.datasets import load_breast_cancer

    counts = np.bincount(load_breast_cancer().target)
    assert summary["metrics"]["test/acc"] > counts.max() / counts.sum() + 0.1
    assert (elsewhere / "run" / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_example_plugin_wheel_adds_its_presets_and_uninstalls_cleanly(installed):
    python, env_dir, elsewhere = installed["python"], installed["env"], installed["cwd"]
    plugin_wheel = _wheel(PLUGIN, installed["wheels"], "lightning-tasks-quantile")
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(plugin_wheel))

    listing = _listing(installed)
    for preset in ("quantile_diabetes", "quantile_synthetic"):
        assert listing["presets"][preset]["origin"] == "lightning-tasks-quantile 0.1.0"
        assert listing["presets"][preset]["path"].startswith(str(env_dir))
    assert listing["tasks"]["tabular_quantile"]["origin"] == "lightning-tasks-quantile 0.1.0"
    assert listing["datamodules"]["heteroscedastic"]["distribution"] == "lightning-tasks-quantile"

    result = run_cli(
        "+task=quantile_synthetic",
        "debug=tiny",
        "datamodule.rows=300",
        "trainer.max_epochs=30",  # every batch: enough to learn the intervals
        "trainer.limit_train_batches=null",
        "hydra.run.dir=qrun",
        python=python,
        cwd=elsewhere,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_dir = elsewhere / "qrun"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task_class"] == "lt_quantile.task.TabularQuantileRegression"
    # the 0.1-0.9 interval should hold about 80% of the test rows, and the quantiles should
    # beat the same normal distribution for every row
    metrics, baseline = summary["metrics"], summary["baseline"]
    assert 0.6 <= metrics["test/coverage"] <= 0.95
    assert metrics["test/pinball"] < baseline["baseline/pinball"]
    (elsewhere / "rows.csv").write_text("x0,x1,x2,x3\n0.5,-1.0,0.0,1.0\n1.5,0.2,1.8,-0.3\n")
    predicted = run_cli(
        "+task=quantile_synthetic",
        "mode=predict",
        "datamodule.rows=300",
        "ckpt_path=qrun/checkpoints/best.ckpt",
        "datamodule.predict_path=rows.csv",
        "hydra.run.dir=qpredict",
        python=python,
        cwd=elsewhere,
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    lines = (elsewhere / "qpredict" / "predictions.csv").read_text().splitlines()
    assert lines[0].split(",") == ["row", "q0.1_y", "q0.5_y", "q0.9_y"] and len(lines) == 3
    for line in lines[1:]:
        low, mid, high = map(float, line.split(",")[1:])
        assert low <= mid <= high  # quantiles never cross
    assert (run_dir / "prediction_intervals.png").is_file()
    assert (run_dir / "quantile_calibration.csv").is_file()

    _run(python, "-m", "pip", "uninstall", "-y", "-q", "lightning-tasks-quantile")
    listing = _listing(installed)
    assert not [p for p in listing["presets"] if p.startswith("quantile_")]
    assert "tabular_quantile" not in listing["tasks"]
    gone = run_cli("+task=quantile_synthetic", python=python, cwd=elsewhere)
    assert gone.returncode == 2
    assert "unknown preset 'quantile_synthetic'" in gone.stderr


@pytest.mark.slow
def test_a_bundle_loads_in_the_wheel_venv_from_its_folder_alone(installed, tmp_path):
    """Exported here, copied elsewhere, the run folder deleted: the installed wheel loads
    it (replaying its examples) and predicts what it predicted here."""
    import shutil

    from tasks.api import run
    from tasks.bundle import compare_records, export_bundle

    run_dir = tmp_path / "run"
    run("iris_mlp", ["debug=tiny", f"output_dir={run_dir}"])
    bundle = export_bundle(run_dir, tmp_path / "bundle")
    moved = installed["cwd"] / "iris_bundle"
    shutil.copytree(bundle, moved)
    shutil.rmtree(run_dir)
    code = (
        "import json, sys; from tasks.bundle import load_bundle; "
        "model = load_bundle(sys.argv[1]); "
        "rows = json.load(open(sys.argv[1] + '/example_input.json')); "
        "print(json.dumps(model.predict_records(rows)))"
    )
    result = _run(installed["python"], "-c", code, str(moved), cwd=installed["cwd"])
    expected = json.loads((moved / "expected_output.json").read_text())
    compare_records(json.loads(result.stdout.strip().splitlines()[-1]), expected, "wheel venv")
