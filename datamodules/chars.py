"""Characters for language models: a list of items (one per line, e.g. names) or one
running text cut into windows."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules.base import BaseDataModule, split_indices
from tasks.errors import ConfigError, DataError

PAD, BOUNDARY, UNKNOWN = "\0", "\n", "\ufffd"
BUNDLED = {"names": "names.txt.gz"}
IGNORE = -100


def read_text(path: str | Path, option: str, encoding: str = "utf-8") -> str:
    """A text file (``.gz`` too); undecodable bytes become U+FFFD."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{option}: no such file {str(file)!r} (resolved to {file.resolve()})")
    raw = file.read_bytes()
    if file.suffix == ".gz":
        raw = gzip.decompress(raw)
    text = raw.decode(encoding, errors="replace")
    if not text.strip():
        raise DataError(f"{option}: {str(file)!r} has no text")
    return text


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
        vocab = self.vocab
        if getattr(self, "_index_of", None) != vocab:  # built once per vocabulary
            self._index = {c: i for i, c in enumerate(vocab)}
            self._index_of = vocab
        index = self._index
        return np.fromiter((index.get(c, 2) for c in text), dtype=dtype, count=len(text))

    def id_dtype(self) -> Any:
        """The smallest integer type that holds every id of the vocabulary."""
        size = len(self.vocab)
        return np.uint8 if size <= 256 else np.int16 if size <= 2**15 else np.int32

    def _ngram_baselines(self, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Add-``smoothing`` unigram and bigram models of the training (input, target)
        pairs, scored on the other splits: cross-entropy (nats), perplexity, accuracy."""
        v = len(self.vocab)
        alpha = self.hparams.smoothing
        x, y = pairs["train"]
        unigram = np.bincount(y, minlength=v) + alpha
        unigram = np.log(unigram / unigram.sum())
        counts = np.zeros(v * v, dtype=np.int64)
        for start in range(0, len(x), 2**24):  # int64 pair codes, a chunk at a time
            part = slice(start, start + 2**24)
            counts += np.bincount(x[part].astype(np.int64) * v + y[part], minlength=v * v)
        bigram = counts.reshape(v, v) + alpha
        bigram = np.log(bigram / bigram.sum(axis=1, keepdims=True))
        for split in ("val", "test"):
            if split not in pairs or not len(pairs[split][1]):
                continue
            x, y = pairs[split]
            report = {}
            for name, logp, guess in (
                ("unigram", unigram[y], np.full(len(y), unigram.argmax())),
                ("bigram", bigram[x, y], bigram.argmax(axis=1)[x]),
            ):
                loss = float(-logp.mean())
                report[f"{name}_loss"] = loss
                report[f"{name}_perplexity"] = float(np.exp(loss))
                report[f"{name}_acc"] = float((guess == y).mean())
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
            pairs[split] = (x[mask].numpy(), y[mask].numpy())
        self._ngram_baselines(pairs)


class CharTextDataModule(CharDataModule):
    """One running text: the first ``1 - val_fraction - test_fraction`` of its characters
    train, the next part validates, the end tests (contiguous, never shuffled across).

    Training windows of ``block_size`` characters start every ``stride`` characters;
    inputs are ``text[i : i + block_size]``, targets the same shifted by one. Windows are
    gathered per batch from a strided view of the one encoded text (nothing is copied).

    Args:
        path: Text file (``.gz`` too).
        block_size: Characters per window (the model's context).
        stride: Characters between training windows (default: ``block_size // 2``);
            validation and test windows do not overlap.
        **kwargs: ``val_fraction``, ``test_fraction``, ``smoothing``, ``encoding``, loader
            settings.
    """

    item_list = False

    def __init__(
        self,
        path: str | None = None,
        block_size: int = 128,
        stride: int | None = None,
        **kwargs: Any,
    ) -> None:
        if path is None:
            raise ConfigError("datamodule.path is required: a text file")
        if block_size < 2 or (stride is not None and stride < 1):
            raise ConfigError(
                f"block_size must be >= 2 and stride >= 1, got {block_size}, {stride}"
            )
        kwargs.setdefault("val_fraction", 0.1)
        kwargs.setdefault("test_fraction", 0.1)
        super().__init__(**kwargs)
        self.encoded: Tensor | None = None
        self.training_items = None

    @property
    def block_size(self) -> int:
        return int(self.hparams.block_size)

    def setup_fit(self) -> None:
        hp = self.hparams
        text = read_text(hp.path, "datamodule.path", hp.encoding)
        n = len(text)
        b = self.block_size
        test_start = n - int(round(hp.test_fraction * n))
        val_start = test_start - int(round(hp.val_fraction * n))
        if val_start < b + 1:
            raise DataError(
                f"the training part has {val_start} characters, fewer than one window of "
                f"block_size + 1 = {b + 1}; use a longer text or a smaller block_size"
            )
        if not self.fitted_state:
            self._fit_vocab(text[:val_start])
        # 1 byte a character for vocabularies up to 256 (int64 would be 8: 8 GB for 1 GB)
        self.encoded = torch.from_numpy(self.ids(text, self.id_dtype()))
        stride = hp.stride or max(1, b // 2)
        bounds = {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, n)}
        pairs = {}
        for split, (a, z) in bounds.items():
            last = z - b - 1  # the last start whose targets stay inside the part
            starts = np.arange(a, last + 1, stride if split == "train" else b)
            if len(starts):
                setattr(self, f"{split}_data", (torch.from_numpy(starts),))
            part = self.encoded[a:z].numpy()
            pairs[split] = (part[:-1], part[1:])
        self._ngram_baselines(pairs)

    def collate(self, stage: str) -> Callable[[tuple[Tensor, ...]], Any] | None:
        windows = self.encoded.unfold(0, self.block_size + 1, 1)  # a view, not a copy

        def windows_at(batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
            chunk = windows[batch[0]].long()  # the ids are stored in id_dtype()
            return chunk[:, :-1], chunk[:, 1:]

        return windows_at
