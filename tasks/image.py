"""Image classification: named backbones, batch-wise augmentation on the device."""

from __future__ import annotations

import csv
import heapq
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics import classification as cm

from tasks._classify import ClassificationOutputs
from tasks._files import save_figure
from tasks._plots import _pyplot
from tasks.base import BaseTask
from tasks.errors import ConfigError
from tasks.nets.vision import build_backbone

AUGMENT_KEYS = ("hflip", "crop_padding", "transforms")


def _build_transforms(specs: Sequence[Mapping[str, Any]]) -> Any:
    """``[{name: RandomRotation, degrees: 10}, ...]`` as a torchvision v2 pipeline."""
    from torchvision.transforms import v2

    steps = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        cls = getattr(v2, str(name), None)
        if not isinstance(cls, type):
            raise ConfigError(
                f"task.augment.transforms: {name!r} is not a torchvision.transforms.v2 class "
                "(e.g. RandomRotation, RandomAffine, ColorJitter, RandomErasing)"
            )
        try:
            steps.append(cls(**spec))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"task.augment.transforms: {name}({spec}): {exc}") from exc
    return v2.Compose(steps) if steps else None


def random_crop(x: Tensor, padding: int) -> Tensor:
    """Per-image random crops of zero-padded images, same size out (batch-wise, any device)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_hflip(x: Tensor) -> Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class ImageClassification(ClassificationOutputs, BaseTask):
    """Classify images with a named backbone.

    Batches hold uint8 images ``(N, C, H, W)``; the task converts them to float and
    normalises them with the training set's per-channel statistics (saved in the
    checkpoint, so a loaded model takes raw pixels). Augmentation runs batch-wise on the
    training device, after the batch is moved there.

    Args:
        num_classes: Number of classes (set from the datamodule).
        in_channels: Image channels (set from the datamodule).
        image_size: ``[height, width]`` (set from the datamodule).
        class_counts: Training images per class (set from the datamodule).
        mean: Per-channel mean in [0, 1] units (set from the datamodule).
        std: Per-channel standard deviation (set from the datamodule).
        backbone: ``mnist_cnn`` or ``cifar_cnn`` (the reference networks), ``convnet``,
            ``resnet_small``, or ``torchvision:<name>`` (e.g. ``torchvision:resnet18``).
        backbone_options: Extra arguments of the backbone, e.g. ``{widths: [32, 64]}``.
        weights_path: Pretrained weights for a torchvision backbone, from a local file.
        dropout: Dropout before the classifier.
        freeze_backbone: Train only the classifier head at first.
        unfreeze_at_epoch: Epoch from which the whole network trains (with
            ``freeze_backbone``); None keeps the backbone frozen.
        label_smoothing: Cross-entropy label smoothing.
        augment: ``{hflip: bool, crop_padding: int, transforms: [{name: <v2 class>, ...}]}``;
            ``transforms`` are torchvision v2 transforms applied per image on the device.
        top_k: Also report top-k accuracy when there are more than ``top_k`` classes.
        worst_images: How many misclassified test images the grid shows.
        **kwargs: Optimiser and scheduler settings of :class:`~tasks.base.BaseTask`.
    """

    option_hooks = {"configure_loss": ("label_smoothing",)}

    main_metric = "acc"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: Sequence[int] = (28, 28),
        class_counts: Sequence[int] = (),
        mean: Sequence[float] = (),
        std: Sequence[float] = (),
        backbone: str = "mnist_cnn",
        backbone_options: Mapping[str, Any] | None = None,
        weights_path: str | None = None,
        dropout: float = 0.0,
        freeze_backbone: bool = False,
        unfreeze_at_epoch: int | None = None,
        label_smoothing: float = 0.0,
        augment: Mapping[str, Any] | None = None,
        top_k: int = 5,
        worst_images: int = 36,
        **kwargs: Any,
    ) -> None:
        if num_classes < 2:
            raise ConfigError(f"classification needs at least 2 classes, got {num_classes}")
        unknown = sorted(set(augment or {}) - set(AUGMENT_KEYS))
        if unknown:
            raise ConfigError(f"task.augment has unknown keys {unknown}; expected {AUGMENT_KEYS}")
        if unfreeze_at_epoch is not None and not freeze_backbone:
            raise ConfigError("task.unfreeze_at_epoch needs task.freeze_backbone=true")
        super().__init__(**kwargs)
        self.init_confusion()
        channels = in_channels
        self.register_buffer("mean", _per_channel(mean, 0.0, channels), persistent=False)
        self.register_buffer("std", _per_channel(std, 1.0, channels), persistent=False)
        self._transforms = _build_transforms((augment or {}).get("transforms") or [])
        self.example_input_array = torch.zeros(2, channels, *image_size, dtype=torch.uint8)
        self._worst: list[tuple[float, int, Tensor, int, int, float]] = []

    # -- network -------------------------------------------------------------------------
    def configure_model(self) -> nn.Module:
        hp = self.hparams
        return build_backbone(
            hp.backbone,
            hp.in_channels,
            hp.num_classes,
            hp.image_size,
            dict(hp.backbone_options or {}),
            hp.weights_path,
            hp.dropout,
        )

    def configure_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=self.hparams.label_smoothing)

    def configure_metrics(self) -> MetricCollection:
        n, k = self.hparams.num_classes, self.hparams.top_k
        metrics = {
            "acc": cm.MulticlassAccuracy(n, average="micro"),
            "balanced_acc": cm.MulticlassAccuracy(n, average="macro"),
        }
        if n > k:
            metrics[f"top{k}_acc"] = cm.MulticlassAccuracy(n, top_k=k, average="micro")
        return MetricCollection(metrics)

    def metric_inputs(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and class ids unchanged, for the multiclass metrics (even for 2 classes)."""
        return output, target  # multiclass metrics (top-k too) take logits, even for 2 classes

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 pixels to standardised floats; float input is taken as already normalised."""
        if images.dtype != torch.uint8:
            return images
        scale = 1.0 / 255.0
        return (images.float() * scale - self.mean[:, None, None]) / self.std[:, None, None]

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of uint8 images ``(N, C, H, W)``, normalised here
        (:meth:`normalize`) so that a loaded checkpoint takes raw pixels."""
        return self.model(self.normalize(images))

    # -- augmentation on the device ------------------------------------------------------
    def augment_batch(self, batch: Any) -> Any:
        """Random crops, flips and torchvision v2 transforms of the uint8 images, batch-wise
        on the device (before :meth:`forward` normalises them); labels unchanged."""
        augment = self.hparams.augment
        images, *rest = batch
        if augment.get("crop_padding"):
            images = random_crop(images, int(augment["crop_padding"]))
        if augment.get("hflip"):
            images = random_hflip(images)
        if augment.get("transforms"):
            images = torch.stack([self._transforms(image) for image in images])
        return (images, *rest)

    # -- fine-tuning ---------------------------------------------------------------------
    def _head(self) -> nn.Module:
        head = getattr(self.model, "head", None)
        return head if head is not None else self.model.classifier

    def _set_backbone_trainable(self, trainable: bool) -> None:
        head = set(map(id, self._head().parameters()))
        for p in self.model.parameters():
            if id(p) not in head:
                p.requires_grad_(trainable)

    def on_train_epoch_start(self) -> None:
        hp = self.hparams
        if not hp.freeze_backbone:
            return
        frozen = hp.unfreeze_at_epoch is None or self.current_epoch < hp.unfreeze_at_epoch
        self._set_backbone_trainable(not frozen)
        if frozen:  # frozen batch-norm layers keep their running statistics too
            head = set(map(id, self._head().modules()))
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and id(module) not in head:
                    module.eval()

    # -- test artefacts ------------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._worst = []
        self._seen = 0

    def record_test_outputs(self, output: Tensor, target: Tensor) -> None:
        """The confusion matrix, and the misclassified images (raw uint8
        ``self.test_inputs``) with the highest loss of the raw logits, for
        ``worst_misclassified.png``."""
        super().record_test_outputs(output, target)
        keep = self.hparams.worst_images
        if not keep or self.test_inputs is None:
            return
        prob = output.float().softmax(dim=-1)
        pred = prob.argmax(dim=-1)
        loss = F.cross_entropy(output.float(), target, reduction="none")
        wrong = (pred != target).nonzero().flatten()
        for i in wrong[loss[wrong].argsort(descending=True)[:keep]].tolist():
            self._seen += 1
            item = (
                float(loss[i]),
                self._seen,  # tie-breaker: tensors are never compared
                self.test_inputs[i].cpu(),
                int(target[i]),
                int(pred[i]),
                float(prob[i, pred[i]]),
            )
            if len(self._worst) < keep:
                heapq.heappush(self._worst, item)
            elif item[0] > self._worst[0][0]:
                heapq.heapreplace(self._worst, item)

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        paths = super().save_artifacts(output_dir, datamodule)
        names = self.class_names(datamodule)
        matrix = self.test_confusion_matrix.double()
        per_class = output_dir / "per_class_accuracy.csv"
        with open(per_class, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["class", "accuracy", "images"])
            for j, name in enumerate(names):
                total = matrix[j].sum().item()
                writer.writerow(
                    [name, round(matrix[j, j].item() / total, 4) if total else "", int(total)]
                )
        paths.append(per_class)
        worst = sorted(self._worst, key=lambda item: -item[0])
        if worst:
            images = torch.stack([item[2] for item in worst])
            titles = [f"true {names[t]}\npred {names[p]} ({c:.0%})" for _, _, _, t, p, c in worst]
            paths.append(
                save_image_grid(
                    images,
                    titles,
                    output_dir / "worst_misclassified.png",
                    "Misclassified test images, least probability on the true class first",
                )
            )
        return paths


def _per_channel(values: Sequence[float], default: float, channels: int) -> Tensor:
    values = list(values) or [default] * channels
    if len(values) != channels:
        raise ConfigError(f"{len(values)} normalisation values for {channels} channels")
    return torch.tensor(values, dtype=torch.float)


# -- plots -------------------------------------------------------------------------------
def save_image_grid(images: Any, titles: list[str], path: Path, title: str) -> Path:
    """Images ``(N, C, H, W)`` (uint8, or floats rescaled per image) in a titled grid."""
    import numpy as np

    plt = _pyplot()
    n = len(images)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, titles):
        array = image.detach().cpu().float().numpy().transpose(1, 2, 0)
        if image.dtype.is_floating_point:
            low, high = array.min(), array.max()
            array = (array - low) / (high - low or 1.0)
        else:
            array = array / 255.0
        array = np.clip(array, 0, 1)
        if array.shape[2] == 1:
            ax.imshow(array[:, :, 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(array)
        ax.set_title(text, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
