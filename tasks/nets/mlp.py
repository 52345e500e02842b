"""A configurable multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tasks.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """Dense layers ``in -> hidden... -> out``, each hidden layer followed by
    (batch norm), activation and (dropout).

    Args:
        in_features: Input width.
        out_features: Output width (logits or regression targets).
        hidden_sizes: Widths of the hidden layers; empty gives a linear model.
        activation: Name of the hidden activation.
        dropout: Dropout probability after each hidden activation.
        batch_norm: Batch-normalise each hidden layer before its activation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_sizes: Sequence[int] = (64,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ConfigError(
                f"MLP needs positive widths, got in_features={in_features}, "
                f"out_features={out_features}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers.append(nn.Linear(width, int(size)))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(size)))
            layers.append(make_activation(activation))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = int(size)
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class TabularNet(nn.Module):
    """An :class:`MLP` over numeric columns plus one embedding per integer-coded column.

    Args:
        num_features: Width of the numeric input (one-hot columns included).
        out_features: Output width.
        cardinalities: Number of codes of each embedded column (unknown bucket included).
        embedding_dim: Width of every embedding; None picks ``min(16, (cardinality + 1) // 2)``.
        **mlp: Hidden sizes, activation, dropout and batch norm of the :class:`MLP`.
    """

    def __init__(
        self,
        num_features: int,
        out_features: int,
        cardinalities: Sequence[int] = (),
        embedding_dim: int | None = None,
        **mlp: object,
    ) -> None:
        super().__init__()
        dims = [embedding_dim or min(16, (int(c) + 1) // 2) for c in cardinalities]
        self.embeddings = nn.ModuleList(
            nn.Embedding(int(c), d) for c, d in zip(cardinalities, dims)
        )
        self.mlp = MLP(num_features + sum(dims), out_features, **mlp)  # type: ignore[arg-type]

    def forward(self, x_num: Tensor, x_cat: Tensor | None = None) -> Tensor:
        if self.embeddings and x_cat is not None:
            embedded = [emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings)]
            x_num = torch.cat([x_num, *embedded], dim=1)
        return self.mlp(x_num)
