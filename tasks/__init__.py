"""lightning-tasks: plugin-based PyTorch Lightning tasks run from one Hydra command.

Importing this package is cheap: the public names below are loaded on first use,
so listing presets or printing help never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
#: Version of the plugin API (base classes, batch layout, config layout, entry-point groups).
#: A plugin declares the one it targets as ``LIGHTNING_TASKS_API = 1`` in the module its
#: entry points name (or in its top-level package); a mismatch is warned about on load.
API_VERSION = 1

_PUBLIC = {
    # running
    "compose": "tasks.api",
    "run": "tasks.api",
    # registry
    "list_tasks": "tasks.api",
    "list_datamodules": "tasks.api",
    "list_presets": "tasks.api",
    "get_task": "tasks.api",
    "get_datamodule": "tasks.api",
    # deploying
    "export_bundle": "tasks.bundle",
    "load_bundle": "tasks.bundle",
    # task classes
    "BaseTask": "tasks.base",
    "TabularClassification": "tasks.tabular",
    "TabularRegression": "tasks.tabular",
    # errors
    "UserError": "tasks.errors",
    "ConfigError": "tasks.errors",
    "DataError": "tasks.errors",
    "UnknownNameError": "tasks.errors",
    "DuplicateNameError": "tasks.errors",
    "PluginLoadError": "tasks.errors",
    "PluginVersionWarning": "tasks.errors",
    "PluginConflictWarning": "tasks.errors",
}

__all__ = sorted(_PUBLIC) + ["API_VERSION", "__version__"]


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from tasks.api import (
        compose,
        get_datamodule,
        get_task,
        list_datamodules,
        list_presets,
        list_tasks,
        run,
    )
    from tasks.base import BaseTask
    from tasks.bundle import export_bundle, load_bundle
    from tasks.errors import (
        ConfigError,
        DataError,
        DuplicateNameError,
        PluginConflictWarning,
        PluginLoadError,
        PluginVersionWarning,
        UnknownNameError,
        UserError,
    )
    from tasks.tabular import TabularClassification, TabularRegression
