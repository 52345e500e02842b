"""The Python API: compose a preset's config, run it, and look up what is registered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, open_dict

from tasks.engine import registry as _registry
from tasks.engine.hydra_config import (
    normalize_overrides,
    primary_config_dir,
    register_search_path_plugin,
)

if TYPE_CHECKING:
    from lightning import LightningDataModule


def compose(preset: str | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``python -m tasks +task=PRESET OVERRIDES...`` would run.

    Args:
        preset: A preset name (see :func:`list_presets`), or None to name it in ``overrides``.
        overrides: Hydra overrides such as ``"trainer.max_epochs=3"`` or ``"debug=tiny"``.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    args = ([f"task={preset}"] if preset else []) + list(overrides)
    args = normalize_overrides(args)
    register_search_path_plugin()
    with initialize_config_dir(primary_config_dir(), version_base="1.3"):
        cfg = hydra_compose("config", overrides=args, return_hydra_config=True)
    choice = cfg.hydra.runtime.choices.get("task")
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.preset = choice
    return cfg


def run(
    config: DictConfig | str,
    overrides: Sequence[str] = (),
    datamodule: LightningDataModule | None = None,
) -> dict[str, Any]:
    """Train/test/predict as the config says; returns the run summary (also ``summary.json``).

    Args:
        config: A composed config, or a preset name composed with ``overrides``.
        overrides: Hydra overrides, used when ``config`` is a preset name.
        datamodule: A datamodule built in Python (e.g. ``TabularDataModule(frame=df, ...)``),
            used instead of the config's ``datamodule`` section.
    """
    from tasks.engine.runner import execute

    cfg = compose(config, overrides) if isinstance(config, str) else config
    return execute(cfg, datamodule=datamodule)


def _describe(entry: _registry.Entry) -> dict[str, str]:
    return {
        "value": entry.value,
        "distribution": entry.distribution,
        "version": entry.version,
        "origin": entry.origin,
    }


def list_tasks() -> dict[str, dict[str, str]]:
    """Registered task names with their import path and origin; imports no task module."""
    return {name: _describe(e) for name, e in sorted(_registry.entries("task").items())}


def list_datamodules() -> dict[str, dict[str, str]]:
    """Registered datamodule names with their import path and origin."""
    return {name: _describe(e) for name, e in sorted(_registry.entries("datamodule").items())}


def list_presets() -> dict[str, dict[str, str]]:
    """Preset names with description, task (the problem it solves), file and origin."""
    return {
        name: {
            "description": p.description,
            "task": p.task,
            "path": str(p.path),
            "distribution": p.source.distribution,
            "version": p.source.version,
            "origin": p.source.origin,
        }
        for name, p in sorted(_registry.presets().items())
    }


def get_task(name: str) -> type:
    """The task class registered as ``name`` (or at import path ``module:Class``)."""
    return _registry.load("task", name)  # type: ignore[return-value]


def get_datamodule(name: str) -> type:
    """The datamodule class registered as ``name`` (or at import path ``module:Class``)."""
    return _registry.load("datamodule", name)  # type: ignore[return-value]
