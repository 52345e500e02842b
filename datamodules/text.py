"""Labelled texts from a table or a folder, tokenized with a ``tokenizers`` vocabulary
fitted on the training split."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from datamodules._table_prep import (
    check_frame,
    line_break_hint,
    read_table,
    require_columns,
    rows_text,
)
from datamodules.base import BaseDataModule, CVRows, class_predictions, id_dtype
from tasks.errors import ConfigError, DataError

PAD, UNK = "[PAD]", "[UNK]"
TOKENIZERS = ("word", "bpe")
EMPTY = ("drop", "error", "keep")
REPLACEMENT = "\ufffd"


def read_texts(path: str | Path, option: str, encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV/TSV/Parquet table read as text; bytes that are not valid in ``encoding`` become
    U+FFFD (counted by the caller), never a crash halfway through a file."""
    return read_table(
        path,
        option,
        encoding=encoding,
        encoding_errors="replace",
        dtype=str,
        keep_default_na=False,
        na_values=[""],
    )


def read_folder(root: Path, option: str, encoding: str = "utf-8") -> pd.DataFrame:
    """``root/<class>/*.txt``: one text per file, the folder name as its label."""
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{option}: {str(root)!r} has no class folders (root/<class>/*.txt)")
    rows = []
    for folder in classes:
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise DataError(f"{option}: class folder {str(folder)!r} has no .txt files")
        for file in files:
            text = file.read_bytes().decode(encoding, errors="replace")
            rows.append({"text": text, "label": folder.name, "file": str(file)})
    return pd.DataFrame(rows)


def build_tokenizer(kind: str, vocab_size: int, lowercase: bool) -> Any:
    """An untrained ``tokenizers`` tokenizer and its trainer: word level (split on
    whitespace and punctuation) or byte-pair encoding, Unicode NFKC (and lower case)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    specials = [PAD, UNK]
    if kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=specials)
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials)
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer, trainer


#: Characters tokenised at a time: a ``tokenizers`` Encoding takes about 150 bytes a token
#: (measured: 620 MB for the 4.4M tokens of 190k tweets), the ids kept of it 1-4 bytes, so a
#: whole table encoded at once needs far more memory than its padded ids; a chunk of about
#: a million characters (~250k tokens of English) holds that to some 40 MB.
ENCODE_CHARS = 1 << 20

#: Rows of padded ids counted at a time for the document frequency (its sort and masks are
#: several times the ids' own size).
COUNT_CHUNK = 65536


def _document_frequency(ids: np.ndarray, vocab: int) -> np.ndarray:
    """How many rows of ``ids`` hold each token id (padding, 0, not counted): each row
    sorted, the first of each run of equal ids counted, with no loop over the rows (a block
    of rows at a time)."""
    counts = np.zeros(vocab, dtype=np.int64)
    for start in range(0, len(ids), COUNT_CHUNK):
        ordered = np.sort(ids[start : start + COUNT_CHUNK], axis=1)
        first = np.ones(ordered.shape, dtype=bool)
        first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        counts += np.bincount(ordered[first & (ordered > 0)], minlength=vocab)
    return counts.astype(np.float64)


def text_chunks(texts: list[str]) -> Iterator[list[str]]:
    """``texts`` in consecutive chunks of at most :data:`ENCODE_CHARS` characters (a longer
    text is a chunk of its own)."""
    ends = np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)))
    start = 0
    while start < len(texts):
        done = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + ENCODE_CHARS, side="right")))
        yield texts[start:stop]
        start = stop


def token_runs(tokenizer: Any, texts: list[str], dtype: Any) -> Iterator[tuple[np.ndarray, ...]]:
    """``(ids, lengths, empty)`` of ``texts``, a :func:`text_chunks` chunk at a time: the
    ids of the chunk's texts one after the other as ``dtype``, each text's number of them,
    and which texts had none (each of those is one unknown token, 1, of length 1)."""
    for chunk in text_chunks(texts):
        rows = [e.ids for e in tokenizer.encode_batch(chunk)]
        empty = np.fromiter((not row for row in rows), bool, len(rows))
        rows = [row or [1] for row in rows]
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        ids = np.fromiter(chain.from_iterable(rows), dtype, int(lengths.sum()))
        yield ids, lengths, empty


def pad_runs(
    runs: Iterable[tuple[np.ndarray, ...]],
    rows: int,
    max_length: int,
    head: bool,
    dtype: Any,
) -> tuple[Tensor, Tensor]:
    """Token ids ``(rows, max_length)`` padded with 0 and the kept lengths ``(rows,)`` from
    :func:`token_runs`' chunks: each text cut to its first (``head``) or last
    ``max_length`` ids, without a loop over the texts."""
    out = np.zeros((rows, max_length), dtype=dtype)
    kept_all = np.ones(rows, dtype=np.int64)
    row = 0
    for ids, lengths, _ in runs:
        kept = np.minimum(lengths, max_length)
        ends = np.cumsum(lengths)
        first = ends - lengths if head else ends - kept  # where each text's kept ids start
        text = np.repeat(np.arange(len(lengths)), kept)
        column = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
        out[row + text, column] = ids[np.repeat(first, kept) + column]
        kept_all[row : row + len(lengths)] = kept
        row += len(lengths)
    return torch.from_numpy(out), torch.from_numpy(kept_all)


class TextDataModule(BaseDataModule):
    """Texts with a class label, as padded token ids held in memory.

    **Sources**: ``path`` is a CSV/TSV/Parquet table with ``text_column`` and
    ``label_column``, or a folder with one sub-folder of ``.txt`` files per class (the
    folder name is the label; ``root/train/<class>`` and ``root/test/<class>`` give a fixed
    test split). ``test_path`` adds a separate test table; otherwise ``test_fraction`` of
    the rows are held out (stratified, seeded), and ``val_fraction`` for validation.

    **Rules for awkward text** (documented, counted in the summary's ``data_warnings``):
    bytes that are not valid ``encoding`` become U+FFFD instead of failing the file; texts
    longer than ``max_chars`` characters are cut there before tokenizing; empty texts are
    dropped (``empty=drop``), rejected (``error``) or kept as a single unknown token
    (``keep``); a missing label is an error naming the rows.

    **Tokenizer** (Hugging Face ``tokenizers``): ``word`` level or ``bpe``, NFKC-normalised
    and lower-cased (``lowercase``), with at most ``vocab_size`` entries, ``[PAD]`` = 0 and
    ``[UNK]`` = 1, fitted on the training split only and saved in checkpoints as JSON.

    **Length**: sequences are cut at ``max_length`` tokens, by default the
    ``length_percentile`` percentile of the training lengths (keeping the ``head`` or the
    ``tail`` of longer texts, ``truncate``); each batch is trimmed to its longest row.

    Args:
        path: Table or folder.
        text_column: Column holding the text.
        label_column: Column holding the class.
        test_path: Separate test table (same columns).
        split_column: Column saying which rows are ``train``, ``val`` or ``test`` (a fixed
            split; splits it lacks are drawn from the training rows by fraction).
        predict_path: Table (or folder of ``.txt`` files) to classify with ``mode=predict``.
        tokenizer: ``word`` or ``bpe``.
        vocab_size: Largest vocabulary, special tokens included.
        lowercase: Lower-case before tokenizing.
        max_length: Tokens kept per text (None: from ``length_percentile``).
        length_percentile: Percentile of the training lengths used as ``max_length``.
        truncate: Keep the ``head`` or the ``tail`` of longer texts.
        empty: ``drop``, ``error`` or ``keep`` empty texts.
        max_chars: Characters kept per text before tokenizing.
        encoding: Text encoding of the files.
        **kwargs: ``val_fraction``, ``test_fraction``, loader settings of
            :class:`~datamodules.base.BaseDataModule`.
    """

    def __init__(
        self,
        path: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        test_path: str | None = None,
        split_column: str | None = None,
        predict_path: str | None = None,
        tokenizer: str = "word",
        vocab_size: int = 10000,
        lowercase: bool = True,
        max_length: int | None = None,
        length_percentile: float = 95.0,
        truncate: str = "head",
        empty: str = "drop",
        max_chars: int = 20000,
        encoding: str = "utf-8",
        **kwargs: Any,
    ) -> None:
        if path is None and not self._overrides("load_frame"):
            raise ConfigError(
                "datamodule.path is required: a CSV/TSV/Parquet file with a text and a label "
                "column, or a folder with one sub-folder of .txt files per class"
            )
        if tokenizer not in TOKENIZERS:
            raise ConfigError(f"datamodule.tokenizer={tokenizer!r}; expected one of {TOKENIZERS}")
        if empty not in EMPTY:
            raise ConfigError(f"datamodule.empty={empty!r}; expected one of {EMPTY}")
        if truncate not in ("head", "tail"):
            raise ConfigError(f"datamodule.truncate={truncate!r}; expected head or tail")
        if vocab_size < 3:
            raise ConfigError(f"datamodule.vocab_size must be >= 3, got {vocab_size}")
        if max_length is not None and max_length < 1:
            raise ConfigError(f"datamodule.max_length must be >= 1, got {max_length}")
        if not 0 < length_percentile <= 100:
            raise ConfigError(
                f"datamodule.length_percentile must be in (0, 100], got {length_percentile}"
            )
        super().__init__(**kwargs)
        self.texts: dict[str, list[str]] = {}
        self.data_warnings: list[str] = []
        self._tokenizer: Any = None

    def load_frame(self) -> pd.DataFrame:
        """A table with ``text_column`` and ``label_column``, for subclasses that fetch or
        generate their own texts (e.g. a corpus download)."""
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------------------
    def _table(self, source: str | pd.DataFrame, where: str, labelled: bool = True) -> pd.DataFrame:
        hp = self.hparams
        if isinstance(source, pd.DataFrame):
            frame = source
            check_frame(frame, where)
            text_col, label_col = hp.text_column, hp.label_column
        elif Path(source).expanduser().is_dir():
            frame = read_folder(Path(source).expanduser(), where, hp.encoding)
            text_col, label_col = "text", "label"
        else:
            frame = read_texts(source, where, hp.encoding)
            text_col, label_col = hp.text_column, hp.label_column
        needed = [(text_col, "text_column")] + ([(label_col, "label_column")] if labelled else [])
        if labelled and hp.split_column is not None:
            needed.append((hp.split_column, "split_column"))
        require_columns(frame, needed, where)
        texts = frame[text_col].astype(object).where(frame[text_col].notna(), "").astype(str)
        out = pd.DataFrame({"text": texts.to_numpy()})
        out.attrs.update(frame.attrs)  # the file and its first line: rows named as lines
        if labelled:
            labels = frame[label_col]
            if labels.isna().any():
                missing = labels.isna().to_numpy()
                hint = line_break_hint(source, hp.encoding) if isinstance(source, str) else ""
                raise DataError(
                    f"{where}: {int(missing.sum())} rows have no label "
                    f"({rows_text(frame, missing)}); drop them or give them a class"
                    + (f"; {hint}" if hint else "")
                )
            out["label"] = labels.astype(str).str.strip().to_numpy()
            if hp.split_column is not None:
                split = frame[hp.split_column].astype(str).str.strip().str.lower()
                bad = sorted(set(split) - {"train", "val", "test"})
                if bad:
                    raise DataError(
                        f"{where}: column {hp.split_column!r} (datamodule.split_column) has "
                        f"values {bad[:5]}; use train, val and test"
                    )
                out["split"] = split.to_numpy()
        return self._clean(out, where)

    def _clean(self, frame: pd.DataFrame, where: str) -> pd.DataFrame:
        hp = self.hparams
        broken = frame.text.str.contains(REPLACEMENT, regex=False)
        if broken.any():
            self.data_warnings.append(
                f"{where}: {int(broken.sum())} texts had bytes that are not valid {hp.encoding}; "
                "they were replaced by U+FFFD"
            )
        long = frame.text.str.len() > hp.max_chars
        if long.any():
            frame = frame.assign(text=frame.text.str.slice(0, hp.max_chars))
            self.data_warnings.append(
                f"{where}: {int(long.sum())} texts were cut at max_chars={hp.max_chars} characters"
            )
        empty = frame.text.str.strip() == ""
        if empty.any():
            rows = np.flatnonzero(empty.to_numpy())
            if hp.empty == "error":
                raise DataError(
                    f"{where}: {len(rows)} texts are empty ({rows_text(frame, empty.to_numpy())}"
                    "); remove them or set datamodule.empty=drop or keep"
                )
            if hp.empty == "drop":
                frame = frame[~empty].reset_index(drop=True)
                self.data_warnings.append(f"{where}: dropped {len(rows)} empty texts")
        if frame.empty:
            raise DataError(f"{where}: no texts left")
        return frame

    # -- tokenizing ------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            if not self.fitted_state:
                raise DataError(f"{type(self).__name__}: call setup('fit') first")
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(self.fitted_state["tokenizer"])
        return self._tokenizer

    def _fit(self, train: pd.DataFrame) -> tuple[Tensor, Tensor]:
        """Fit the tokenizer, ``max_length`` and the IDF weights on the training texts;
        returns their ids and lengths (:meth:`encode`'s), tokenised once for all three."""
        hp = self.hparams
        tokenizer, trainer = build_tokenizer(hp.tokenizer, hp.vocab_size, hp.lowercase)
        texts = train.text.tolist()
        tokenizer.train_from_iterator(texts, trainer=trainer)
        if tokenizer.token_to_id(PAD) != 0 or tokenizer.token_to_id(UNK) != 1:
            raise RuntimeError("tokenizers did not put [PAD], [UNK] first")
        dtype = id_dtype(tokenizer.get_vocab_size())
        runs = list(token_runs(tokenizer, texts, dtype))  # 1-4 bytes a token, not ~150
        # each text's own length, 0 for an empty one (kept as one unknown token)
        lengths = np.concatenate([run[1] - run[2] for run in runs])
        max_length = hp.max_length or max(
            1, int(math.ceil(np.percentile(lengths, hp.length_percentile)))
        )
        classes = sorted(train.label.unique().tolist())
        self._tokenizer = tokenizer
        self.fitted_state = {"tokenizer": tokenizer.to_str(), "max_length": max_length}
        ids, kept = pad_runs(runs, len(texts), max_length, hp.truncate == "head", dtype)
        del runs
        df = _document_frequency(ids.numpy(), tokenizer.get_vocab_size())
        idf = np.log((1 + len(ids)) / (1 + df)) + 1  # smoothed, as scikit-learn's
        self.fitted_state.update(classes=classes, idf=idf.tolist())
        cut = float((lengths > max_length).mean())
        origin = "set" if hp.max_length else f"{hp.length_percentile:g}th percentile of training"
        self.data_warnings.append(
            f"max_length={max_length} tokens ({origin}); {cut:.1%} of training texts are "
            f"longer and keep their {hp.truncate}"
        )
        return ids, kept

    def encode(self, texts: list[str], dtype: torch.dtype = torch.long) -> tuple[Tensor, Tensor]:
        """Token ids ``(N, max_length)`` padded with 0 and cut at the ``truncate`` end, and
        the lengths ``(N,)``; the ids as ``dtype`` (:meth:`id_dtype` holds them in 2 bytes a
        token up to 32,767 tokens). Encoded a :func:`text_chunks` chunk at a time."""
        numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        runs = token_runs(self.tokenizer, texts, numpy_dtype)
        head = self.hparams.truncate == "head"
        return pad_runs(runs, len(texts), self.fitted_state["max_length"], head, numpy_dtype)

    def id_dtype(self) -> torch.dtype:
        """The smallest integer type that holds every token id: the splits are stored in
        it (a quarter of int64's memory) and batches widened to int64 one at a time."""
        return torch.from_numpy(np.empty(0, id_dtype(self.tokenizer.get_vocab_size()))).dtype

    @property
    def idf(self) -> Tensor:
        return torch.tensor(self.fitted_state["idf"], dtype=torch.float)

    @property
    def class_names(self) -> list[str]:
        return list(self.fitted_state.get("classes", []))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._tokenizer = None

    # -- setup -----------------------------------------------------------------------------
    def _sources(self) -> dict[str, pd.DataFrame]:
        hp = self.hparams
        if self._overrides("load_frame"):
            frame = self._table(self.load_frame(), f"{type(self).__name__}.load_frame()")
        elif hp.split_column is not None:
            frame = self._table(hp.path, "datamodule.path")
        else:
            frame = None
        if frame is not None:
            if hp.split_column is None:
                return {"all": frame}
            parts = {name: part.drop(columns="split") for name, part in frame.groupby("split")}
            if "train" not in parts:
                raise DataError(f"no row has {hp.split_column}=train")
            return {"all": parts["train"], **{k: v for k, v in parts.items() if k != "train"}}
        root = Path(hp.path).expanduser()
        if root.is_dir() and (root / "train").is_dir() and (root / "test").is_dir():
            return {
                "all": self._table(str(root / "train"), "datamodule.path (train/)"),
                "test": self._table(str(root / "test"), "datamodule.path (test/)"),
            }
        out = {"all": self._table(hp.path, "datamodule.path")}
        if hp.test_path is not None:
            out["test"] = self._table(hp.test_path, "datamodule.test_path")
        return out

    def _tensors(
        self, frame: pd.DataFrame, encoded: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, ...]:
        """Ids, lengths and labels of ``frame`` (``encoded``: its ids and lengths, when
        they are at hand)."""
        index = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted(set(frame.label) - set(index))
        if unknown:
            raise DataError(
                f"labels {unknown[:5]} do not occur in the training split (classes: "
                f"{self.class_names}); they cannot be learnt"
            )
        ids, lengths = encoded or self.encode(frame.text.tolist(), self.id_dtype())
        y = torch.tensor([index[label] for label in frame.label], dtype=torch.long)
        return ids, lengths, y

    def cv_rows(self, groups: str | None = None) -> CVRows:
        """The training rows after cleaning (empty texts dropped with ``empty=drop``);
        ``test_path``, a test folder and fixed ``val``/``test`` rows of ``split_column``
        take no part. Texts have no columns to group by."""
        frame = self._sources()["all"]
        return self._cv_labels(frame.label.to_numpy(), len(frame), groups)

    def setup_fit(self) -> None:
        hp = self.hparams
        sources = self._sources()
        frame = sources["all"]
        if self.fold is not None:  # a fold splits the training rows, whatever else is given
            sources = {"all": frame}
        train_idx, val_idx, test_idx = self.split_rows(
            len(frame),
            0.0 if "val" in sources else hp.val_fraction,
            0.0 if "test" in sources else hp.test_fraction,
            hp.seed,
            stratify=frame.label.to_numpy(),
        )
        parts = {"train": frame.iloc[train_idx]}
        parts["val"] = sources["val"] if "val" in sources else frame.iloc[val_idx]
        parts["test"] = sources["test"] if "test" in sources else frame.iloc[test_idx]
        counts = parts["train"].label.value_counts()
        if len(counts) < 2:
            raise DataError(f"the training split has one class only ({counts.index.tolist()})")
        encoded = {"train": self._fit(parts["train"])} if not self.fitted_state else {}
        for split, part in parts.items():
            part = part.reset_index(drop=True)
            self.texts[split] = part.text.tolist()
            if len(part):
                setattr(self, f"{split}_data", self._tensors(part, encoded.get(split)))
        train_y = self.train_data[-1]
        self.class_counts = torch.bincount(train_y, minlength=len(self.class_names)).tolist()

    def setup_predict(self) -> None:
        hp = self.hparams
        self.check_predict_ready()
        source = Path(hp.predict_path).expanduser()
        if source.is_dir():
            files = sorted(source.glob("*.txt"))
            if not files:
                raise DataError(f"datamodule.predict_path: no .txt files in {str(source)!r}")
            frame = pd.DataFrame(
                {"text": [f.read_bytes().decode(hp.encoding, errors="replace") for f in files]}
            )
            self.predict_files = [str(f) for f in files]
        else:
            frame = read_texts(source, "datamodule.predict_path", hp.encoding)
            require_columns(frame, [(hp.text_column, "text_column")], "datamodule.predict_path")
            frame = pd.DataFrame({"text": frame[hp.text_column].fillna("").astype(str)})
            self.predict_files = None
        self.texts["predict"] = frame.text.tolist()  # every row kept, empty ones too
        ids, lengths = self.encode(self.texts["predict"])
        self.predict_data = (ids, lengths)

    def data_facts(self) -> dict[str, Any]:
        if not self.fitted_state:
            raise DataError(f"{type(self).__name__}: call setup('fit') first")
        return {
            "num_tokens": self.tokenizer.get_vocab_size(),
            "num_classes": len(self.class_names),
            "class_counts": self.class_counts,
        }

    # -- loaders ---------------------------------------------------------------------------
    @staticmethod
    def _trim(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Cut the padding columns that no row of the batch uses."""
        ids, lengths, *rest = batch
        return (ids[:, : int(lengths.max())].long(), lengths, *rest)

    def collate(self, stage: str) -> Callable[[tuple[Tensor, ...]], Any] | None:
        return self._trim

    # -- bundles ---------------------------------------------------------------------------
    input_kind = "text"
    variable_length_inputs = (0,)  # token ids, as long as the longest row

    def input_signature(self) -> dict[str, Any]:
        return {
            "kind": self.input_kind,
            "accepts": "strings (one document each)",
            "max_length": self.fitted_state.get("max_length"),
            "classes": list(self.class_names),
        }

    def example_inputs(self, n: int) -> list[Any]:
        texts = self.texts.get("test") or self.texts.get("val") or []
        return [str(t) for t in texts[:n]]

    def predict_inputs(self, inputs: Any) -> None:
        """Texts: a string or a list of strings (one document each)."""
        if not self.fitted_state:
            raise DataError("restore the datamodule from a checkpoint or a bundle first")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, (list, tuple)) or not texts:
            raise DataError("expected a non-empty list of texts (strings)")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"input {bad} is a {type(texts[bad]).__name__}, expected a string")
        self.texts["predict"] = list(texts)
        self.predict_files = None
        self.predict_data = self.encode(self.texts["predict"])

    def predictions_frame(self, outputs: dict[str, Tensor]) -> pd.DataFrame:
        frame = class_predictions(outputs, self.class_names, self.class_names)
        if getattr(self, "predict_files", None):
            frame.insert(0, "file", self.predict_files)
        frame.insert(0, "text", self.texts["predict"])
        return frame


class IMDBDataModule(TextDataModule):
    """The Large Movie Review Dataset (Maas et al., ACL 2011): 25,000 training and 25,000
    test reviews from IMDB, labelled ``neg``/``pos``, balanced.

    Reads ``aclImdb_v1.tar.gz`` (84 MB) from ``<data_dir>/imdb``, downloading it there
    (MD5 checked) when it is missing and ``download`` is true; offline, the error says
    where to put the file. Reviews are read straight from the archive (no extraction);
    the official train/test split is kept and ``val_fraction`` of the training reviews
    validate.
    """

    ARCHIVE = "aclImdb_v1.tar.gz"
    MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
    MIRRORS = ("https://ai.stanford.edu/~amaas/data/sentiment",)

    def __init__(self, download: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("split_column", "split")
        super().__init__(**kwargs)

    def load_frame(self) -> pd.DataFrame:
        import tarfile

        from datamodules._download import fetch, md5sum

        hp = self.hparams
        archive = fetch(
            self.ARCHIVE,
            Path(hp.data_dir) / "imdb",
            self.MIRRORS,
            self.MD5,
            download=hp.download,
            what="IMDB movie reviews",
        )
        if md5sum(archive) != self.MD5:
            raise DataError(f"{archive}: MD5 differs from the official archive; delete it")
        rows = []
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                review = (
                    member.isfile()
                    and len(parts) == 4
                    and parts[1] in ("train", "test")
                    and parts[2] in ("neg", "pos")
                    and parts[3].endswith(".txt")
                )
                if review:
                    data = tar.extractfile(member).read()
                    text = data.decode(hp.encoding, errors="replace").replace("<br />", " ")
                    rows.append({"text": text, "label": parts[2], "split": parts[1]})
        if not rows:
            raise DataError(f"{archive}: no reviews inside (aclImdb/<split>/<neg|pos>/*.txt)")
        return pd.DataFrame(rows)
