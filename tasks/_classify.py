"""What every classification task shares: class-prior baseline, predictions, confusion matrix."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics import classification as cm

from tasks._contract import datamodule_value
from tasks._files import save_figure, write_text_atomic
from tasks._plots import _pyplot


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

    #: The class names label the confusion matrix and predictions when the datamodule
    #: has them (else class indices).
    datamodule_optional: tuple[str, ...] = ("class_names",)

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
        names = datamodule_value(self, datamodule, "class_names")
        return (
            [str(n) for n in names] if names else [str(i) for i in range(self.hparams.num_classes)]
        )

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        matrix = self.test_confusion_matrix
        return save_confusion_matrix(matrix, self.class_names(datamodule), output_dir)


# -- plots -------------------------------------------------------------------------------
CONFUSION_SHOWN = 30
#: Largest side of the confusion matrix figure, in inches (at 110 dpi).
CONFUSION_MAX_INCHES = 20.0


def most_confused(counts: Any, n: int) -> list[int]:
    """Indices (in class order) of the ``n`` classes with the most errors, as the true or
    the predicted class; ties go to the classes with more rows."""
    import numpy as np

    counts = np.asarray(counts, dtype=np.int64)
    errors = counts.sum(axis=1) + counts.sum(axis=0) - 2 * np.diag(counts)
    ranked = np.lexsort((np.arange(len(counts)), -counts.sum(axis=1), -errors))
    return sorted(int(i) for i in ranked[:n])


def save_confusion_matrix(matrix: Any, class_names: list[str], output_dir: Path) -> list[Path]:
    """``confusion_matrix.csv`` (rows true, columns predicted; every class) and a matching
    PNG; with more than :data:`CONFUSION_SHOWN` classes the PNG shows the most confused
    ones (its title says so), so that its size stays bounded."""
    counts = [[int(v) for v in row] for row in matrix.tolist()]
    csv_path = output_dir / "confusion_matrix.csv"
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, counts):
        writer.writerow([name, *row])
    write_text_atomic(csv_path, text.getvalue())
    title = "Confusion matrix (test)"
    if len(class_names) > CONFUSION_SHOWN:
        keep = most_confused(counts, CONFUSION_SHOWN)
        counts = [[counts[i][j] for j in keep] for i in keep]
        title = (
            f"Confusion matrix (test): the {len(keep)} most confused of {len(class_names)} "
            "classes\n(all classes in confusion_matrix.csv)"
        )
        class_names = [class_names[i] for i in keep]
    labels = [n if len(n) <= 24 else n[:23] + "\u2026" for n in class_names]
    plt = _pyplot()
    size = min(CONFUSION_MAX_INCHES, max(4.0, 0.55 * len(labels) + 2.5))
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(r) for r in counts), default=0)
    if len(labels) <= 20:
        for i, row in enumerate(counts):
            for j, value in enumerate(row):
                ax.text(
                    j,
                    i,
                    str(value),
                    ha="center",
                    va="center",
                    color="white" if value > peak / 2 else "black",
                )
    ax.set_title(title)
    fig.tight_layout()
    png_path = output_dir / "confusion_matrix.png"
    save_figure(fig, png_path, dpi=110)
    plt.close(fig)
    return [csv_path, png_path]
