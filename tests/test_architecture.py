"""Import contracts between tasks and datamodules ([tool.importlinter] in pyproject.toml)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What datamodules may import from tasks: the shared leaf and the errors.
SHARED = {"tasks.batches", "tasks.errors"}
#: The ``lint-imports`` command, run by this interpreter (a script on PATH may belong to
#: another environment); it reads the contracts from pyproject.toml in the working folder.
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def _contracts() -> dict[str, dict]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


@pytest.mark.skipif(
    importlib.util.find_spec("importlinter") is None,
    reason="import-linter is not installed (it comes with the test extra: pip install -e .[test])",
)
def test_import_contracts_are_kept():
    result = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(
            "lint-imports found broken import contracts (pyproject.toml [tool.importlinter]):\n"
            f"{result.stdout}\n{result.stderr}",
            pytrace=False,
        )


def test_datamodules_contract_names_every_other_tasks_module():
    """The forbidden list is written out, so a new tasks module must be added to it."""
    package = ROOT / "tasks"
    modules = {f"tasks.{path.stem}" for path in package.glob("*.py") if path.stem != "__init__"}
    modules |= {f"tasks.{path.parent.name}" for path in package.glob("*/__init__.py")}
    forbidden = set(_contracts()["datamodules-leaf"]["forbidden_modules"])
    assert forbidden == modules - SHARED, (
        "update forbidden_modules of the datamodules-leaf contract in pyproject.toml: "
        f"missing {sorted(modules - SHARED - forbidden)}, not a tasks module "
        f"{sorted(forbidden - (modules - SHARED))}"
    )


def test_every_package_folder_is_shipped():
    """setuptools' package list is written out: a new sub-package (tasks/engine/) missing
    from it installs from a checkout but not from a wheel."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("tasks", "datamodules")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
