"""Characters for language models: a list of items (one per line, e.g. names) or one
running text cut into windows."""

from __future__ import annotations

import codecs
import gzip
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules import _disk_rows
from datamodules.base import BaseDataModule, id_dtype, split_indices
from tasks.errors import ConfigError, DataError

PAD, BOUNDARY, UNKNOWN = "\0", "\n", "\ufffd"
BUNDLED = {"names": "names.txt.gz"}
IGNORE = -100
#: Bytes of a text file decoded, and characters encoded or counted, at a time.
CHUNK = 1 << 22


def _text_file(path: str | Path, option: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{option}: no such file {str(file)!r} (resolved to {file.resolve()})")
    return file


def read_text(path: str | Path, option: str, encoding: str = "utf-8") -> str:
    """A text file (``.gz`` too); undecodable bytes become U+FFFD."""
    file = _text_file(path, option)
    raw = file.read_bytes()
    if file.suffix == ".gz":
        raw = gzip.decompress(raw)
    text = raw.decode(encoding, errors="replace")
    if not text or text.isspace():  # (strip() would copy the whole text)
        raise DataError(f"{option}: {str(file)!r} has no text")
    return text


def text_chunks(file: Path, encoding: str = "utf-8", size: int = CHUNK) -> Iterator[str]:
    """The text of a file (``.gz`` too) decoded ``size`` bytes at a time, exactly as
    :func:`read_text` decodes it whole (a character split between two reads is decoded
    once, from both)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rb") as handle:
        while block := handle.read(size):
            if text := decoder.decode(block):
                yield text
    if tail := decoder.decode(b"", final=True):
        yield tail


def _chunks(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[Any, Any]]:
    """(inputs, targets) pairs cut into pieces of at most :data:`CHUNK` items."""
    for x, y in pairs:
        for start in range(0, len(y), CHUNK):
            yield x[start : start + CHUNK], y[start : start + CHUNK]


class CharDataModule(BaseDataModule):
    """Shared by the character datamodules: the vocabulary of the training split (saved in
    checkpoints) and unigram/bigram baselines of it.

    Ids: 0 padding, 1 boundary/newline, 2 unknown (a character the training split lacks),
    then the training characters in sorted order.
    """

    def __init__(self, encoding: str = "utf-8", smoothing: float = 0.1, **kwargs: Any) -> None:
        if smoothing <= 0:
            raise ConfigError(f"datamodule.smoothing must be > 0, got {smoothing}")
        super().__init__(**kwargs)
        #: unigram/bigram baseline metrics per split (``val``, ``test``)
        self.baselines: dict[str, dict[str, float]] = {}

    @property
    def vocab(self) -> str:
        if not self.fitted_state:
            raise DataError(f"{type(self).__name__}: call setup('fit') first")
        return self.fitted_state["vocab"]

    def _fit_vocab(self, training_text: str) -> None:
        chars = sorted(set(training_text) - {PAD, BOUNDARY, UNKNOWN})
        self.fitted_state = {"vocab": PAD + BOUNDARY + UNKNOWN + "".join(chars)}

    def ids(self, text: str, dtype: Any = np.int64) -> np.ndarray:
        """Character ids of ``text`` (2 for characters the training split lacks), as
        ``dtype`` (:meth:`id_dtype` holds a long text in 1 or 2 bytes a character)."""
        out = np.empty(len(text), dtype=dtype)
        for start in range(0, len(text), CHUNK):  # 4 bytes a character of a chunk at a time
            part = text[start : start + CHUNK]
            points = np.frombuffer(part.encode("utf-32-le", "surrogatepass"), dtype="<u4")
            # code point -> id; past the last known code point: the unknown id (clipped)
            np.take(self._id_table(dtype), points, out=out[start : start + len(part)], mode="clip")
        return out

    def _id_table(self, dtype: Any) -> np.ndarray:
        """Code point -> id for every code point up to the vocabulary's largest, then one
        more entry: 2 (unknown), where larger code points are clipped to."""
        vocab, dtype = self.vocab, np.dtype(dtype)
        if getattr(self, "_table_of", None) != (vocab, dtype):  # built once per vocabulary
            table = np.full(max(map(ord, vocab)) + 2, 2, dtype=dtype)
            table[[ord(c) for c in vocab]] = np.arange(len(vocab))
            self._table, self._table_of = table, (vocab, dtype)
        return self._table

    def id_dtype(self) -> np.dtype:
        """The smallest integer type that holds every id of the vocabulary."""
        return id_dtype(len(self.vocab))

    def _ngram_baselines(self, pairs: dict[str, Iterable[tuple[np.ndarray, np.ndarray]]]) -> None:
        """Add-``smoothing`` unigram and bigram models of the training (input, target)
        pairs, scored on the other splits: cross-entropy (nats), perplexity, accuracy.
        Each split's pairs come as one or more (inputs, targets) arrays, counted a chunk
        at a time (a text on disk is never read whole)."""
        v = len(self.vocab)
        alpha = self.hparams.smoothing
        seen = np.zeros(v, dtype=np.int64)
        counts = np.zeros(v * v, dtype=np.int64)
        for x, y in _chunks(pairs["train"]):  # int64 pair codes, a chunk at a time
            seen += np.bincount(y, minlength=v)
            counts += np.bincount(np.asarray(x, np.int64) * v + y, minlength=v * v)
        unigram = np.log((seen + alpha) / (seen + alpha).sum())
        bigram = counts.reshape(v, v) + alpha
        bigram = np.log(bigram / bigram.sum(axis=1, keepdims=True))
        guess = {"unigram": unigram.argmax(), "bigram": bigram.argmax(axis=1)}
        for split in ("val", "test"):
            totals = {"unigram": [0.0, 0], "bigram": [0.0, 0]}  # summed log-loss, hits
            n = 0
            for x, y in _chunks(pairs.get(split, ())):
                y = np.asarray(y, np.int64)
                n += len(y)
                for name, logp, best in (
                    ("unigram", unigram[y], guess["unigram"]),
                    ("bigram", bigram[x, y], guess["bigram"][x]),
                ):
                    totals[name][0] -= float(logp.sum())
                    totals[name][1] += int((best == y).sum())
            if not n:
                continue
            report = {}
            for name, (loss_sum, hits) in totals.items():
                report[f"{name}_loss"] = loss_sum / n
                report[f"{name}_perplexity"] = float(np.exp(loss_sum / n))
                report[f"{name}_acc"] = hits / n
            self.baselines[split] = report

    def data_facts(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "block_size": self.block_size, "item_list": self.item_list}

    # -- bundles: the task generates (CharLanguageModel.bundle_predict) --------------------
    input_kind = "prompt"
    variable_length_inputs = (0,)  # token ids, as long as the longest row

    def input_signature(self) -> dict[str, Any]:
        return {
            "kind": self.input_kind,
            "accepts": "prefixes (strings), or records with prefix, num_samples, temperature, "
            "top_k, max_new_tokens and seed",
            "vocab": self.vocab,
        }

    def example_inputs(self, n: int) -> list[Any]:
        """Prefixes: the empty one, then the first characters of test windows."""
        test = self.test_data
        if test is None:
            return [""]
        x = self.collate("test")(test) if self.collate("test") else test
        first = x[0] if isinstance(x, (tuple, list)) else x
        vocab = self.vocab
        prefixes = [""]
        for row in first[: max(0, n - 1)].tolist():
            text = "".join(vocab[i] for i in row[:3] if i > 2)
            if text not in prefixes:
                prefixes.append(text)
        return [{"prefix": p, "num_samples": 2, "max_new_tokens": 20} for p in prefixes[:n]]


class CharItemsDataModule(CharDataModule):
    """Items, one per line (names, words, short strings), split at random into train,
    validation and test items.

    Each item becomes inputs ``[boundary] + item`` and targets ``item + [boundary]``, so a
    model learns how items start and end; rows are padded (inputs with 0, targets with
    ``-100``, which no loss or metric counts). Empty lines are skipped; duplicates kept.

    Args:
        path: Text file, one item per line.
        dataset: A bundled list instead: ``names`` (8,422 first names).
        lowercase: Lower-case the items.
        max_length: Longest item kept in characters (longer ones are cut; default: the
            longest training item).
        **kwargs: ``val_fraction``, ``test_fraction``, ``smoothing``, ``encoding``, loader
            settings.
    """

    item_list = True

    def __init__(
        self,
        path: str | None = None,
        dataset: str | None = None,
        lowercase: bool = True,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        if (path is None) == (dataset is None):
            raise ConfigError(
                "give exactly one of datamodule.path=FILE (one item per line) or "
                f"datamodule.dataset (one of {sorted(BUNDLED)})"
            )
        if dataset is not None and dataset not in BUNDLED:
            raise ConfigError(f"datamodule.dataset={dataset!r}; choose one of {sorted(BUNDLED)}")
        kwargs.setdefault("val_fraction", 0.1)
        kwargs.setdefault("test_fraction", 0.1)
        super().__init__(**kwargs)
        self.training_items: list[str] = []

    def _items(self) -> list[str]:
        hp = self.hparams
        if hp.dataset is not None:
            resource = resources.files("datamodules") / "data" / BUNDLED[hp.dataset]
            with resources.as_file(resource) as file:
                text = read_text(file, f"datamodule.dataset={hp.dataset}", hp.encoding)
        else:
            text = read_text(hp.path, "datamodule.path", hp.encoding)
        items = [line.strip() for line in text.splitlines()]
        items = [item.lower() if hp.lowercase else item for item in items if item]
        if len(items) < 3:
            raise DataError(f"need at least 3 items (one per line), found {len(items)}")
        return items

    @property
    def block_size(self) -> int:
        return self.fitted_state["max_length"] + 1

    def _tensors(self, items: list[str]) -> tuple[Tensor, Tensor]:
        width = self.block_size
        x = torch.zeros(len(items), width, dtype=torch.long)
        y = torch.full((len(items), width), IGNORE, dtype=torch.long)
        for i, item in enumerate(items):
            ids = torch.from_numpy(self.ids(item[: width - 1]))
            x[i, 0] = 1
            x[i, 1 : len(ids) + 1] = ids
            y[i, : len(ids)] = ids
            y[i, len(ids)] = 1
        return x, y

    def setup_fit(self) -> None:
        hp = self.hparams
        items = self._items()
        train, val, test = split_indices(len(items), hp.val_fraction, hp.test_fraction, hp.seed)
        parts = {
            name: [items[i] for i in idx]
            for name, idx in (("train", train), ("val", val), ("test", test))
        }
        if not self.fitted_state:
            self._fit_vocab("".join(parts["train"]))
            longest = max(len(s) for s in parts["train"])
            self.fitted_state["max_length"] = int(hp.max_length or longest)
        self.training_items = parts["train"]
        pairs = {}
        for split, part in parts.items():
            if not part:
                continue
            x, y = self._tensors(part)
            setattr(self, f"{split}_data", (x, y))
            mask = y != IGNORE
            pairs[split] = [(x[mask].numpy(), y[mask].numpy())]
        self._ngram_baselines(pairs)


class CharTextDataModule(CharDataModule):
    """One running text: the first ``1 - val_fraction - test_fraction`` of its characters
    train, the next part validates, the end tests (contiguous, never shuffled across).

    Training windows of ``block_size`` characters start every ``stride`` characters;
    inputs are ``text[i : i + block_size]``, targets the same shifted by one. Windows are
    gathered per batch from a strided view of the one encoded text (nothing is copied).

    A text larger than the memory budget is encoded once, a chunk at a time, into a cache
    file under ``data_dir/cache/text`` (1 byte a character up to 256 distinct ones), and
    each batch reads its windows from it: the same windows, batches and baselines as in
    memory, with memory for one chunk instead of the text three times over (its bytes, the
    decoded string and the ids). The cache is reused until the file changes.

    Args:
        path: Text file (``.gz`` too).
        block_size: Characters per window (the model's context).
        stride: Characters between training windows (default: ``block_size // 2``);
            validation and test windows do not overlap.
        cache: ``memory`` (read and encode the text on every run), ``disk`` (encode it
            once into a cache file and read windows from it), or ``auto``: ``disk`` when
            three times the file's (uncompressed) size exceeds ``memory_budget_mb``.
        memory_budget_mb: The size above which ``auto`` goes to disk; default a quarter of
            the memory available when the data is set up.
        **kwargs: ``val_fraction``, ``test_fraction``, ``smoothing``, ``encoding``,
            ``data_dir``, loader settings.
    """

    item_list = False

    def __init__(
        self,
        path: str | None = None,
        block_size: int = 128,
        stride: int | None = None,
        cache: str = "auto",
        memory_budget_mb: float | None = None,
        **kwargs: Any,
    ) -> None:
        if path is None:
            raise ConfigError("datamodule.path is required: a text file")
        if block_size < 2 or (stride is not None and stride < 1):
            raise ConfigError(
                f"block_size must be >= 2 and stride >= 1, got {block_size}, {stride}"
            )
        if cache not in _disk_rows.CACHE_MODES:
            raise ConfigError(
                f"datamodule.cache={cache!r}; expected one of {', '.join(_disk_rows.CACHE_MODES)}"
            )
        kwargs.setdefault("val_fraction", 0.1)
        kwargs.setdefault("test_fraction", 0.1)
        super().__init__(**kwargs)
        self.encoded: Tensor | _disk_rows.DiskRows | None = None
        self.training_items = None
        #: The cache folder the encoded text is read from, None when it is in memory.
        self.cache_folder: Path | None = None

    @property
    def block_size(self) -> int:
        return int(self.hparams.block_size)

    def _bounds(self, n: int) -> tuple[int, int]:
        """Where validation and test start in a text of ``n`` characters."""
        hp = self.hparams
        test_start = n - int(round(hp.test_fraction * n))
        val_start = test_start - int(round(hp.val_fraction * n))
        if val_start < self.block_size + 1:
            raise DataError(
                f"the training part has {val_start} characters, fewer than one window of "
                f"block_size + 1 = {self.block_size + 1}; use a longer text or a smaller "
                "block_size"
            )
        return val_start, test_start

    def setup_fit(self) -> None:
        hp = self.hparams
        file = _text_file(hp.path, "datamodule.path")
        cache = meta = None
        if hp.cache != "memory":  # a complete cache of exactly this file is always used
            settings = {"encoding": hp.encoding, "split": [hp.val_fraction, hp.test_fraction]}
            if self.fitted_state:  # a checkpoint's vocabulary: a cache of its own
                settings["vocab"] = self.vocab
            source = _disk_rows.source_folder(Path(hp.data_dir) / "cache", "text", file)
            cache = source / _disk_rows.content_key([file], settings)
            meta = _disk_rows.read_cache(cache)
        if meta is None and (
            cache is None or not _disk_rows.use_disk(hp.cache, 3 * _size(file), hp.memory_budget_mb)
        ):
            text = read_text(file, "datamodule.path", hp.encoding)
            val_start, _ = self._bounds(len(text))
            if not self.fitted_state:
                self._fit_vocab(text[:val_start])
            # 1 byte a character for vocabularies up to 256 (int64 would be 8: 8 GB for 1 GB)
            self.encoded = torch.from_numpy(self.ids(text, self.id_dtype()))
            self.cache_folder = None
        else:
            if meta is None:
                meta = self._write_cache(cache, file)
            if not self.fitted_state:
                self.fitted_state = {"vocab": meta["vocab"]}
            self.encoded = meta["rows"]["ids"]
            self.cache_folder = cache
        n = len(self.encoded)
        val_start, test_start = self._bounds(n)
        b = self.block_size
        stride = hp.stride or max(1, b // 2)
        bounds = {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, n)}
        pairs = {}
        for split, (a, z) in bounds.items():
            last = z - b - 1  # the last start whose targets stay inside the part
            starts = np.arange(a, last + 1, stride if split == "train" else b)
            if len(starts):
                setattr(self, f"{split}_data", (torch.from_numpy(starts),))
            pairs[split] = self._pairs(a, z)
        self._ngram_baselines(pairs)

    def _pairs(self, start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(each character, the next one) of ``text[start:stop]``, a chunk at a time."""
        encoded = self.encoded
        for a in range(start, stop - 1, CHUNK):
            z = min(a + CHUNK + 1, stop)  # one more: the last pair's target
            part = np.asarray(encoded[a:z])
            yield part[:-1], part[1:]

    def _write_cache(self, folder: Path, file: Path) -> dict[str, Any]:
        """Encode the text into a new cache folder a chunk at a time: one pass counts the
        characters (the split), one reads the training part's vocabulary (unless a
        checkpoint's is set), one writes the ids."""
        hp = self.hparams
        n, blank = 0, True
        for text in text_chunks(file, hp.encoding):
            n += len(text)
            blank = blank and text.isspace()
        if blank:
            raise DataError(f"datamodule.path: {str(file)!r} has no text")
        val_start, _ = self._bounds(n)
        if not self.fitted_state:
            chars: set[str] = set()
            done = 0
            for text in text_chunks(file, hp.encoding):
                chars.update(text[: val_start - done])
                done += len(text)
                if done >= val_start:
                    break
            self._fit_vocab("".join(chars))
        dtype = self.id_dtype()
        with _disk_rows.CacheWriter(folder) as writer:
            writer.append("ids", np.zeros(0, dtype))  # the file exists even when empty
            for text in text_chunks(file, hp.encoding):
                writer.append("ids", self.ids(text, dtype))
            writer.commit(vocab=self.vocab, characters=n)
        meta = _disk_rows.read_cache(folder)
        if meta is None:
            raise DataError(f"{folder}: the text cache just written cannot be read back")
        return meta

    def collate(self, stage: str) -> Callable[[tuple[Tensor, ...]], Any] | None:
        encoded, length = self.encoded, self.block_size + 1
        if isinstance(encoded, _disk_rows.DiskRows):
            read = lambda starts: encoded.spans(starts, length)  # noqa: E731
        else:
            windows = encoded.unfold(0, length, 1)  # a view, not a copy
            read = lambda starts: windows[starts]  # noqa: E731

        def windows_at(batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
            chunk = read(batch[0]).long()  # the ids are stored in id_dtype()
            return chunk[:, :-1], chunk[:, 1:]

        return windows_at


def _size(file: Path) -> int:
    """The bytes of a text file once uncompressed (a ``.gz`` file's own record of it)."""
    size = file.stat().st_size
    if file.suffix == ".gz" and size >= 18:
        with open(file, "rb") as handle:  # ISIZE: the last 4 bytes, modulo 2**32
            handle.seek(-4, 2)
            size = max(size, int.from_bytes(handle.read(4), "little"))
    return size
