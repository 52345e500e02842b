"""Shared fixtures: fake plugin entry points, generated tables, CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tasks import _registry

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakeDistribution:
    name: str
    version: str = "1.0"
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = {"Name": self.name}


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    group: str
    dist: FakeDistribution


@pytest.fixture
def add_entry_point(monkeypatch):
    """Register extra entry points next to the installed ones: ``add(kind, name, value, dist)``."""
    extra: list[FakeEntryPoint] = []

    def fake_entry_points(group):
        return [*metadata.entry_points(group=group), *(ep for ep in extra if ep.group == group)]

    monkeypatch.setattr(_registry, "_entry_points", fake_entry_points)
    _registry.clear_cache()

    def add(kind: str, name: str, value: str, dist: str = "some-plugin", version: str = "1.0"):
        extra.append(
            FakeEntryPoint(name, value, _registry.GROUPS[kind], FakeDistribution(dist, version))
        )
        _registry.clear_cache()

    yield add
    _registry.clear_cache()


@pytest.fixture(autouse=True)
def _plugins_enabled(monkeypatch):
    """Tests start with plugins on, whatever the developer's shell says."""
    monkeypatch.delenv(_registry.DISABLE_PLUGINS_ENV, raising=False)
    _registry.clear_cache()
    yield
    _registry.clear_cache()


def make_table(n: int = 120, seed: int = 0, classes: tuple = ("no", "yes")) -> pd.DataFrame:
    """A learnable table: the label depends on two of four numeric features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    score = x[:, 0] + 0.5 * x[:, 1]
    edges = np.quantile(score, np.linspace(0, 1, len(classes) + 1)[1:-1])
    label = np.asarray(classes, dtype=object)[np.searchsorted(edges, score)]
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3], "label": label})


@pytest.fixture
def table_csv(tmp_path) -> Path:
    path = tmp_path / "table.csv"
    make_table().to_csv(path, index=False)
    return path


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict | None = None,
    python: str = sys.executable,
    timeout: int = 300,
) -> subprocess.CompletedProcess:
    """``python -m tasks ARGS`` in a subprocess, returning its exit code and output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop(_registry.DISABLE_PLUGINS_ENV, None)
    if env and _registry.DISABLE_PLUGINS_ENV in env:
        full_env[_registry.DISABLE_PLUGINS_ENV] = env[_registry.DISABLE_PLUGINS_ENV]
    return subprocess.run(
        [python, "-m", "tasks", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def user_data_overrides(preset: str, tmp_path) -> list[str]:
    """Presets for the user's own file leave path/target as ???: give them a generated table."""
    from tasks.api import compose

    cfg = compose(preset)
    missing = OmegaConf.missing_keys(cfg)
    if not missing:
        return []
    assert missing <= {"datamodule.path", "datamodule.target"}, missing
    frame = make_table(90)
    if cfg.datamodule.get("problem") == "regression":
        frame["label"] = frame["a"] * 2.0 + frame["b"]
    frame.to_csv(tmp_path / "user.csv", index=False)
    return [f"datamodule.path={tmp_path}/user.csv", "datamodule.target=label"]
