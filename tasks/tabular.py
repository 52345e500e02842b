"""Tabular problems: classification of rows of a table with an MLP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection, classification

from tasks._plots import save_confusion_matrix
from tasks.base import BaseTask
from tasks.errors import ConfigError
from tasks.nets import MLP


class TabularClassification(BaseTask):
    """Binary or multiclass classification of table rows.

    Args:
        num_features: Input width (set from the datamodule).
        num_classes: Number of classes (set from the datamodule); 2 is binary.
        hidden_sizes: Hidden layer widths of the MLP; ``[]`` gives logistic regression.
        activation: Hidden activation name.
        dropout: Dropout after each hidden layer.
        batch_norm: Batch-normalise hidden layers.
        l1: L1 weight penalty added to the training loss.
        l2: L2 weight penalty added to the training loss (Keras ``kernel_regularizer`` style:
            ``l2 * sum(w**2)``, not weight decay).
        penalty_layers: ``all`` dense layers, or only the ``first`` (as the reference spam net).
        **kwargs: Optimiser and scheduler settings of :class:`~tasks.base.BaseTask`.
    """

    main_metric = "acc"

    def __init__(
        self,
        num_features: int = 4,
        num_classes: int = 2,
        hidden_sizes: Sequence[int] = (64,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        l1: float = 0.0,
        l2: float = 0.0,
        penalty_layers: str = "all",
        **kwargs: Any,
    ) -> None:
        if num_classes < 2:
            raise ConfigError(
                f"classification needs at least 2 classes, got num_classes={num_classes}"
            )
        if penalty_layers not in ("all", "first"):
            raise ConfigError(
                f"task.penalty_layers must be 'all' or 'first', got {penalty_layers!r}"
            )
        if l1 < 0 or l2 < 0:
            raise ConfigError(f"weight penalties must be >= 0, got l1={l1}, l2={l2}")
        super().__init__(**kwargs)
        self.test_confusion = classification.MulticlassConfusionMatrix(num_classes)
        self.example_input_array = torch.zeros(2, num_features)

    def configure_model(self) -> nn.Module:
        hp = self.hparams
        return MLP(
            hp.num_features,
            hp.num_classes,
            hp.hidden_sizes,
            hp.activation,
            hp.dropout,
            hp.batch_norm,
        )

    def configure_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def configure_metrics(self) -> MetricCollection:
        n = self.hparams.num_classes
        if n == 2:
            return MetricCollection(
                {
                    "acc": classification.BinaryAccuracy(),
                    "precision": classification.BinaryPrecision(),
                    "recall": classification.BinaryRecall(),
                    "f1": classification.BinaryF1Score(),
                    "auroc": classification.BinaryAUROC(),
                }
            )
        return MetricCollection(
            {
                "acc": classification.MulticlassAccuracy(n, average="micro"),
                "precision": classification.MulticlassPrecision(n, average="macro"),
                "recall": classification.MulticlassRecall(n, average="macro"),
                "f1": classification.MulticlassF1Score(n, average="macro"),
                "auroc": classification.MulticlassAUROC(n),
            }
        )

    def metric_inputs(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        prob = output.softmax(dim=-1)
        return (prob[:, 1] if self.hparams.num_classes == 2 else prob), target

    def predict_outputs(self, output: Tensor) -> dict[str, Tensor]:
        prob = output.softmax(dim=-1)
        return {"pred": prob.argmax(dim=-1), "prob": prob}

    def record_test_outputs(self, output: Tensor, target: Tensor) -> None:
        self.test_confusion.update(output.argmax(dim=-1), target)

    def penalty(self) -> Tensor | float:
        hp = self.hparams
        if not (hp.l1 or hp.l2):
            return 0.0
        linears = self.model.linears
        weights = [m.weight for m in (linears[:1] if hp.penalty_layers == "first" else linears)]
        total = sum(hp.l1 * w.abs().sum() + hp.l2 * w.pow(2).sum() for w in weights)
        return total

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        matrix = self.test_confusion.compute().cpu()
        names = getattr(datamodule, "class_names", None) or [str(i) for i in range(len(matrix))]
        return save_confusion_matrix(matrix, [str(n) for n in names], output_dir)
