"""Image classification networks by name: the reference CNNs, a small ResNet, a plain
configurable CNN, and any torchvision model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tasks.errors import ConfigError, DataError


class FeaturesHead(nn.Module):
    """A network as ``features`` (image to vector) then ``classifier`` (vector to logits);
    fine-tuning freezes ``features`` and trains ``classifier``."""

    features: nn.Module
    classifier: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _dense_head(in_features: int, hidden: int, dropout: float, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class MnistCNN(FeaturesHead):
    """The reference MNIST network: Conv2D(32, 3x3) -> MaxPool(2) -> ReLU -> Flatten ->
    Dense(64, relu) -> Dense(classes); 347,146 parameters on 28x28 grey digits."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        hidden: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = ((int(s) - 2) // 2 for s in image_size)
        if min(h, w) < 1:
            raise ConfigError(f"mnist_cnn needs images of at least 4x4, got {list(image_size)}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten()
        )
        self.classifier = _dense_head(32 * h * w, hidden, dropout, num_classes)


class CifarCNN(FeaturesHead):
    """The reference CIFAR-10 network: Conv2D(32) -> Conv2D(32) -> MaxPool -> Flatten ->
    Dense(512) -> Dense(classes), 3x3 valid convolutions, ReLU."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        hidden: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = ((int(s) - 4) // 2 for s in image_size)
        if min(h, w) < 1:
            raise ConfigError(f"cifar_cnn needs images of at least 6x6, got {list(image_size)}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = _dense_head(32 * h * w, hidden, dropout, num_classes)


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ConvNet(FeaturesHead):
    """Stages of ``convs`` 3x3 conv-BN-ReLU layers, each stage followed by 2x2 max pooling
    (while the image is at least 2x2), then a classifier head.

    Args:
        widths: Channels of each stage.
        convs: Convolutions per stage.
        head: ``avg`` (global average pooling, then linear; for deep stacks) or ``flatten``
            (every feature-map position into a dense layer of ``hidden`` units; keeps
            the layout that two or three stages have not yet summarised).
        hidden: Width of the dense layer of the ``flatten`` head.
        dropout: Dropout before the last linear layer.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        widths: Sequence[int] = (32, 64),
        convs: int = 2,
        head: str = "avg",
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if head not in ("avg", "flatten"):
            raise ConfigError(f"convnet head={head!r}; expected avg or flatten")
        layers: list[nn.Module] = []
        c = in_channels
        h, w = (int(s) for s in image_size)
        for width in widths:
            for _ in range(convs):
                layers.append(_conv_bn(c, int(width)))
                c = int(width)
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        if head == "avg":
            self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, num_classes))
        else:
            self.features = nn.Sequential(*layers, nn.Flatten())
            self.classifier = _dense_head(c * h * w, hidden, dropout, num_classes)


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNetSmall(FeaturesHead):
    """A ResNet-9-style network for 32x32 images (about 6.6M parameters at width 64):
    prep conv, three stages of conv-pool (the first and last with a residual block),
    global max pooling and a scaled linear head. Trained with label smoothing, flips,
    padded crops and a one-cycle schedule it is built to pass 0.93 on CIFAR-10 in a few
    GPU minutes.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        width: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        w = int(width)
        self.features = nn.Sequential(
            _conv_bn(in_channels, w),
            _conv_bn(w, 2 * w),
            nn.MaxPool2d(2),
            _Residual(2 * w),
            _conv_bn(2 * w, 4 * w),
            nn.MaxPool2d(2),
            _conv_bn(4 * w, 8 * w),
            nn.MaxPool2d(2),
            _Residual(8 * w),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(8 * w, num_classes, bias=False)
        )
        self.scale = 0.125

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x)) * self.scale


BACKBONES = {
    "mnist_cnn": MnistCNN,
    "cifar_cnn": CifarCNN,
    "convnet": ConvNet,
    "resnet_small": ResNetSmall,
}
TORCHVISION_PREFIX = "torchvision:"


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise ConfigError(f"{type(model).__name__} has no linear classifier head to replace")
    name, linear = found
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    return parent, name.rpartition(".")[2], linear


class TorchvisionNet(nn.Module):
    """A torchvision model, its classifier replaced for ``num_classes``.

    Args:
        name: A ``torchvision.models`` name, e.g. ``resnet18``.
        weights_path: A local file with the model's pretrained ``state_dict`` (e.g. a
            torchvision ``.pth`` download); nothing is ever fetched from a hub.
        in_channels: 1 repeats grey images to the 3 channels the models expect.
    """

    def __init__(
        self,
        name: str,
        in_channels: int,
        num_classes: int,
        weights_path: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            from tasks.errors import did_you_mean

            raise ConfigError(f"unknown torchvision model {name!r}.{did_you_mean(name, available)}")
        self.model = torchvision.models.get_model(name, weights=None)
        if weights_path:
            path = Path(weights_path)
            if not path.is_file():
                raise DataError(f"task.weights_path={path}: no such file")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = state.get("state_dict", state) if isinstance(state, dict) else state
                self.model.load_state_dict(state)
            except Exception as exc:
                raise DataError(
                    f"task.weights_path={path}: not a state_dict of torchvision {name} ({exc})"
                ) from exc
        parent, attr, old = _last_linear(self.model)
        head = nn.Linear(old.in_features, num_classes)
        setattr(parent, attr, nn.Sequential(nn.Dropout(dropout), head) if dropout else head)
        self.head = head
        self.repeat_grey = in_channels == 1

    def forward(self, x: Tensor) -> Tensor:
        if self.repeat_grey and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.model(x)


def build_backbone(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: Sequence[int],
    options: dict[str, Any] | None = None,
    weights_path: str | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """A network by name: one of :data:`BACKBONES` or ``torchvision:<model name>``."""
    options = dict(options or {})
    if name.startswith(TORCHVISION_PREFIX):
        return TorchvisionNet(
            name[len(TORCHVISION_PREFIX) :], in_channels, num_classes, weights_path, dropout
        )
    if weights_path:
        raise ConfigError("task.weights_path is for torchvision:<name> backbones")
    if name not in BACKBONES:
        from tasks.errors import did_you_mean

        raise ConfigError(
            f"unknown backbone {name!r}.{did_you_mean(name, list(BACKBONES))} Available: "
            f"{', '.join(BACKBONES)}, or torchvision:<model> (e.g. torchvision:resnet18)"
        )
    try:
        return BACKBONES[name](in_channels, num_classes, image_size, dropout=dropout, **options)
    except TypeError as exc:
        raise ConfigError(f"task.backbone_options for {name}: {exc}") from exc
