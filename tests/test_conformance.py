"""Every registered task passes the conformance kit; a user's subclass trains via API and CLI."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import PurePosixPath

import pytest
import torch
from conftest import ROOT, run_cli, user_data_overrides

from datamodules.tabular import TabularDataModule
from tasks.api import compose, list_presets, list_tasks, run
from tasks.engine import registry as _registry
from tasks.testing import check_preset, check_task

EXAMPLES = ROOT / "docs" / "examples"


def _preset_using(task_name: str) -> str | None:
    for preset in sorted(list_presets()):
        if compose(preset).task._name_ == task_name:
            return preset
    return None


@pytest.mark.parametrize("task_name", sorted(list_tasks()))
def test_every_registered_task_passes_the_kit(task_name, tmp_path, monkeypatch):
    preset = _preset_using(task_name)
    assert preset, f"task {task_name!r} has no preset, so nothing checks it"
    report = check_preset(preset, tmp_path, user_data_overrides(preset, tmp_path, monkeypatch))
    assert report["predictions"]["rows"] > 0
    assert any(k.startswith("test/") for k in report["test"])
    # the default fast path (step groups) trains every built-in task as single steps do
    assert report["step_groups"]["grouped"], report["step_groups"]["reason"]


def _iris():
    dm = TabularDataModule(dataset="iris")
    dm.setup("fit")
    return dm


def test_kit_catches_a_task_that_trains_differently_in_step_groups(monkeypatch):
    """A group that loses its last batch (as a per-batch assumption would) is caught."""
    from tasks._grouped import GroupedSteps
    from tasks.tabular import TabularClassification
    from tasks.testing import check_step_groups

    real = GroupedSteps._train_steps

    def drops_the_last_batch(self, batches):
        return real(self, list(batches)[:-1] or list(batches))

    dm = _iris()
    task = TabularClassification(**dm.data_facts())
    assert check_step_groups(task, dm)["grouped"]
    monkeypatch.setattr(GroupedSteps, "_train_steps", drops_the_last_batch)
    with pytest.raises(AssertionError, match="trains differently in step groups"):
        check_step_groups(task, dm)


def test_kit_catches_hyperparameters_that_do_not_rebuild_the_network(tmp_path):
    from tasks.tabular import TabularClassification

    class Forgetful(TabularClassification):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hparams.hidden_sizes = [3]  # what load_from_checkpoint will build

    dm = _iris()
    with pytest.raises(RuntimeError, match="size mismatch"):
        check_task(Forgetful(**dm.data_facts(), hidden_sizes=[8]), dm, tmp_path)


def test_kit_catches_a_predict_step_that_breaks_the_contract(tmp_path):
    from tasks.tabular import TabularClassification

    class BarePredict(TabularClassification):
        def predict_step(self, batch, batch_idx):
            return self(*batch)  # a bare tensor, not a dict of named outputs

    dm = _iris()
    with pytest.raises(AssertionError, match="must return a non-empty dict of tensors"):
        check_task(BarePredict(**dm.data_facts()), dm, tmp_path)


def test_kit_catches_a_checkpoint_that_needs_pickle(tmp_path):
    from tasks.tabular import TabularClassification

    class Pickling(TabularClassification):
        def on_save_checkpoint(self, checkpoint):
            checkpoint["data_file"] = PurePosixPath("data.csv")  # a Path, not a string

    dm = _iris()
    with pytest.raises(AssertionError, match="weights_only=True"):
        check_task(Pickling(**dm.data_facts()), dm, tmp_path)


def test_kit_catches_a_datamodule_that_refits_its_restored_state(tmp_path):
    from tasks.tabular import TabularClassification

    class Refitting(TabularDataModule):
        def load_state_dict(self, state_dict):  # drops the statistics, so setup fits them anew
            super().load_state_dict({k: v for k, v in state_dict.items() if k != "prep"})

    dm = Refitting(dataset="iris")
    dm.setup("fit")
    with pytest.raises(AssertionError, match=r"setup\('fit'\) refitted the preprocessing state"):
        check_task(TabularClassification(**dm.data_facts()), dm, tmp_path)


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    sys.modules.pop("focal_tabular", None)


def test_subclass_trains_from_python(examples_on_path, tmp_path):
    from focal_tabular import FocalTabularClassification

    cfg = compose(
        "breast_cancer_mlp",
        [
            "task._name_=focal_tabular:FocalTabularClassification",
            "task.focal_gamma=1.5",
            "debug=tiny",
            f"output_dir={tmp_path}",
        ],
    )
    summary = run(cfg)
    assert summary["task_class"] == "focal_tabular.FocalTabularClassification"
    task = FocalTabularClassification.load_from_checkpoint(summary["best_checkpoint"])
    assert task.hparams.focal_gamma == 1.5 and task.criterion.gamma == 1.5
    assert task.hparams.gamma == 0.1  # the scheduler's decay, a setting of its own
    dm = TabularDataModule(dataset="breast_cancer")
    dm.setup("fit")
    check_task(task, dm, tmp_path / "kit")


def test_subclass_trains_from_the_cli(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    result = run_cli(
        "+task=breast_cancer_mlp",
        "task._name_=focal_tabular:FocalTabularClassification",
        "task.focal_gamma=3",
        "debug=tiny",
        f"hydra.run.dir={tmp_path}/run",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task_class"] == "focal_tabular.FocalTabularClassification"
    hparams = torch.load(tmp_path / "run/checkpoints/best.ckpt", weights_only=True)[
        "hyper_parameters"
    ]
    assert hparams["focal_gamma"] == 3


def test_plugin_api_version_mismatch_warns(add_entry_point, tmp_path, monkeypatch):
    (tmp_path / "old_plugin.py").write_text(
        "LIGHTNING_TASKS_API = 0\nfrom tasks.tabular import TabularClassification as Task\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    add_entry_point("task", "old_task", "old_plugin:Task", "old-plugin", "0.0.1")
    with pytest.warns(
        _registry.PluginVersionWarning,
        match="old-plugin 0.0.1 .* targets lightning-tasks plugin API 0, but "
        "lightning-tasks 0.1.0 provides API 1",
    ):
        _registry.load("task", "old_task")


def test_api_version_declared_in_the_plugins_top_package_is_checked(
    add_entry_point, tmp_path, monkeypatch
):
    package = tmp_path / "future_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("LIGHTNING_TASKS_API = 2\n")
    (package / "task.py").write_text("from tasks.tabular import TabularRegression as Task\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    add_entry_point("task", "future_task", "future_plugin.task:Task", "future-plugin", "3.0")
    with pytest.warns(_registry.PluginVersionWarning, match="future-plugin 3.0 .* API 2, but"):
        assert _registry.load("task", "future_task").__name__ == "TabularRegression"


def test_a_plugin_on_our_api_version_loads_silently(add_entry_point, tmp_path, monkeypatch):
    (tmp_path / "current_plugin.py").write_text(
        "LIGHTNING_TASKS_API = 1\nfrom tasks.tabular import TabularRegression as Task\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    add_entry_point("task", "current_task", "current_plugin:Task", "current-plugin")
    with warnings.catch_warnings():
        warnings.simplefilter("error", _registry.PluginVersionWarning)
        _registry.load("task", "current_task")


def test_kit_requires_a_plugin_to_declare_its_api(tmp_path, monkeypatch):
    from tasks.testing import check_api_declaration

    (tmp_path / "silent_plugin").mkdir()
    (tmp_path / "silent_plugin" / "__init__.py").write_text("")
    (tmp_path / "silent_plugin" / "task.py").write_text(
        "from tasks.tabular import TabularClassification\n"
        "class Task(TabularClassification):\n    pass\n"
    )
    (tmp_path / "old_api.py").write_text(
        "LIGHTNING_TASKS_API = 0\nfrom tasks.tabular import TabularClassification\n"
        "class Task(TabularClassification):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from old_api import Task as Old
    from silent_plugin.task import Task as Silent

    with pytest.raises(AssertionError, match="declare no LIGHTNING_TASKS_API: add"):
        check_api_declaration(Silent)
    with pytest.raises(AssertionError, match="declares LIGHTNING_TASKS_API = 0, but"):
        check_api_declaration(Old)
    from tasks.tabular import TabularClassification

    check_api_declaration(TabularClassification)  # lightning-tasks' own: exempt


def test_kit_names_what_a_task_needs_from_a_datamodule_that_lacks_it(tmp_path):
    from datamodules.tabular import TabularDataModule as Plain
    from tasks.forecast import Forecasting
    from tasks.testing import check_task

    datamodule = Plain(dataset="iris")
    datamodule.setup("fit")
    task = Forecasting(num_inputs=4, num_targets=1, lookback=4)
    with pytest.raises(AssertionError, match=r"Forecasting reads \['time'\] from its datamodule"):
        check_task(task, datamodule, tmp_path)
