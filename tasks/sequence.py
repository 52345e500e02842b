"""Sequence classification: label fixed-length (multi-channel) sequences, e.g. curves with
or without an anomaly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from tasks._classify import ClassificationOutputs, label_metrics
from tasks._files import save_figure
from tasks._plots import _pyplot
from tasks.base import BaseTask
from tasks.errors import ConfigError
from tasks.nets.sequence import build_sequence_net

AUGMENT_KEYS = ("reverse", "negate", "noise")


def augment_sequences(x: Tensor, reverse: bool, negate: bool, noise: float) -> Tensor:
    """Per sequence of ``(N, channels, steps)``: time-reversed and/or negated with chance
    1/2 each, plus Gaussian noise of standard deviation ``noise``."""
    n = len(x)
    if reverse:
        flip = torch.rand(n, device=x.device) < 0.5
        x = torch.where(flip[:, None, None], x.flip(-1), x)
    if negate:
        sign = torch.where(torch.rand(n, device=x.device) < 0.5, -1.0, 1.0).to(x.dtype)
        x = x * sign[:, None, None]
    if noise:
        x = x + noise * torch.randn_like(x)
    return x


class SequenceClassification(ClassificationOutputs, BaseTask):
    """Classify sequences ``(N, channels, steps)`` with a named network.

    Networks (``network``): ``mlp`` (raw values), ``features_mlp`` (std and std of the
    first difference per channel), ``conv1d`` (the reference Conv1D stack), ``resnet1d``
    (residual 1D CNN with global pooling, the default) and ``gru``.

    Args:
        num_classes: Number of classes (set from the datamodule).
        in_channels: Values per step (set from the datamodule).
        seq_len: Steps per sequence (set from the datamodule).
        class_counts: Training sequences per class (set from the datamodule).
        network: Network name.
        network_options: Extra network arguments, e.g. ``{hidden_sizes: [64]}``.
        dropout: Dropout before the classifier.
        examples: Sequences per predicted class drawn in ``example_sequences.png``.
        augment: Training-time changes that keep the label, per sequence and each with
            chance 1/2: ``reverse`` (time reversal), ``negate`` (sign flip); and ``noise``
            (Gaussian noise of that standard deviation, always). Only where the label does
            not depend on direction or sign (true of the anomaly curves).
        **kwargs: Optimiser and scheduler settings of :class:`~tasks.base.BaseTask`.
    """

    main_metric = "acc"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        seq_len: int = 200,
        class_counts: Sequence[int] = (),
        network: str = "resnet1d",
        network_options: Mapping[str, Any] | None = None,
        dropout: float = 0.0,
        examples: int = 6,
        augment: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(augment or {}) - set(AUGMENT_KEYS))
        if unknown:
            raise ConfigError(f"task.augment has unknown keys {unknown}; expected {AUGMENT_KEYS}")
        if num_classes < 2:
            raise ConfigError(f"classification needs at least 2 classes, got {num_classes}")
        super().__init__(**kwargs)
        self.init_confusion()
        self.example_input_array = torch.zeros(2, in_channels, seq_len)
        self._examples: list[tuple[Tensor, Tensor, Tensor]] = []

    def configure_model(self) -> nn.Module:
        hp = self.hparams
        return build_sequence_net(
            hp.network,
            hp.in_channels,
            hp.num_classes,
            hp.seq_len,
            dict(hp.network_options or {}),
            hp.dropout,
        )

    def configure_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def augment_batch(self, batch: Any) -> Any:
        """Time reversal, sign flips and noise per sequence (:func:`augment_sequences`) of
        the values as the datamodule normalised them; labels unchanged."""
        augment = self.hparams.augment
        x, *rest = batch
        x = augment_sequences(
            x,
            bool(augment.get("reverse")),
            bool(augment.get("negate")),
            float(augment.get("noise") or 0.0),
        )
        return (x, *rest)

    def configure_metrics(self) -> MetricCollection:
        return label_metrics(self.hparams.num_classes)

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._examples = []

    def record_test_outputs(self, output: Tensor, target: Tensor) -> None:
        """The confusion matrix, and up to 2,000 test sequences (as the datamodule normalised
        them) with their labels and predicted classes, for ``example_sequences.png``."""
        super().record_test_outputs(output, target)
        if self.test_inputs is not None and sum(len(t) for _, t, _ in self._examples) < 2000:
            pred = output.argmax(dim=-1)
            self._examples.append((self.test_inputs.cpu(), target.cpu(), pred.cpu()))

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        paths = super().save_artifacts(output_dir, datamodule)
        if self._examples:
            x, y, p = (torch.cat(part) for part in zip(*self._examples))
            paths.append(
                save_example_sequences(
                    x, y, p, self.class_names(datamodule), output_dir, self.hparams.examples
                )
            )
        return paths


# -- plots -------------------------------------------------------------------------------
def save_example_sequences(
    x: Any, true: Any, pred: Any, names: list[str], output_dir: Path, per_class: int = 6
) -> Path:
    """Test sequences by predicted class: correct ones in blue, misclassified in red
    (labelled with their true class); the first channel is drawn."""
    plt = _pyplot()
    k = len(names)
    fig, axes = plt.subplots(k, 1, figsize=(10, 2.6 * k), squeeze=False)
    for c, ax in enumerate(axes[:, 0]):
        chosen = (pred == c).nonzero().flatten()
        wrong = chosen[true[chosen] != c][: max(1, per_class // 2)]
        right = chosen[true[chosen] == c][: per_class - len(wrong)]
        for i in right.tolist():
            ax.plot(x[i, 0].numpy(), color="tab:blue", alpha=0.6, linewidth=1)
        for i in wrong.tolist():
            ax.plot(
                x[i, 0].numpy(), color="tab:red", linewidth=1.4, label=f"true {names[int(true[i])]}"
            )
        total, errors = len(chosen), int((true[chosen] != c).sum())
        ax.set_title(f"predicted {names[c]}: {total} test sequences, {errors} misclassified (red)")
        if len(wrong):
            ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    path = output_dir / "example_sequences.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
