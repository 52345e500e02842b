"""The character text's disk cache: encoded once a chunk at a time, read a window at a time,
the same batches and baselines as in memory, rebuilt when the file changes."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
from conftest import loader_batches, metrics_by_cache, same_batches

import datamodules.chars as chars_module
from datamodules._disk_rows import DiskRows
from datamodules.chars import CharTextDataModule, read_text
from tasks.errors import ConfigError, DataError

#: Several scripts, so that characters take 1 to 4 bytes in UTF-8, and a character the
#: training part lacks (the last line's) lands in the test part.
LINES = [
    "the quick brown fox jumps over the lazy dog.",
    "Größe, Maß und Übermaß; façade, naïve café.",
    "Скорая лиса прыгает через ленивую собаку.",
    "速い茶色の狐が怠け者の犬を飛び越える。",
    "emoji 🦊 and 🐕 mixed in, with tabs\tand spaces.",
]


def write_text(path, repeats: int = 40, tail: str = "zebra ⌘ ends here\n") -> str:
    rng = np.random.default_rng(0)
    text = "\n".join(LINES[i] for i in rng.integers(0, len(LINES), repeats)) + "\n" + tail
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return text


def _module(path, data, **extra) -> CharTextDataModule:
    return CharTextDataModule(
        path=str(path),
        data_dir=str(data),
        block_size=16,
        batch_size=8,
        eval_batch_size=8,
        seed=0,
        **extra,
    )


def _batches(dm: CharTextDataModule) -> list[tuple[torch.Tensor, ...]]:
    dm.setup("fit")
    return loader_batches(dm)


@pytest.mark.parametrize("name", ["book.txt", "book.txt.gz"])
def test_the_disk_cache_gives_the_in_memory_batches_vocabulary_and_baselines(
    tmp_path, monkeypatch, name
):
    path = tmp_path / name
    write_text(path)
    memory = _module(path, tmp_path / "data", cache="memory")
    expected = _batches(memory)
    # chunks of 7 bytes: multi-byte characters are split between reads, and the split
    # into train/val/test falls inside a chunk
    monkeypatch.setattr(chars_module, "CHUNK", 7)
    disk = _module(path, tmp_path / "data", cache="disk")
    assert same_batches(_batches(disk), expected)
    assert isinstance(disk.encoded, DiskRows) and memory.cache_folder is None
    assert disk.cache_folder.is_relative_to(tmp_path / "data" / "cache" / "text")
    assert disk.vocab == memory.vocab and "⌘" not in disk.vocab  # only in the test part
    assert disk.baselines.keys() == memory.baselines.keys() == {"val", "test"}
    for split, report in memory.baselines.items():
        assert disk.baselines[split] == pytest.approx(report, rel=1e-12)
    assert disk.example_inputs(3) == memory.example_inputs(3)
    assert torch.equal(disk.encoded[:].long(), memory.encoded.long())


def test_text_chunks_decode_as_the_whole_file_does(tmp_path):
    path = tmp_path / "bad.txt"
    good = write_text(path).encode("utf-8")
    path.write_bytes(good[:100] + b"\xff\xfe" + good[100:] + "é".encode()[:1])  # broken
    whole = read_text(path, "datamodule.path")
    for size in (1, 2, 3, 5, 64, 1 << 20):
        assert "".join(chars_module.text_chunks(path, size=size)) == whole


def test_a_later_run_reads_the_cache_and_not_the_text(tmp_path, monkeypatch):
    path = tmp_path / "book.txt"
    write_text(path)
    first = _module(path, tmp_path / "data", cache="disk")
    expected = _batches(first)
    monkeypatch.setattr(chars_module, "text_chunks", pytest.fail)
    monkeypatch.setattr(chars_module, "read_text", pytest.fail)
    again = _module(path, tmp_path / "data", cache="auto")  # a complete cache is used
    assert same_batches(_batches(again), expected) and again.cache_folder == first.cache_folder


def test_a_changed_text_rebuilds_the_cache_and_removes_the_old_one(tmp_path):
    path = tmp_path / "book.txt"
    write_text(path)
    first = _module(path, tmp_path / "data", cache="disk")
    _batches(first)
    write_text(path, repeats=45, tail="a new ending\n")
    os.utime(path, ns=(1, 1))  # a new modification time even on a coarse clock
    second = _module(path, tmp_path / "data", cache="disk")
    memory = _module(path, tmp_path / "data", cache="memory")
    assert same_batches(_batches(second), _batches(memory))
    assert second.cache_folder != first.cache_folder and not first.cache_folder.exists()


def test_a_checkpoint_vocabulary_is_kept_and_the_text_encoded_with_it(tmp_path):
    """Fine-tuning on another text: the checkpoint's vocabulary stays (unknown characters
    become 2) in a cache of its own, and a later fresh run gets the text's own vocabulary
    again, never the checkpoint's."""
    path = tmp_path / "book.txt"
    write_text(path)
    fresh = _module(path, tmp_path / "data", cache="disk")
    fresh.setup("fit")
    vocab = "\0\n\ufffdabcdefghijklmnopqrstuvwxyz "
    for cache in ("memory", "disk"):
        tuned = _module(path, tmp_path / "data", cache=cache)
        tuned.fitted_state = {"vocab": vocab}
        tuned.setup("fit")
        assert tuned.vocab == vocab
        ids = tuned.encoded[:].long()
        assert int(ids.max()) < len(vocab) and int((ids == 2).sum()) > 0
    assert tuned.cache_folder != fresh.cache_folder
    again = _module(path, tmp_path / "data", cache="disk")
    again.setup("fit")
    assert again.vocab == fresh.vocab and torch.equal(again.encoded[:], fresh.encoded[:])


def test_auto_goes_to_disk_only_above_the_memory_budget(tmp_path):
    path = tmp_path / "book.txt"
    write_text(path)
    small = _module(path, tmp_path / "a", memory_budget_mb=100)
    small.setup("fit")
    assert small.cache_folder is None and not (tmp_path / "a").exists()
    large = _module(path, tmp_path / "b", memory_budget_mb=0.001)
    large.setup("fit")
    assert isinstance(large.encoded, DiskRows) and large.cache_folder.is_dir()
    with pytest.raises(ConfigError, match="datamodule.cache='ram'; expected one of auto"):
        CharTextDataModule(path=str(path), cache="ram")


def test_an_empty_or_too_short_text_is_refused_before_any_cache_is_written(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n ")
    with pytest.raises(DataError, match="has no text"):
        _module(blank, tmp_path / "data", cache="disk").setup("fit")
    short = tmp_path / "short.txt"
    short.write_text("just a few words")
    with pytest.raises(DataError, match="fewer than one window"):
        _module(short, tmp_path / "data", cache="disk").setup("fit")
    assert not [p for p in (tmp_path / "data").rglob("meta.json")]


def test_a_run_on_the_text_cache_trains_as_the_in_memory_run(tmp_path):
    path = tmp_path / "book.txt"
    write_text(path, repeats=120)
    overrides = [f"datamodule.path={path}", "datamodule.block_size=32"]
    metrics = metrics_by_cache("text_char_lm", overrides, tmp_path)
    assert metrics[0] == metrics[1] and "test/perplexity" in metrics[0]
    assert list((tmp_path / "data" / "cache" / "text").iterdir())
