"""What every classification task shares: class-prior baseline, predictions, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics import classification as cm

from tasks._plots import save_confusion_matrix


def label_metrics(num_classes: int) -> MetricCollection:
    """Accuracy, precision, recall, F1 and AUROC: binary (positive class 1) or macro-averaged.

    Updated with probabilities: of class 1 when binary, of every class otherwise (see
    :meth:`ClassificationOutputs.metric_inputs`).
    """
    n = num_classes
    if n == 2:
        return MetricCollection(
            {
                "acc": cm.BinaryAccuracy(),
                "precision": cm.BinaryPrecision(),
                "recall": cm.BinaryRecall(),
                "f1": cm.BinaryF1Score(),
                "auroc": cm.BinaryAUROC(),
            }
        )
    return MetricCollection(
        {
            "acc": cm.MulticlassAccuracy(n, average="micro"),
            "precision": cm.MulticlassPrecision(n, average="macro"),
            "recall": cm.MulticlassRecall(n, average="macro"),
            "f1": cm.MulticlassF1Score(n, average="macro"),
            "auroc": cm.MulticlassAUROC(n),
        }
    )


class ClassificationOutputs:
    """Mixin for a :class:`~tasks.base.BaseTask` whose network outputs class logits.

    Needs ``hparams.num_classes`` and ``hparams.class_counts``; call
    :meth:`init_confusion` in ``__init__`` after ``super().__init__()``.
    """

    def init_confusion(self) -> None:
        self.test_confusion = cm.MulticlassConfusionMatrix(self.hparams.num_classes)
        #: The inputs of the current test batch, for artefacts that show examples.
        self.test_inputs: Tensor | None = None

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Keeps the batch's first input as ``self.test_inputs`` (as the datamodule made it)
        for :meth:`record_test_outputs`, then runs the shared step."""
        self.test_inputs = batch[0]
        return super().test_step(batch, batch_idx)  # type: ignore[misc]

    def metric_inputs(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Softmax probabilities of the logits for :func:`label_metrics`: of class 1
        ``(N,)`` when binary, ``(N, num_classes)`` otherwise; class-id targets unchanged."""
        prob = output.float().softmax(dim=-1)
        return (prob[:, 1] if self.hparams.num_classes == 2 else prob), target

    def baseline_output(self, output: Tensor) -> Tensor | None:
        """Log-prior logits from ``class_counts`` for every row: the majority class, with one
        ranking for all rows (AUROC 0.5); None without ``class_counts``."""
        counts = self.hparams.class_counts
        if not counts:
            return None
        prior = torch.tensor(counts, dtype=output.dtype, device=output.device).clamp(min=1e-3)
        # log-prior logits: predicts the majority class, ranks every row the same (AUROC 0.5)
        return prior.log().expand_as(output)

    def predict_outputs(self, output: Tensor) -> dict[str, Tensor]:
        """``pred``: the class index ``(N,)`` (the datamodule's ``predictions_frame`` turns it
        into the class label); ``prob``: softmax probabilities ``(N, num_classes)``."""
        prob = output.float().softmax(dim=-1)
        return {"pred": prob.argmax(dim=-1), "prob": prob}

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    def record_test_outputs(self, output: Tensor, target: Tensor) -> None:
        """Adds the argmax of the raw logits and the class ids to the test confusion matrix."""
        self.test_confusion.update(output.argmax(dim=-1), target)

    def on_test_epoch_end(self) -> None:
        # compute() syncs across ranks, so every rank runs it here, not in save_artifacts
        self.test_confusion_matrix = self.test_confusion.compute().cpu()

    def class_names(self, datamodule: L.LightningDataModule) -> list[str]:
        names = getattr(datamodule, "class_names", None)
        return (
            [str(n) for n in names] if names else [str(i) for i in range(self.hparams.num_classes)]
        )

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        matrix = self.test_confusion_matrix
        return save_confusion_matrix(matrix, self.class_names(datamodule), output_dir)
