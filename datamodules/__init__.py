"""Datamodules of lightning-tasks: one data source per module, loaded on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_PUBLIC = {
    "BaseDataModule": "datamodules.base",
    "TensorLoader": "datamodules.base",
    "split_indices": "datamodules.base",
    "TabularDataModule": "datamodules.tabular",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from datamodules.base import BaseDataModule, TensorLoader, split_indices
    from datamodules.tabular import TabularDataModule
