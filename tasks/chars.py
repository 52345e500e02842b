"""The character language model: next-character prediction, sampling and the novelty of
its samples (``char_language_model``)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from tasks._contract import datamodule_value
from tasks._files import write_text_atomic
from tasks.base import BaseTask
from tasks.errors import ConfigError, DataError
from tasks.nets.text import build_char_net

#: Line between running-text samples in ``samples.txt``.
SAMPLE_SEPARATOR = "-" * 40
#: Samples drawn after testing to measure the share of novel items.
NOVELTY_SAMPLES = 500


class CharLanguageModel(BaseTask):
    """Next-character prediction and sampling.

    Ids: 0 pads inputs (never a target, never sampled), 1 is the boundary (``\\n``: the
    start and end of an item, or a newline of running text), 2 stands for characters the
    training split never had, then the training characters. The vocabulary is a
    hyperparameter, so a checkpoint alone can generate.

    Metrics: ``loss`` (cross-entropy per character, nats), ``perplexity`` (its exponent,
    over the epoch) and ``acc`` (next-character accuracy). The datamodule's unigram and
    bigram models of the training split are reported beside them on the validation and
    test splits (``baseline/val_bigram_loss``, ``baseline/bigram_loss``, ...). After
    testing, ``samples`` samples go to ``samples.txt`` and, for items, ``test/novel_share``
    is the share of 500 samples that are not training items.

    Args:
        vocab: The characters by id (set from the datamodule).
        block_size: Longest context (set from the datamodule).
        item_list: Whether the data is a list of items such as names (set from the
            datamodule): then generation starts at a boundary and stops at the next one.
        network: ``lstm`` (the reference) or ``transformer`` (small causal Transformer).
        embedding_dim: Character embedding width.
        hidden_size: LSTM units, or the Transformer's feed-forward width (default 4x).
        num_layers: LSTM or Transformer layers.
        num_heads: Attention heads (``transformer``).
        dropout: Dropout.
        samples: Samples written to ``samples.txt`` after testing.
        temperature: Temperature of those samples.
        progress_samples: Characters of one sample printed after every validation (running
            text; items print a few samples), so a long training shows what it has learnt;
            0 prints none.
        **kwargs: Optimiser and scheduler settings of :class:`~tasks.base.BaseTask`.
    """

    #: The unigram/bigram baselines of each split and the training items (novelty of
    #: the samples), each used when the datamodule has it.
    datamodule_optional = ("baselines", "training_items")

    main_metric = "loss"
    PAD, BOUNDARY, UNKNOWN = 0, 1, 2

    def __init__(
        self,
        vocab: str = "\0\n\ufffdab",
        block_size: int = 32,
        item_list: bool = True,
        network: str = "lstm",
        embedding_dim: int = 32,
        hidden_size: int = 128,
        num_layers: int = 1,
        num_heads: int = 4,
        dropout: float = 0.0,
        samples: int = 20,
        temperature: float = 1.0,
        progress_samples: int = 0,
        **kwargs: Any,
    ) -> None:
        if len(vocab) < 4:
            raise ConfigError(f"the vocabulary needs at least one character, got {vocab!r}")
        super().__init__(**kwargs)
        self.test_nll = MeanMetric()  # per-character test loss, for the test perplexity
        self.example_input_array = torch.ones(2, min(block_size, 8), dtype=torch.long)
        self.samples_out: list[str] = []
        self.notes: list[str] = []

    def configure_model(self) -> nn.Module:
        hp = self.hparams
        options: dict[str, Any] = {
            "embedding_dim": hp.embedding_dim,
            "num_layers": hp.num_layers,
            "dropout": hp.dropout,
        }
        if hp.network == "transformer":
            options["num_heads"] = hp.num_heads
            options["hidden_size"] = hp.hidden_size if hp.hidden_size else None
        else:
            options["hidden_size"] = hp.hidden_size
        return build_char_net(hp.network, len(hp.vocab), hp.block_size, **options)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> Any:
        """Logits ``(N, T, vocab)``; with ``targets`` (``-100`` where there is none), also
        the mean cross-entropy: ``(logits, loss)``."""
        logits = self.model(idx)
        if targets is None:
            return logits
        loss = nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100
        )
        return logits, loss

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection(
            {"acc": MulticlassAccuracy(len(self.hparams.vocab), average="micro", ignore_index=-100)}
        )

    def step_outputs(self, batch: Any) -> tuple[Tensor, Tensor, Tensor, int]:
        """Logits and targets of every position, the mean loss per character, and the
        number of characters it is a mean over."""
        x, y = batch
        logits, loss = self(x, y)
        return logits.flatten(0, 1), y.flatten(), loss, int((y != -100).sum())

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = super().test_step(batch, batch_idx)
        self.test_nll.update(loss.detach(), int((batch[1] != -100).sum()))
        return loss

    def log_epoch_extras(self, stage: str, mean_loss: Tensor | None) -> None:
        """Validation perplexity (exp of the mean loss per character) and the unigram and
        bigram baselines of the validation split.

        Args:
            stage: ``train`` or ``val``; only ``val`` logs anything.
            mean_loss: The validation epoch's mean loss per character.

        Called by:
            ``BaseTask`` at the end of every training and validation epoch.
        """
        if stage == "val":
            if mean_loss is not None:
                self.log("val/perplexity", torch.exp(mean_loss))
            self._log_baselines("val")
            self._show_progress(mean_loss)

    def _show_progress(self, mean_loss: Tensor | None) -> None:
        """A sample of what the model writes now (``progress_samples``), after a validation
        of a fit (not in the sanity check)."""
        hp, trainer = self.hparams, self._trainer
        if not hp.progress_samples or trainer is None or trainer.sanity_checking:
            return
        if not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        step = trainer.global_step  # generate() draws from its own seeded generator
        if hp.item_list:
            text = ", ".join(self.generate(5, temperature=hp.temperature, seed=step))
        else:
            (text,) = self.generate(
                1, temperature=hp.temperature, max_new_tokens=hp.progress_samples, seed=step
            )
        loss = f" (val loss {float(mean_loss):.3f})" if mean_loss is not None else ""
        self.print(f"sample at step {step}{loss}: {text!r}")

    def _log_baselines(self, stage: str) -> None:
        """The datamodule's unigram/bigram scores of this split (validation ones prefixed)."""
        datamodule = self.trainer.datamodule
        report = datamodule_value(self, datamodule, "baselines", {}).get(stage)
        for name, value in (report or {}).items():
            self.log(f"baseline/{'val_' if stage == 'val' else ''}{name}", float(value))

    def on_test_epoch_end(self) -> None:
        self.log("test/perplexity", torch.exp(self.test_nll.compute()))
        self.test_nll.reset()
        self._log_baselines("test")
        hp = self.hparams
        self.samples_out = self.generate(hp.samples, temperature=hp.temperature, seed=0)
        datamodule = self.trainer.datamodule
        training = datamodule_value(self, datamodule, "training_items")
        shown = ", ".join(repr(s) for s in self.samples_out[:8])
        self.notes = [f"samples at temperature {hp.temperature:g}: {shown}"]
        if hp.item_list and training is not None:  # measured on a larger draw than is shown
            draw = self.generate(NOVELTY_SAMPLES, temperature=hp.temperature, seed=1)
            novel = novel_share(draw, training)
            self.log("test/novel_share", novel)
            self.notes.append(
                f"{novel:.0%} of {NOVELTY_SAMPLES} samples at temperature {hp.temperature:g} "
                "are not training items"
            )

    def summary_notes(self) -> list[str]:
        return list(self.notes)

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        if not self.samples_out:
            return []
        path = output_dir / "samples.txt"
        write_text_atomic(path, self.format_samples(self.samples_out))
        return [path]

    def format_samples(self, samples: Sequence[str]) -> str:
        """``samples.txt``: items one per line; running text (which has newlines of its
        own) with a line of dashes between samples."""
        separator = "\n" if self.hparams.item_list else f"\n{SAMPLE_SEPARATOR}\n"
        return separator.join(samples) + "\n"

    # -- sampling --------------------------------------------------------------------------
    def generate_report(self, datamodule: Any, seed: int = 0, **options: Any) -> dict[str, Any]:
        """``mode=generate``: samples (:meth:`generate` with ``options``) and, for items,
        the share that are not training items (the datamodule is set up to know them)."""
        samples = self.generate(seed=seed, **options)
        report: dict[str, Any] = {"samples": samples}
        if self.hparams.item_list and hasattr(datamodule, "training_items"):
            datamodule.setup("fit")
            items = datamodule_value(self, datamodule, "training_items")
            report["novel_share"] = novel_share(samples, items)
        return report

    #: What a bundle's ``predict`` takes per input beside a bare prefix string.
    GENERATE_OPTIONS = ("prefix", "num_samples", "temperature", "top_k", "max_new_tokens", "seed")

    def bundle_predict(self, inputs: Any, model: Any = None) -> pd.DataFrame:
        """A bundle's predictions: samples for each input (a prefix string, or a record of
        :attr:`GENERATE_OPTIONS`; one sample at temperature 1, seed 0 by default), one row
        per sample: ``input``, ``prefix``, ``sample``.

        Args:
            inputs: A prefix, a record, or a list of them.
            model: The next-character logits to sample from instead of the network (the
                bundle's ONNX graph, called like the predict step); None: the network.
        """
        items = [inputs] if isinstance(inputs, (str, dict)) else inputs
        if not isinstance(items, (list, tuple)) or not items:
            raise DataError("expected a non-empty list of prefixes or records")
        rows = []
        for i, item in enumerate(items):
            options = {"prefix": item} if isinstance(item, str) else item
            if not isinstance(options, dict):
                raise DataError(f"input {i} is a {type(item).__name__}: expected a prefix string")
            unknown = sorted(set(options) - set(self.GENERATE_OPTIONS))
            if unknown:
                raise DataError(
                    f"input {i}: unknown field(s) {unknown}; expected {list(self.GENERATE_OPTIONS)}"
                )
            options = {"num_samples": 1, **options}
            with _sampling_from(self, model):
                try:
                    samples = self.generate(**options)
                except (TypeError, ConfigError) as exc:
                    raise DataError(f"input {i}: {exc}") from None
            prefix = str(options.get("prefix", ""))
            rows += [{"input": i, "prefix": prefix, "sample": sample} for sample in samples]
        return pd.DataFrame(rows)

    def encode(self, text: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.hparams.vocab)}
        return [index.get(c, self.UNKNOWN) for c in text]

    @torch.no_grad()
    def generate(
        self,
        num_samples: int = 10,
        temperature: float = 1.0,
        top_k: int | None = None,
        prefix: str = "",
        max_new_tokens: int | None = None,
        seed: int = 0,
    ) -> list[str]:
        """Sample ``num_samples`` continuations of ``prefix``, seeded (the same call gives
        the same samples). Items stop at a boundary (the item itself is returned, prefix
        included); running text generates ``max_new_tokens`` characters."""
        hp = self.hparams
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        limit = max_new_tokens or (hp.block_size if hp.item_list else 200)
        start = ([self.BOUNDARY] if hp.item_list or not prefix else []) + self.encode(prefix)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        was_training = self.training
        self.eval()
        idx = torch.tensor([start] * num_samples, dtype=torch.long, device=self.device)
        done = torch.zeros(num_samples, dtype=torch.bool)
        for _ in range(limit):
            logits = self.model(idx[:, -hp.block_size :])[:, -1].float().cpu() / temperature
            logits[:, [self.PAD, self.UNKNOWN]] = -float("inf")
            if top_k is not None:
                cut = torch.topk(logits, min(top_k, logits.shape[1])).values[:, -1:]
                logits[logits < cut] = -float("inf")
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)
            if hp.item_list:
                nxt[done] = self.BOUNDARY
                done |= nxt == self.BOUNDARY
            idx = torch.cat([idx, nxt[:, None].to(idx.device)], dim=1)
            if hp.item_list and done.all():
                break
        self.train(was_training)
        vocab = hp.vocab
        out = []
        for row in idx[:, len(start) :].tolist():
            if hp.item_list:
                row = row[: row.index(self.BOUNDARY)] if self.BOUNDARY in row else row
            out.append(prefix + "".join(vocab[i] for i in row))
        return out


class _GraphLogits(nn.Module):
    """Next-character logits from a predict-step graph (``{"pred": logits}``)."""

    def __init__(self, graph: Any) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, idx: Tensor) -> Tensor:
        return self.graph(idx)["pred"]


@contextlib.contextmanager
def _sampling_from(task: CharLanguageModel, graph: Any) -> Any:
    """Sample from ``graph`` (e.g. an ONNX graph) instead of the task's network, if given."""
    if graph is None:
        yield
        return
    network = task.model
    task.model = _GraphLogits(graph)
    try:
        yield
    finally:
        task.model = network


def novel_share(samples: Sequence[str], training: Sequence[str] | set[str]) -> float:
    """Share of non-empty samples that are not training items."""
    known = set(training)
    kept = [s for s in samples if s]
    return sum(s not in known for s in kept) / len(kept) if kept else 0.0
