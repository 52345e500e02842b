"""The public API is what ``__all__`` lists: every name resolves, is documented, and is
visible to type checkers; everything else is private by name."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

import datamodules
import tasks


@pytest.mark.parametrize("package", [tasks, datamodules])
def test_every_public_name_resolves_and_is_documented(package):
    for name in package.__all__:
        value = getattr(package, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{package.__name__}.{name} has no docstring"


@pytest.mark.parametrize("package", [tasks, datamodules])
def test_type_checkers_see_the_same_names_as_runtime(package):
    tree = ast.parse(inspect.getsource(package))
    checked = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for stmt in node.body
        if isinstance(stmt, ast.ImportFrom)
        for alias in stmt.names
    }
    assert checked == set(package._PUBLIC)


def test_public_modules_and_private_helpers():
    for module in ("tasks.api", "tasks.base", "tasks.errors", "tasks.testing", "tasks.tabular"):
        assert importlib.import_module(module).__doc__
    for name in dir(tasks):
        if not name.startswith("_") and name not in tasks.__all__:
            assert inspect.ismodule(getattr(tasks, name)), f"tasks.{name} is public by accident"
