"""Networks for fixed-length sequences ``(N, channels, steps)``: the three reference
models of the anomaly-curves comparison, a residual 1D CNN and a GRU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tasks.errors import ConfigError, did_you_mean
from tasks.nets.mlp import MLP
from tasks.nets.vision import FeaturesHead


class RawMLP(FeaturesHead):
    """Reference (a): an MLP on the raw values, every step a separate input."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        seq_len: int,
        hidden_sizes: Sequence[int] = (32,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = nn.Flatten()
        self.classifier = MLP(in_channels * seq_len, num_classes, hidden_sizes, dropout=dropout)


class RoughnessFeatures(nn.Module):
    """Per channel: the standard deviation of the sequence and of its first difference."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x.std(dim=-1), x.diff(dim=-1).std(dim=-1)], dim=1)


class FeaturesMLP(FeaturesHead):
    """Reference (b): an MLP on two engineered features per channel (std, std of diff)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        seq_len: int,
        hidden_sizes: Sequence[int] = (16,),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = RoughnessFeatures()
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(2 * in_channels),  # the features live on very different scales
            MLP(2 * in_channels, num_classes, hidden_sizes, dropout=dropout),
        )


class Conv1dReference(FeaturesHead):
    """Reference (c): Conv1D(16,3) - Conv1D(16,3) - MaxPool - ReLU - Conv1D(16,3) - MaxPool -
    ReLU - Flatten - Dense(10, relu) - Dense(classes)."""

    def __init__(
        self, in_channels: int, num_classes: int, seq_len: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        length = ((seq_len - 4) // 2 - 2) // 2
        if length < 1:
            raise ConfigError(f"conv1d needs sequences of at least 12 steps, got {seq_len}")
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, 16, 3),
            nn.Conv1d(16, 16, 3),
            nn.MaxPool1d(2),
            nn.ReLU(),
            nn.Conv1d(16, 16, 3),
            nn.MaxPool1d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * length, 10), nn.ReLU(), nn.Dropout(dropout), nn.Linear(10, num_classes)
        )


class _ResBlock1d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, padding=pad, bias=False),
            nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False),
            nn.BatchNorm1d(c_out),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv1d(c_in, c_out, 1, bias=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResNet1d(FeaturesHead):
    """Residual 1D CNN: blocks of two conv-BN layers with skips, global max+mean pooling.
    Global pooling makes it blind to where an anomaly sits, which is what the curves need.

    Args:
        widths: Channels of each residual block.
        kernel: Convolution width.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        seq_len: int,
        widths: Sequence[int] = (32, 32, 64),
        kernel: int = 5,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        blocks, c = [], in_channels
        for w in widths:
            blocks.append(_ResBlock1d(c, int(w), kernel))
            c = int(w)
        self.features = nn.Sequential(*blocks, _MaxMeanPool())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c, num_classes))


class _MaxMeanPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x.amax(dim=-1), x.mean(dim=-1)], dim=1)


class GRUNet(FeaturesHead):
    """A GRU over the steps; its last hidden state (both directions) feeds a linear head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        seq_len: int,
        hidden: int = 32,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = _LastHidden(
            nn.GRU(in_channels, hidden, layers, batch_first=True, bidirectional=bidirectional)
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden * (2 if bidirectional else 1), num_classes)
        )


class _LastHidden(nn.Module):
    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        self.gru = gru

    def forward(self, x: Tensor) -> Tensor:
        _, h = self.gru(x.transpose(1, 2))
        directions = 2 if self.gru.bidirectional else 1
        return h[-directions:].transpose(0, 1).flatten(1)


SEQUENCE_NETS = {
    "mlp": RawMLP,
    "features_mlp": FeaturesMLP,
    "conv1d": Conv1dReference,
    "resnet1d": ResNet1d,
    "gru": GRUNet,
}


def build_sequence_net(
    name: str,
    in_channels: int,
    num_classes: int,
    seq_len: int,
    options: dict | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """A sequence network by name (see :data:`SEQUENCE_NETS`)."""
    if name not in SEQUENCE_NETS:
        raise ConfigError(
            f"unknown network {name!r}.{did_you_mean(name, list(SEQUENCE_NETS))} "
            f"Available: {', '.join(SEQUENCE_NETS)}"
        )
    try:
        return SEQUENCE_NETS[name](
            in_channels, num_classes, seq_len, dropout=dropout, **dict(options or {})
        )
    except TypeError as exc:
        raise ConfigError(f"task.network_options for {name}: {exc}") from exc
