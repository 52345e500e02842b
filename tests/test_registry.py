"""The entry-point registry: built-ins, plugins, duplicates, broken and disabled plugins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest

from tasks.engine import registry as _registry
from tasks.errors import DuplicateNameError, PluginLoadError, UnknownNameError


def test_builtins_are_registered_through_entry_points():
    tasks = _registry.entries("task")
    assert tasks["tabular_classification"].builtin
    assert tasks["tabular_classification"].origin == "built-in"
    assert (
        _registry.entries("datamodule")["tabular"].value == "datamodules.tabular:TabularDataModule"
    )
    assert "breast_cancer_mlp" in _registry.presets()


def test_plugin_entry_is_listed_with_its_distribution(add_entry_point):
    add_entry_point(
        "task", "echo_task", "tasks.tabular:TabularClassification", "echo-plugin", "2.1"
    )
    entry = _registry.get("task", "echo_task")
    assert not entry.builtin
    assert entry.origin == "echo-plugin 2.1"
    assert _registry.load("task", "echo_task").__name__ == "TabularClassification"


def test_unknown_name_lists_close_matches_and_everything(add_entry_point):
    add_entry_point("task", "tabular_regression_x", "tasks.tabular:TabularClassification")
    with pytest.raises(UnknownNameError) as info:
        _registry.get("task", "tabular_clasification")
    message = str(info.value)
    assert "Did you mean 'tabular_classification'" in message
    listed = message.split("Available tasks: ")[1].rstrip(".").split(", ")
    assert listed == sorted(_registry.entries("task"))
    assert "tabular_regression_x" in listed


def test_unknown_preset_suggests_the_right_one():
    with pytest.raises(UnknownNameError, match="Did you mean 'breast_cancer_mlp'"):
        _registry.get_preset("breast_cancer")


def test_a_plugin_cannot_take_a_builtin_name(add_entry_point):
    add_entry_point("task", "tabular_classification", "other_pkg:Thing", "other-dist", "0.3")
    with pytest.warns(_registry.PluginConflictWarning) as caught:
        tasks = _registry.entries("task")
    assert tasks["tabular_classification"].builtin
    message = str(caught[0].message)
    assert "'tabular_classification'" in message
    assert "lightning-tasks" in message and "other-dist 0.3" in message


def test_a_name_two_plugins_claim_is_withheld_and_names_both(add_entry_point):
    add_entry_point("task", "twin", "pkg_a:Task", "dist-a", "1.0")
    add_entry_point("task", "twin", "pkg_b:Task", "dist-b", "2.0")
    add_entry_point("task", "single", "tasks.tabular:TabularRegression", "dist-b", "2.0")
    assert "twin" not in _registry.entries("task")
    assert _registry.load("task", "single").__name__ == "TabularRegression"  # others still work
    with pytest.raises(DuplicateNameError) as info:
        _registry.load("task", "twin")
    message = str(info.value)
    assert "'twin'" in message and "dist-a 1.0 (pkg_a:Task)" in message
    assert "dist-b 2.0 (pkg_b:Task)" in message and _registry.DISABLE_PLUGINS_ENV in message
    assert _registry.conflicts("task") == {"twin": message}


def test_broken_plugin_is_reported_and_skipped(add_entry_point):
    add_entry_point("task", "broken_task", "no_such_module_xyz:Task", "broken-dist", "0.1")
    with pytest.raises(PluginLoadError) as info:
        _registry.load("task", "broken_task")
    message = str(info.value)
    assert "broken-dist 0.1" in message
    assert "broken_task = 'no_such_module_xyz:Task'" in message
    assert "ModuleNotFoundError" in message
    with pytest.warns(UserWarning, match="broken-dist"):
        loaded, failed = _registry.load_all("task")
    assert set(failed) == {"broken_task"}
    assert "tabular_classification" in loaded  # everything else still works


def test_plugin_that_raises_on_import_is_reported(add_entry_point, tmp_path, monkeypatch):
    (tmp_path / "exploding_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    add_entry_point("datamodule", "exploding", "exploding_plugin:DM", "exploding-dist")
    with pytest.raises(PluginLoadError, match="RuntimeError: boom at import"):
        _registry.load("datamodule", "exploding")


def test_disable_env_hides_third_party_entries(add_entry_point, monkeypatch):
    add_entry_point("task", "echo_task", "tasks.tabular:TabularClassification", "echo-plugin")
    add_entry_point("task", "tabular_classification", "other:Thing", "clashing-plugin")
    monkeypatch.setenv(_registry.DISABLE_PLUGINS_ENV, "1")
    _registry.clear_cache()
    tasks = _registry.entries("task")  # the clash is ignored along with the plugin
    assert "echo_task" not in tasks
    assert tasks["tabular_classification"].builtin


def test_import_path_names_a_class_without_registration():
    cls = _registry.load("task", "tasks.tabular:TabularClassification")
    assert cls.__name__ == "TabularClassification"
    assert _registry.load("task", "tasks.tabular.TabularClassification") is cls


@pytest.fixture
def plugin_configs(tmp_path, monkeypatch, add_entry_point):
    """A plugin package whose __init__ must never run while listing presets."""
    package = tmp_path / "lazy_plugin"
    (package / "conf" / "task").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('plugin package imported')\n")
    (package / "conf" / "task" / "plugin_preset.yaml").write_text(
        "# @package _global_\n# A preset shipped by a plugin.\ntask:\n  _name_: x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    add_entry_point("config", "lazy-plugin", "lazy_plugin.conf", "lazy-plugin", "0.9")
    return package


def test_plugin_presets_are_found_without_importing_the_plugin(plugin_configs):
    preset = _registry.get_preset("plugin_preset")
    assert preset.source.origin == "lazy-plugin 0.9"
    assert preset.description == "A preset shipped by a plugin."
    assert "lazy_plugin" not in sys.modules


def test_a_plugin_preset_cannot_take_a_builtin_preset_name(plugin_configs):
    (plugin_configs / "conf" / "task" / "breast_cancer_mlp.yaml").write_text("{}\n")
    with pytest.warns(
        _registry.PluginConflictWarning, match="breast_cancer_mlp.*lazy-plugin.*lightning-tasks"
    ):
        preset = _registry.get_preset("breast_cancer_mlp")
    assert preset.source.builtin
    assert _registry.get_preset("plugin_preset").source.distribution == "lazy-plugin"


def test_a_preset_two_plugins_ship_is_withheld(plugin_configs, tmp_path, add_entry_point):
    twin = tmp_path / "twin_plugin"
    (twin / "conf" / "task").mkdir(parents=True)
    (twin / "__init__.py").write_text("")
    (twin / "conf" / "task" / "plugin_preset.yaml").write_text("{}\n")
    add_entry_point("config", "twin-plugin", "twin_plugin.conf", "twin-plugin", "0.1")
    with pytest.raises(DuplicateNameError, match="plugin_preset.*lazy-plugin 0.9.*twin-plugin 0.1"):
        _registry.get_preset("plugin_preset")
    assert "breast_cancer_mlp" in _registry.presets()


def test_missing_config_package_warns_and_is_skipped(add_entry_point):
    add_entry_point("config", "ghost", "ghost_package_xyz.conf", "ghost-dist")
    with pytest.warns(UserWarning, match="ghost-dist"):
        presets = _registry.presets()
    assert "breast_cancer_mlp" in presets


def test_listing_imports_neither_torch_nor_task_modules():
    code = textwrap.dedent("""
        import sys
        from tasks.engine.cli import main
        main(["list"])
        heavy = [m for m in ("torch", "lightning", "tasks.tabular", "datamodules.tabular", "hydra")
                 if m in sys.modules]
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "breast_cancer_mlp" in result.stdout
    assert "tabular_classification" in result.stdout


def test_warnings_module_is_quiet_for_healthy_installs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _registry.clear_cache()
        assert _registry.presets()
