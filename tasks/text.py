"""Text classification (sentiment): token ids through a bag of words, an LSTM or a GRU,
optionally with pretrained word vectors. The character language model is in
:mod:`tasks.chars` (importable from here too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from tasks._classify import ClassificationOutputs, label_metrics
from tasks._contract import datamodule_value
from tasks._files import write_csv
from tasks.base import BaseTask
from tasks.batches import unshard
from tasks.errors import ConfigError, DataError
from tasks.nets.text import build_text_net


def load_word_vectors(
    path: str | Path, vocab: Mapping[str, int], dim: int
) -> tuple[Tensor, Tensor]:
    """Rows of a GloVe / word2vec text file (``word v1 ... vd``; a word2vec ``count dim``
    header line is skipped) for the words of ``vocab``: ``(len(vocab), dim)`` vectors and a
    mask of the words found. Nothing is downloaded."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"task.embeddings_path: no such file {str(file)!r}")
    size = max(vocab.values()) + 1
    vectors = torch.zeros(size, dim)
    found = torch.zeros(size, dtype=torch.bool)
    with file.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2:
                continue
            if len(parts) != dim + 1:
                raise DataError(
                    f"task.embeddings_path line {number}: {len(parts) - 1} values, but "
                    f"task.embedding_dim={dim}; set embedding_dim to the file's width"
                )
            index = vocab.get(parts[0])
            if index is not None:
                vectors[index] = torch.tensor([float(v) for v in parts[1:]])
                found[index] = True
    return vectors, found


#: ``network=auto``: training texts from which a sequence network replaces bag of words.
AUTO_THRESHOLD = 100_000
#: The networks ``network=auto`` may choose for large data.
SEQUENCE_NETWORKS = ("lstm", "gru")


def choose_text_network(
    train_texts: int,
    threshold: int = AUTO_THRESHOLD,
    sequence_network: str = "gru",
    embeddings: bool = False,
) -> str:
    """The network ``network=auto`` uses: ``bow`` (TF-IDF MLP) below ``threshold``
    training texts, ``sequence_network`` from there on or with pretrained word vectors
    (``embeddings``), which only an embedding network can use.

    Below about a hundred thousand training texts, bag-of-words models match or beat
    recurrent networks trained from scratch (measured in docs/text.md), at a fraction of
    the cost; above it a sequence network has the data to learn word order.

    Args:
        train_texts: Texts in the training split.
        threshold: Training texts from which ``sequence_network`` is chosen.
        sequence_network: ``lstm`` or ``gru``.
        embeddings: Whether pretrained word vectors are loaded.
    """
    if sequence_network not in SEQUENCE_NETWORKS:
        raise ConfigError(
            f"task.sequence_network={sequence_network!r}; expected one of {SEQUENCE_NETWORKS}"
        )
    if threshold < 0:
        raise ConfigError(f"task.auto_threshold must be >= 0, got {threshold}")
    return sequence_network if embeddings or train_texts >= threshold else "bow"


class TextClassification(ClassificationOutputs, BaseTask):
    """Binary or multiclass classification of texts from token ids.

    Networks (``network``): ``lstm`` (the reference Embedding(16) -> LSTM(32) -> dense),
    ``gru`` (bidirectional GRU over packed sequences), ``bow`` (TF-IDF bag of words ->
    MLP ``hidden_sizes``; ``[]`` is logistic regression) and ``auto``: ``bow`` below
    ``auto_threshold`` training texts (the sum of ``class_counts``), ``sequence_network``
    from there on or when ``embeddings_path`` is set (:func:`choose_text_network`; the
    hyperparameters keep the network chosen). Pretrained word vectors for the
    embedding networks come from a local GloVe/word2vec text file (``embeddings_path``),
    fine-tuned or frozen (``freeze_embeddings``); words it lacks start from a normal
    distribution with the spread of the vectors found (1 when fewer than two are).

    Test artefacts: confusion matrix and ``confident_mistakes.csv``, the ``examples`` test
    texts classified wrongly with the highest confidence.

    Args:
        num_tokens: Entries of the vocabulary (set from the datamodule).
        num_classes: Number of classes (set from the datamodule).
        class_counts: Training texts per class (set from the datamodule).
        network: ``lstm``, ``gru``, ``bow`` or ``auto``.
        auto_threshold: ``network=auto``: training texts from which ``sequence_network``
            is used instead of ``bow``.
        sequence_network: ``network=auto``: the network for large data, ``lstm`` or ``gru``.
        embedding_dim: Width of the token embeddings (``lstm``, ``gru``).
        hidden_size: Recurrent units (``lstm``, ``gru``).
        num_layers: Recurrent layers (``lstm``, ``gru``).
        hidden_sizes: Hidden widths of the ``bow`` MLP.
        dropout: Dropout before the classifier (and in the ``bow`` MLP).
        embeddings_path: Local word-vector text file for the embedding layer.
        freeze_embeddings: Keep the embedding layer fixed.
        examples: Confident mistakes written after testing.
        **kwargs: Optimiser and scheduler settings of :class:`~tasks.base.BaseTask`.
    """

    #: The TF-IDF weights (``bow``), the word tokenizer (``embeddings_path``) and the test
    #: texts (``confident_mistakes.csv``), each used when the datamodule has it.
    datamodule_optional = ("idf", "tokenizer", "texts")

    main_metric = "acc"

    def __init__(
        self,
        num_tokens: int = 10000,
        num_classes: int = 2,
        class_counts: Sequence[int] = (),
        network: str = "lstm",
        auto_threshold: int = AUTO_THRESHOLD,
        sequence_network: str = "gru",
        embedding_dim: int = 16,
        hidden_size: int = 32,
        num_layers: int = 1,
        hidden_sizes: Sequence[int] = (64,),
        dropout: float = 0.0,
        embeddings_path: str | None = None,
        freeze_embeddings: bool = False,
        examples: int = 20,
        **kwargs: Any,
    ) -> None:
        if num_classes < 2:
            raise ConfigError(f"classification needs at least 2 classes, got {num_classes}")
        note = ""
        if network == "auto":  # resolved before the hyperparameters are saved: they keep it
            network = choose_text_network(
                sum(class_counts),
                auto_threshold,
                sequence_network,
                bool(embeddings_path or freeze_embeddings),
            )
            n = sum(class_counts)
            why = (
                "pretrained word vectors need an embedding layer"
                if embeddings_path or freeze_embeddings
                else f"{n:,} training texts, {'below' if n < auto_threshold else 'at or above'} "
                f"task.auto_threshold={auto_threshold:,}"
            )
            note = f"network=auto chose {network}: {why}"
        if network == "bow" and (embeddings_path or freeze_embeddings):
            raise ConfigError("network=bow has no embedding layer for task.embeddings_path")
        super().__init__(**kwargs)
        self.network_note = note
        self.init_confusion()
        if freeze_embeddings:
            self.model.embedding.weight.requires_grad_(False)
        self.example_input_array = (torch.ones(2, 5, dtype=torch.long), torch.tensor([5, 3]))
        self._test_rows: list[tuple[Tensor, Tensor]] = []
        self.mistakes: dict[str, Tensor] = {}

    def summary_notes(self) -> list[str]:
        """Which network ``network=auto`` chose, and why."""
        return [self.network_note] if self.network_note else []

    def configure_model(self) -> nn.Module:
        hp = self.hparams
        if hp.network == "bow":
            options: dict[str, Any] = {"hidden_sizes": hp.hidden_sizes, "dropout": hp.dropout}
        else:
            options = {
                "embedding_dim": hp.embedding_dim,
                "hidden_size": hp.hidden_size,
                "num_layers": hp.num_layers,
                "dropout": hp.dropout,
            }
        return build_text_net(hp.network, hp.num_tokens, hp.num_classes, **options)

    def configure_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def configure_metrics(self) -> MetricCollection:
        return label_metrics(self.hparams.num_classes)

    def on_fit_start(self) -> None:
        """Fill what the training split determines and checkpoints then keep: the IDF
        weights of ``bow`` and pretrained word vectors (only when training starts)."""
        datamodule = self.trainer.datamodule
        if datamodule is None or self.trainer.global_step > 0:
            return
        idf = datamodule_value(self, datamodule, "idf")
        if self.hparams.network == "bow" and idf is not None:
            self.model.idf.copy_(idf.to(self.model.idf.device))
        if self.hparams.embeddings_path:
            tokenizer = datamodule_value(self, datamodule, "tokenizer")
            if tokenizer is None:
                raise ConfigError(
                    f"task.embeddings_path needs the vocabulary of a word tokenizer, and "
                    f"{type(datamodule).__name__} has no tokenizer; drop task.embeddings_path"
                )
            vectors, found = load_word_vectors(
                self.hparams.embeddings_path,
                tokenizer.get_vocab(),
                self.hparams.embedding_dim,
            )
            weight = self.model.embedding.weight
            with torch.no_grad():
                weight[found] = vectors[found].to(weight.device, weight.dtype)
                # words the file lacks start at the scale of the words it has (the network's
                # own start, +-0.05, would be noise beside them, and nothing if frozen)
                spread = float(vectors[found].std()) if int(found.sum()) > 1 else 0.0
                lacking = ~found
                lacking[0] = False  # padding stays 0
                weight[lacking] = torch.randn_like(weight[lacking]) * (spread or 1.0)
            self.print(
                f"word vectors: {int(found.sum())} of {len(found)} vocabulary entries found in "
                f"{self.hparams.embeddings_path}"
            )

    # -- test outputs in input order, for the confident mistakes -----------------------------
    def record_test_outputs(self, output: Tensor, target: Tensor) -> None:
        """The confusion matrix, and the softmax probabilities of the raw logits with the
        labels, for ``confident_mistakes.csv``."""
        super().record_test_outputs(output, target)
        self._test_rows.append((target, output.float().softmax(dim=-1)))

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._test_rows = []

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if not self._test_rows:
            return
        y = torch.cat([t for t, _ in self._test_rows])
        prob = torch.cat([p for _, p in self._test_rows])
        datamodule = self.trainer.datamodule
        texts = datamodule_value(self, datamodule, "texts", {}).get("test")
        n = len(texts) if texts is not None else len(y)
        if self.trainer.world_size > 1:  # every rank's share, back in test-set order
            y, prob = (unshard(self.all_gather(t)) for t in (y, prob))
        y, prob = y[:n], prob[:n]
        confidence, pred = prob.max(dim=-1)
        wrong = torch.nonzero(pred != y).flatten()
        order = wrong[torch.argsort(confidence[wrong], descending=True)][: self.hparams.examples]
        self.mistakes = {
            "row": order.cpu(),
            "label": y[order].cpu(),
            "pred": pred[order].cpu(),
            "confidence": confidence[order].cpu(),
        }

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        paths = super().save_artifacts(output_dir, datamodule)
        texts = datamodule_value(self, datamodule, "texts", {}).get("test")
        if not self.mistakes or texts is None:
            return paths

        names = self.class_names(datamodule)
        m = self.mistakes
        frame = pd.DataFrame(
            {
                "text": [texts[int(r)] for r in m["row"]],
                "label": [names[int(i)] for i in m["label"]],
                "predicted": [names[int(i)] for i in m["pred"]],
                "confidence": m["confidence"].numpy().round(4),
            }
        )
        path = output_dir / "confident_mistakes.csv"
        write_csv(frame, path, index=False)
        return [*paths, path]


# the character model's old import path (tasks.text:CharLanguageModel)
from tasks.chars import (  # noqa: E402
    NOVELTY_SAMPLES,
    SAMPLE_SEPARATOR,
    CharLanguageModel,
    novel_share,
)

__all__ = [
    "AUTO_THRESHOLD",
    "NOVELTY_SAMPLES",
    "SAMPLE_SEPARATOR",
    "CharLanguageModel",
    "TextClassification",
    "choose_text_network",
    "load_word_vectors",
    "novel_share",
]
