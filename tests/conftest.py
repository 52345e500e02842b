"""Shared fixtures: fake plugin entry points, generated tables, CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tasks.engine import registry as _registry

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


def run_on_file(
    preset: str, path: Path, target: str, *overrides: str, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``python -m tasks +task=PRESET datamodule.path=PATH datamodule.target=TARGET ...``."""
    args = [f"+task={preset}", f"datamodule.path={path}", f"datamodule.target={target}"]
    return run_cli(*args, *overrides, cwd=cwd)


def user_data_overrides(preset: str, tmp_path, monkeypatch=None) -> list[str]:
    """Presets for the user's own file leave path/target as ???: give them a generated table;
    image presets get generated files (``monkeypatch`` lets CIFAR-10 accept its checksum)."""
    from tasks.api import compose

    cfg = compose(preset)
    if str(cfg.task._name_) == "image_classification":
        return image_data_overrides(cfg, tmp_path, monkeypatch)
    missing = OmegaConf.missing_keys(cfg)
    if missing and str(cfg.task._name_) == "sequence_classification":
        return [f"datamodule.path={write_ucr_csv(tmp_path / 'sequences.csv')}"]
    if str(cfg.datamodule._name_) == "imdb":
        write_imdb_archive(tmp_path / "data", monkeypatch)
        return [f"datamodule.data_dir={tmp_path / 'data'}", "datamodule.download=false"]
    if missing and str(cfg.task._name_) == "text_classification":
        return [f"datamodule.path={write_texts_csv(tmp_path / 'texts.csv')}"]
    if missing and str(cfg.task._name_) == "char_language_model":
        path = tmp_path / "corpus.txt"
        path.write_text(make_corpus(), encoding="utf-8")
        return [f"datamodule.path={path}", "datamodule.block_size=32"]
    if missing and str(cfg.task._name_) == "forecasting":
        path = write_demand_csv(tmp_path / "demand.csv")
        return [f"datamodule.path={path}", "datamodule.target=demand"]
    if not missing:
        return []
    assert missing <= {"datamodule.path", "datamodule.target"}, missing
    frame = make_table(90)
    if cfg.datamodule.get("problem") == "regression":
        frame["label"] = frame["a"] * 2.0 + frame["b"]
    frame.to_csv(tmp_path / "user.csv", index=False)
    return [f"datamodule.path={tmp_path}/user.csv", "datamodule.target=label"]


def write_demand_csv(path: Path, steps: int = 24 * 7 * 3, **options) -> Path:
    """A generated hourly demand table (``timestamp``, ``demand``, ``temperature``)."""
    from datamodules.forecast import SyntheticDemandDataModule

    frame = SyntheticDemandDataModule(steps=steps, **options).load_frame()
    frame.to_csv(path, index=False)
    return path


WORDS = {
    "negative": ["awful", "terrible", "late", "broken", "hate", "rude"],
    "neutral": ["today", "flight", "car", "news", "monday", "report"],
    "positive": ["great", "love", "thanks", "amazing", "happy", "best"],
}
FILLER = ["the", "a", "my", "was", "is", "and", "so", "this", "with", "again"]


def make_texts(
    n: int = 240, seed: int = 0, classes: tuple = ("negative", "positive")
) -> pd.DataFrame:
    """Short texts whose class shows in a few cue words among filler words."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = classes[i % len(classes)]
        words = list(rng.choice(FILLER, rng.integers(3, 12))) + list(
            rng.choice(WORDS[label], rng.integers(1, 3))
        )
        rng.shuffle(words)
        rows.append({"text": " ".join(words).capitalize() + "!", "label": label})
    return pd.DataFrame(rows)


def write_texts_csv(path: Path, n: int = 240, **options) -> Path:
    make_texts(n, **options).to_csv(path, index=False)
    return path


def write_imdb_archive(data_dir: Path, monkeypatch=None, n: int = 96) -> Path:
    """A small ``aclImdb_v1.tar.gz`` (generated reviews, a quarter in test/, plus an
    ``unsup`` review that must be ignored) in ``data_dir/imdb``; its MD5 is accepted."""
    import io
    import tarfile

    from datamodules._download import md5sum
    from datamodules.text import IMDBDataModule

    archive = data_dir / "imdb" / IMDBDataModule.ARCHIVE
    archive.parent.mkdir(parents=True, exist_ok=True)
    members = [("aclImdb/train/unsup/0_0.txt", b"unlabelled")]
    for i, row in make_texts(n).iterrows():
        split = "test" if i % 4 == 0 else "train"
        label = "pos" if row.label == "positive" else "neg"
        members.append((f"aclImdb/{split}/{label}/{i}_7.txt", (row.text + "<br />end").encode()))
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    if monkeypatch is not None:
        monkeypatch.setattr(IMDBDataModule, "MD5", md5sum(archive))
    return archive


def make_corpus(repeats: int = 60, seed: int = 0) -> str:
    """A running text of simple sentences (about 3,000 characters per 60 repeats)."""
    rng = np.random.default_rng(seed)
    subjects, verbs, objects = (
        ["the cat", "a dog", "my friend"],
        ["sees", "likes"],
        ["the sun", "a tree"],
    )
    return "\n".join(
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}."
        for _ in range(repeats * 3)
    )


# -- image data made on the spot (tests never download) ----------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (gzipped when the name ends in .gz)."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_idx_dataset(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict:
    """MNIST-layout files of learnable 28x28 images (class k lights up row band k)."""
    from datamodules._download import md5sum

    rng = np.random.default_rng(seed)
    md5 = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 7, 4:24] = 250
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    for path in folder.iterdir():
        md5[path.name] = md5sum(path)
    return md5


def write_cifar_archive(folder: Path, n_train: int = 40, n_test: int = 20) -> str:
    """A CIFAR-10-layout ``cifar-10-python.tar.gz`` (two train batches); returns its MD5."""
    import io
    import pickle
    import tarfile

    from datamodules._download import md5sum

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, n in (
            ("data_batch_1", n_train // 2),
            ("data_batch_2", n_train // 2),
            ("test_batch", n_test),
        ):
            batch = {
                b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                b"labels": [i % 10 for i in range(n)],
            }
            payload = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return md5sum(path)


def write_image_folder(root: Path, per_class: int = 8, size: int = 12) -> Path:
    """Class folders of PNGs: grey, RGB and RGBA images mixed, each class a different tint."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"cat": (200, 40, 40), "dog": (40, 200, 40), "owl": (40, 40, 200)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.integers(0, 40, (size, size, 3)) + np.array(colour)).clip(0, 255)
            image = Image.fromarray(pixels.astype(np.uint8))
            mode = ("RGB", "L", "RGBA")[i % 3]
            image.convert(mode).save(root / name / f"{i}.png")
    return root


def image_data_overrides(cfg, tmp_path: Path, monkeypatch) -> list[str]:
    """Image presets: generated files in place of the real datasets (no download)."""
    from datamodules.image import CIFAR10DataModule

    name = cfg.datamodule._name_
    data = tmp_path / "data"
    if name in ("mnist", "fashion_mnist"):
        write_idx_dataset(data / name)
    elif name == "cifar10":
        monkeypatch.setattr(CIFAR10DataModule, "MD5", write_cifar_archive(data / "cifar10"))
    elif name == "image_folder":
        return [f"datamodule.path={write_image_folder(tmp_path / 'images')}"]
    else:
        return []
    return [f"datamodule.data_dir={data}", "datamodule.download=false"]


def write_ucr_csv(path: Path, n: int = 60, steps: int = 24) -> Path:
    """UCR layout (label, then one column per step): class 1 has a burst somewhere."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    x = rng.normal(0, 0.3, (n, steps))
    for i in np.flatnonzero(labels):
        start = rng.integers(0, steps - 6)
        x[i, start : start + 6] += np.sin(np.arange(6) * 2.5) * 2
    frame = pd.DataFrame(x, columns=[f"t_{j}" for j in range(steps)])
    frame.insert(0, "label", labels)
    frame.to_csv(path, index=False)
    return path


def loader_batches(dm: Any) -> list[tuple[Any, ...]]:
    """Every batch a set-up datamodule gives: two training epochs (two shuffles), then
    validation and test, in order."""
    loaders = (dm.train_dataloader(), dm.train_dataloader(), dm.val_dataloader())
    return [b for loader in (*loaders, dm.test_dataloader()) for b in loader]


def same_batches(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Whether two lists of batches hold equal tensors (values and dtypes), in order."""
    import torch

    return len(a) == len(b) and all(
        len(left) == len(right) and all(torch.equal(x, y) for x, y in zip(left, right))
        for left, right in zip(a, b)
    )


def metrics_by_cache(preset: str, overrides: list[str], tmp_path: Path) -> list[dict]:
    """Test metrics of the same tiny run (``debug=tiny``) of ``preset`` with
    ``datamodule.cache=memory``, then ``disk`` (the cache under ``tmp_path/data``)."""
    import warnings

    from tasks.api import compose, run

    metrics = []
    for cache in ("memory", "disk"):
        cfg = compose(
            preset,
            [
                "debug=tiny",
                f"output_dir={tmp_path / cache}",
                f"datamodule.cache={cache}",
                f"datamodule.data_dir={tmp_path / 'data'}",
                *overrides,
            ],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics.append(run(cfg)["metrics"])
    return metrics
