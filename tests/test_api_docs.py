"""docs/api.md is generated from the docstrings by tools/api_reference.py and is current; every
name it covers is documented, and every hook says what calls it and documents its arguments."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest
from conftest import ROOT

from datamodules.tabular import TabularDataModule
from tasks.base import TaskCore
from tasks.tabular import TabularRegression


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location(
        "api_reference", ROOT / "tools" / "api_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_checked_in_page_is_current(tool):
    current = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    expected = tool.render()
    assert current == expected, tool.stale_message(current, expected)


def test_every_covered_name_and_hook_is_documented(tool):
    found = tool.problems()
    assert not found, "\n".join(found)


def test_the_page_covers_the_public_surface(tool):
    import datamodules
    import tasks
    from tasks import testing
    from tasks.base import BaseTask

    page = tool.render()
    headings = {line.lstrip("#").strip() for line in page.splitlines() if line.startswith("#")}
    for package in (tasks, datamodules):
        for name in package.__all__:
            assert re.search(rf"`{re.escape(name)}(`| = )", page), (
                f"{package.__name__}.{name} is missing from docs/api.md"
            )
    for name in testing.__all__:
        assert f"tasks.testing.{name}" in headings
    for hook in tool.TASK_HOOKS:
        assert callable(getattr(BaseTask, hook)) and f"BaseTask.{hook}" in headings
    for hook in tool.DATAMODULE_HOOKS:
        assert f"BaseDataModule.{hook}" in headings
    assert "TabularDataModule.load_frame" in headings


def test_a_removed_docstring_is_reported(tool, monkeypatch):
    monkeypatch.setattr(TabularDataModule.load_frame, "__doc__", None)
    monkeypatch.setattr(TabularRegression.predict_outputs, "__doc__", None)
    found = "\n".join(tool.problems())
    assert "TabularDataModule.load_frame: no docstring" in found
    assert "TabularRegression.predict_outputs (override): no docstring" in found


def test_a_hook_without_its_caller_or_arguments_is_reported(tool, monkeypatch):
    monkeypatch.setattr(
        TabularDataModule.load_frame, "__doc__", "The labelled table, for subclasses."
    )
    monkeypatch.setattr(
        TaskCore.metric_inputs,
        "__doc__",
        """What the metrics are updated with.

        Args:
            output: The raw network output.

        Called by:
            model_step.
        """,
    )
    found = "\n".join(tool.problems())
    assert "TabularDataModule.load_frame: the docstring has no 'Called by:' section" in found
    assert "BaseTask.metric_inputs: arguments ['target'] are not documented" in found


def test_a_stale_page_is_reported(tool, monkeypatch):
    before = tool.render()
    monkeypatch.setattr(TabularRegression, "__doc__", TabularRegression.__doc__ + "\nMore.")
    after = tool.render()
    assert after != before
    message = tool.stale_message(before, after)
    assert "python tools/api_reference.py" in message and "+More." in message


def test_plugins_guide_links_the_reference():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert "(api.md)" in guide
    assert "### Data flow of the built-in tasks" in guide
