"""The on-disk image cache: rows indexed like a tensor, batches identical to the in-memory
path, reuse without decoding, invalidation when a file changes, no half-written cache."""

from __future__ import annotations

import copy
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from conftest import loader_batches, metrics_by_cache, same_batches, write_image_folder

import datamodules.image as image_module
from datamodules._disk_rows import CacheWriter, DiskRows, read_cache, take
from datamodules.image import ImageFolderDataModule, ImageWarning
from tasks.errors import ConfigError


def _rows(tmp_path, array: np.ndarray) -> DiskRows:
    with CacheWriter(tmp_path / "cache" / "key") as writer:
        writer.append("x", array[:3])
        writer.append("x", array[3:])
        writer.commit()
    return read_cache(tmp_path / "cache" / "key")["rows"]["x"]


def test_disk_rows_answer_indexing_as_the_tensor_does(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (10, 2, 3), dtype=np.uint8)
    tensor, rows = torch.from_numpy(array), _rows(tmp_path, array)
    assert (len(rows), rows.shape, rows.dtype, rows.ndim) == (10, tensor.shape, torch.uint8, 3)
    keys = [
        3,
        -1,
        slice(2, 7),
        slice(None, None, 3),
        slice(8, 2),
        torch.tensor([5, 1, 1, 9]),
        np.array([0, -2]),
        [4, 2],
        torch.arange(10) % 3 == 0,
    ]
    for key in keys:
        assert torch.equal(rows[key], tensor[key]), key
    view, rows_of_view = take(rows, [7, 2, 5, 0]), torch.tensor([7, 2, 5, 0])
    assert isinstance(view, DiskRows) and torch.equal(view[:], tensor[rows_of_view])
    inner = take(view, torch.tensor([3, 1]))  # a view of a view
    assert torch.equal(inner[:], tensor[[0, 2]]) and torch.equal(inner[-1], tensor[2])
    assert [c.shape[0] for c in rows.split(4)] == [4, 4, 2]
    assert torch.equal(torch.cat(list(view.split(3))), tensor[rows_of_view])
    for other in (copy.deepcopy(view), pickle.loads(pickle.dumps(view))):
        assert torch.equal(other[:], view[:])
    for out_of_range in (torch.tensor([10]), 10, -11):  # as a tensor: no wrapping around
        with pytest.raises(IndexError):
            rows[out_of_range]
    assert torch.equal(take(tensor, [1, 2]), tensor[[1, 2]])  # tensors are indexed as usual


def test_a_cache_writer_refuses_rows_of_another_shape(tmp_path):
    with pytest.raises(ValueError, match="rows of"), CacheWriter(tmp_path / "c" / "k") as w:
        w.append("x", np.zeros((2, 3), np.uint8))
        w.append("x", np.zeros((2, 4), np.uint8))
    assert not list((tmp_path / "c").iterdir())  # the partial folder is gone


def _settings(root, data, **extra):
    return dict(
        path=str(root),
        data_dir=str(data),
        batch_size=4,
        val_fraction=0.2,
        test_fraction=0.2,
        **extra,
    )


def _batches(dm: ImageFolderDataModule) -> list[tuple[torch.Tensor, ...]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageWarning)
        dm.setup("fit")
    return loader_batches(dm)


def test_disk_cache_gives_the_in_memory_batches_and_state(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=10)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    memory = ImageFolderDataModule(**_settings(root, tmp_path / "data", cache="memory"))
    disk = ImageFolderDataModule(**_settings(root, tmp_path / "data", cache="disk"))
    expected = _batches(memory)
    assert same_batches(_batches(disk), expected)
    assert isinstance(disk.train_data[0], DiskRows) and memory.cache_folder is None
    assert disk.cache_folder.is_relative_to(tmp_path / "data" / "cache" / "images")
    assert disk.fitted_state == memory.fitted_state  # class names, channel statistics
    assert disk.example_inputs(2) == memory.example_inputs(2)
    # a later run reuses the cache, warns about the same skipped file, and decodes nothing
    again = ImageFolderDataModule(**_settings(root, tmp_path / "data", cache="auto"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_module, "_decode", pytest.fail)
        with pytest.warns(ImageWarning, match="skipped 1 unreadable.*broken.png"):
            again.setup("fit")
    assert again.cache_folder == disk.cache_folder and same_batches(_batches(again), expected)


def test_auto_goes_to_disk_only_above_the_memory_budget(tmp_path):
    root = write_image_folder(tmp_path / "images")
    small = ImageFolderDataModule(**_settings(root, tmp_path / "a", memory_budget_mb=100))
    small.setup("fit")
    assert small.cache_folder is None and not (tmp_path / "a").exists()
    large = ImageFolderDataModule(**_settings(root, tmp_path / "b", memory_budget_mb=0.001))
    large.setup("fit")
    assert isinstance(large.train_data[0], DiskRows) and large.cache_folder.is_dir()
    with pytest.raises(ConfigError, match="datamodule.cache='ram'; expected one of auto"):
        ImageFolderDataModule(path=str(root), cache="ram")


def test_a_changed_added_or_removed_file_rebuilds_the_cache(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "images", per_class=10)
    first = ImageFolderDataModule(**_settings(root, tmp_path / "data", cache="disk"))
    _batches(first)
    changed = root / "cat" / "3.png"
    Image.new("RGB", (12, 12), (7, 77, 177)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new modification time even on a coarse clock
    second = ImageFolderDataModule(**_settings(root, tmp_path / "data", cache="disk"))
    memory = ImageFolderDataModule(**_settings(root, tmp_path / "data", cache="memory"))
    assert same_batches(_batches(second), _batches(memory))
    assert second.cache_folder != first.cache_folder
    assert not first.cache_folder.exists()  # the stale cache is removed, not kept forever
    (root / "owl" / "0.png").unlink()
    third = ImageFolderDataModule(**_settings(root, tmp_path / "data", cache="disk"))
    third.setup("fit")
    rows = sum(len(s[1]) for s in (third.train_data, third.val_data, third.test_data))
    assert rows == 29 and third.cache_folder not in (first.cache_folder, second.cache_folder)


def test_an_interrupted_cache_write_leaves_no_cache_to_trust(tmp_path, monkeypatch):
    for split in ("train", "test"):
        write_image_folder(tmp_path / "images" / split, per_class=6)
    settings = _settings(tmp_path / "images", tmp_path / "data", cache="disk")
    decode, calls = image_module._decode, []

    def killed_on_the_test_split(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return decode(*args, **kwargs)

    monkeypatch.setattr(image_module, "_decode", killed_on_the_test_split)
    with pytest.raises(KeyboardInterrupt):
        ImageFolderDataModule(**settings).setup("fit")
    left = [p for p in (tmp_path / "data").rglob("*")]
    assert not [p for p in left if p.name == "meta.json" or ".partial-" in p.name], left
    monkeypatch.setattr(image_module, "_decode", decode)
    whole = ImageFolderDataModule(**settings)
    memory = ImageFolderDataModule(**{**settings, "cache": "memory"})
    assert same_batches(_batches(whole), _batches(memory))


def test_a_run_on_the_disk_cache_trains_as_the_in_memory_run(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=10)
    metrics = metrics_by_cache("image_folder", [f"datamodule.path={root}"], tmp_path)
    assert metrics[0] == metrics[1] and "test/acc" in metrics[0]
    assert list((tmp_path / "data" / "cache" / "images").iterdir())


def _text_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("a running text of some words, said again and again.\n" * 40)
    return path


@pytest.mark.parametrize(
    ("preset", "data"),
    [
        ("image_folder", lambda tmp_path: write_image_folder(tmp_path / "images")),
        ("text_char_lm", _text_file),
    ],
)
def test_an_unknown_cache_mode_ends_the_cli_with_one_line(tmp_path, preset, data):
    from conftest import run_cli

    result = run_cli(
        f"+task={preset}",
        f"datamodule.path={data(tmp_path)}",
        "datamodule.cache=ram",
        f"datamodule.data_dir={tmp_path / 'data'}",
        "debug=tiny",
        f"output_dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    first = result.stderr.strip().splitlines()[0]
    assert first == "error: datamodule.cache='ram'; expected one of auto, memory, disk", first
    assert not (tmp_path / "data").exists()  # nothing decoded, no cache folder
