"""Broken plugins, installed as real distributions (dist-info on the path), seen from the CLI:
each gets a clear message and every other preset keeps working."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli

from tasks.engine import registry as _registry

PRESET = (
    "# @package _global_\n# {about}\ntask:\n  _name_: {task}\n"
    "datamodule:\n  _name_: tabular\n  dataset: iris\n"
)


def _distribution(site: Path, name: str, entry_points: dict[str, dict[str, str]]) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = []
    for group, items in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in items.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def _package(site: Path, name: str, init: str = "", presets: dict[str, str] | None = None) -> None:
    (site / name).mkdir()
    (site / name / "__init__.py").write_text(init)
    if presets is not None:
        (site / name / "conf" / "task").mkdir(parents=True)
        (site / name / "conf" / "__init__.py").write_text("")
        for preset, task in presets.items():
            text = PRESET.format(about=f"{preset} of {name}", task=task)
            (site / name / "conf" / "task" / f"{preset}.yaml").write_text(text)


@pytest.fixture(scope="module")
def bad_site(tmp_path_factory) -> Path:
    """Four broken plugins side by side, as ``pip install`` would leave them."""
    site = tmp_path_factory.mktemp("site")
    # raises at import: its preset is listed (listing imports nothing), running it fails
    _package(site, "exploding", "raise RuntimeError('boom at import')\n", {"exploding_run": "boom"})
    _distribution(
        site,
        "exploding-plugin",
        {
            "lightning_tasks.tasks": {"boom": "exploding.task:Task"},
            "lightning_tasks.configs": {"exploding-plugin": "exploding.conf"},
        },
    )
    # two plugins claim one task name, and one also claims a built-in name
    for name in ("twin_a", "twin_b"):
        _package(site, name, "from tasks.tabular import TabularClassification as Task\n")
        _distribution(
            site,
            name.replace("_", "-"),
            {
                "lightning_tasks.tasks": {
                    "twin": f"{name}:Task",
                    "tabular_classification": f"{name}:Task",
                },
            },
        )
    # its config package does not exist
    _distribution(site, "ghost-plugin", {"lightning_tasks.configs": {"ghost": "ghost_pkg.conf"}})
    # its config package was installed without its YAML files (package-data forgotten)
    _package(site, "hollow", "", {})
    _distribution(site, "hollow-plugin", {"lightning_tasks.configs": {"hollow": "hollow.conf"}})
    return site


def _cli(site: Path, *args: str, disabled: bool = False):
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    if disabled:
        env[_registry.DISABLE_PLUGINS_ENV] = "1"
    return run_cli(*args, env=env)


def test_listing_survives_every_broken_plugin(bad_site):
    result = _cli(bad_site, "list", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["presets"]["exploding_run"]["origin"] == "exploding-plugin 1.0"
    assert listing["tasks"]["tabular_classification"]["origin"] == "built-in"
    assert "twin" not in listing["tasks"]
    clash = listing["conflicts"]["task"]["twin"]
    assert "twin-a 1.0 (twin_a:Task)" in clash and "twin-b 1.0 (twin_b:Task)" in clash
    stderr = " ".join(result.stderr.split())
    assert "'ghost_pkg.conf' registered by ghost-plugin 1.0" in stderr and "Reinstall" in stderr
    assert "task name 'tabular_classification' of twin-a 1.0" in stderr
    assert "Built-in names cannot be replaced" in stderr

    text = _cli(bad_site, "list")
    assert text.returncode == 0
    assert "Unusable task: task name 'twin' is registered twice" in text.stdout


def test_running_a_broken_plugin_fails_in_one_line_naming_it(bad_site):
    result = _cli(bad_site, "+task=exploding_run")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-2]
    assert error.startswith("error: task 'boom' from distribution exploding-plugin 1.0")
    assert "RuntimeError: boom at import" in error and _registry.DISABLE_PLUGINS_ENV in error

    twin = _cli(bad_site, "+task=breast_cancer_mlp", "task._name_=twin")
    assert twin.returncode == 2
    assert "task name 'twin' is registered twice: by twin-a 1.0" in twin.stderr


def test_built_in_presets_still_train_beside_broken_plugins(bad_site, tmp_path):
    result = _cli(bad_site, "+task=iris_mlp", "debug=tiny", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task_class"] == "tasks.tabular.TabularClassification"


def test_disabling_plugins_hides_them_silently(bad_site):
    result = _cli(bad_site, "list", "--json", disabled=True)
    assert result.returncode == 0
    listing = json.loads(result.stdout)
    assert "exploding_run" not in listing["presets"] and not listing["conflicts"]
    assert "ghost" not in result.stderr and "twin" not in result.stderr
    run = _cli(bad_site, "+task=exploding_run", disabled=True)
    assert run.returncode == 2 and "unknown preset 'exploding_run'" in run.stderr


def test_a_plugin_config_package_without_presets_is_named(bad_site):
    listed = _cli(bad_site, "list")
    stderr = " ".join(listed.stderr.split())
    assert "config package 'hollow.conf' of hollow-plugin 1.0 has no presets" in stderr
    assert "package-data in the plugin's pyproject.toml" in stderr
    result = _cli(bad_site, "+task=hollow_demo")
    assert result.returncode == 2
    assert "unknown preset 'hollow_demo'" in result.stderr
    assert "Note: hollow-plugin 1.0 (hollow.conf) registers presets but ships none" in (
        " ".join(result.stderr.split())
    )


def test_an_import_path_that_does_not_import_names_the_folder_not_a_plugin(tmp_path):
    result = run_cli("+task=iris_mlp", "task._name_=my_tasks:MyTask", cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.splitlines()[0]
    assert line == (
        f"error: task._name_=my_tasks:MyTask: module 'my_tasks' cannot be imported from the "
        f"current folder ({tmp_path}) or PYTHONPATH; run from the folder that holds it, or add "
        "that folder to PYTHONPATH"
    )
    assert "distribution" not in line
    (tmp_path / "my_tasks.py").write_text("from tasks.tabular import TabularClassification\n")
    result = run_cli("+task=iris_mlp", "task._name_=my_tasks:MyTask", cwd=tmp_path)
    assert result.returncode == 2
    assert "module 'my_tasks' has no 'MyTask'" in result.stderr
