"""Forecasting networks: a window ``(N, lookback, inputs)`` in, ``(N, horizon, targets)`` out
(direct multi-output: every horizon step from one forward pass)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tasks.errors import ConfigError, did_you_mean
from tasks.nets.mlp import MLP


class _Forecaster(nn.Module):
    """Features of the window (:meth:`encode`) -> an MLP head (a linear layer when
    ``hidden_sizes`` is empty) to ``horizon * targets`` values."""

    def __init__(
        self,
        features: int,
        horizon: int,
        targets: int,
        dropout: float,
        hidden_sizes: Sequence[int] = (),
        drop_features: bool = True,
    ) -> None:
        super().__init__()
        self.horizon, self.targets = horizon, targets
        self.head = nn.Sequential(
            nn.Dropout(dropout if drop_features else 0.0),
            MLP(features, horizon * targets, hidden_sizes, dropout=dropout),
        )

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encode(x)).view(x.shape[0], self.horizon, self.targets)


class RecurrentForecaster(_Forecaster):
    """LSTM or GRU over the window; the last step's hidden state feeds the head.

    ``cell=lstm, hidden_size=6, num_layers=1`` is the reference network (LSTM(6) on
    24-hour windows -> Dense(1)).
    """

    def __init__(
        self,
        inputs: int,
        horizon: int,
        targets: int,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(hidden_size, horizon, targets, dropout)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(
            inputs,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def encode(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return out[:, -1]


class WindowMLP(_Forecaster):
    """The window flattened into one vector, through an MLP (``hidden_sizes``)."""

    def __init__(
        self,
        inputs: int,
        horizon: int,
        targets: int,
        lookback: int,
        hidden_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(inputs * lookback, horizon, targets, dropout, hidden_sizes, False)

    def encode(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class CNNForecaster(_Forecaster):
    """A small dilated 1D CNN (kernel ``kernel``, dilations 1, 2, 4, ...); the features of
    the last step (which see the whole receptive field) and the window mean feed the head."""

    def __init__(
        self,
        inputs: int,
        horizon: int,
        targets: int,
        channels: int = 32,
        num_layers: int = 3,
        kernel: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(2 * channels, horizon, targets, dropout)
        layers: list[nn.Module] = []
        width = inputs
        for i in range(num_layers):
            dilation = 2**i
            layers += [
                nn.ConstantPad1d(((kernel - 1) * dilation, 0), 0.0),  # causal: no look ahead
                nn.Conv1d(width, channels, kernel, dilation=dilation),
                nn.ReLU(),
            ]
            width = channels
        self.convs = nn.Sequential(*layers)

    def encode(self, x: Tensor) -> Tensor:
        h = self.convs(x.transpose(1, 2))
        return torch.cat([h[:, :, -1], h.mean(dim=-1)], dim=1)


NETWORKS = ("lstm", "gru", "mlp", "cnn")


def build_forecast_net(
    name: str,
    inputs: int,
    horizon: int,
    targets: int,
    lookback: int,
    hidden_size: int = 64,
    num_layers: int = 1,
    dropout: float = 0.0,
    **options: Any,
) -> nn.Module:
    """The network ``name`` (``lstm``, ``gru``, ``mlp``, ``cnn``) with the shared sizes;
    ``options`` go to its class (e.g. ``hidden_sizes`` for ``mlp``, ``kernel`` for ``cnn``)."""
    try:
        if name in ("lstm", "gru"):
            return RecurrentForecaster(
                inputs, horizon, targets, name, hidden_size, num_layers, dropout, **options
            )
        if name == "mlp":
            options.setdefault("hidden_sizes", [hidden_size] * num_layers)
            return WindowMLP(inputs, horizon, targets, lookback, dropout=dropout, **options)
        if name == "cnn":
            return CNNForecaster(
                inputs,
                horizon,
                targets,
                hidden_size,
                max(num_layers, 1),
                dropout=dropout,
                **options,
            )
    except TypeError as exc:
        raise ConfigError(f"task.network_options do not fit network {name!r}: {exc}") from exc
    raise ConfigError(
        f"task.network={name!r} is not a forecasting network; choose one of "
        f"{list(NETWORKS)}.{did_you_mean(name, NETWORKS)}"
    )
