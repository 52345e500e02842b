"""A datamodule's numeric encoding as a torch module, so that an exported ONNX graph starts
from raw values (original units, NaN for missing) instead of encoded tensors.

An :class:`InputEncoder` maps *raw* inputs to the *encoded* inputs a task takes
(``forward``), and encoded inputs back to raw ones that encode to them (``raw``), which is
how the parity gate and ``load_bundle(..., backend="onnx")`` feed the graph from what the
datamodule produced. What needs text (category names, dates, tokens) stays outside: a
table's graph takes category *codes* (``1 +`` the category's position in
``preprocessing.json``, ``0`` for unknown or missing), a forecaster's graph takes the
calendar features already computed from the timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn


class InputEncoder(nn.Module):
    """Raw inputs -> encoded inputs (``forward``) and back (``raw``), plus what each raw
    input holds (``describe``). Subclasses hold the fitted statistics as buffers."""

    def raw(self, *encoded: Tensor) -> tuple[Tensor, ...]:
        """Raw inputs whose encoding is ``encoded`` (up to float rounding)."""
        raise NotImplementedError

    def describe(self) -> list[dict[str, Any]]:
        """One entry per raw input: ``holds`` (what it is), and its ``dtype``."""
        raise NotImplementedError


#: A standard deviation at most this share of ``max(1, |mean|)`` is rounding noise: the
#: row is constant (per-sequence standardisation leaves it flat instead of dividing noise).
FLAT = 1e-12


def _buffer(values: Sequence[float], dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.as_tensor(list(values), dtype=dtype)


class TableEncoder(InputEncoder):
    """A table's :class:`~datamodules._table_prep.TablePreprocessor` state in the graph.

    Raw inputs: ``numbers`` ``(N, numeric columns)`` float64 in original units (dates as
    their calendar columns), NaN where a value is missing; ``codes`` ``(N, one-hot columns
    + embedded columns)`` int64. The graph takes ``log1p`` where training did, fills gaps
    with the training medians, adds the missing indicators, standardises, and one-hot
    encodes the first codes; the others go to the embeddings as they are.
    """

    def __init__(self, state: Mapping[str, Any]) -> None:
        super().__init__()
        numeric = list(state["numeric"])
        self.numeric = numeric
        self.onehot = list(state["onehot"])
        self.embedded = list(state["embedded"])
        self.sizes = [len(state["categories"][c]) + 1 for c in self.onehot]
        log1p = set(state.get("log1p", []))
        self.register_buffer("fill", _buffer(state["fill"]))
        self.register_buffer("center", _buffer(state["center"]))
        self.register_buffer("scale", _buffer(state["scale"]))
        self.register_buffer("log1p", torch.tensor([c in log1p for c in numeric], dtype=torch.bool))
        self.any_log1p = bool(log1p)  # a Python flag: no branch on tensor data in the graph
        self.indicators = [numeric.index(c) for c in state["indicators"]]

    def forward(self, numbers: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        x = numbers.to(torch.float64)
        if self.any_log1p:
            x = torch.where(self.log1p, torch.log1p(x.clamp(min=0.0)), x)
        gaps = torch.isnan(x)
        parts = [((torch.where(gaps, self.fill, x) - self.center) / self.scale).float()]
        if self.indicators:
            parts.append(gaps[:, self.indicators].float())
        for j, size in enumerate(self.sizes):
            levels = torch.arange(size, device=codes.device)
            parts.append((codes[:, j : j + 1] == levels).float())
        return torch.cat(parts, dim=1), codes[:, len(self.sizes) :]

    def raw(self, numeric: Tensor, categorical: Tensor) -> tuple[Tensor, Tensor]:
        n = len(self.numeric)
        x = numeric[:, :n].to(torch.float64) * self.scale + self.center
        if self.indicators:
            gaps = numeric[:, n : n + len(self.indicators)] > 0.5
            column = x[:, self.indicators]
            x[:, self.indicators] = torch.where(gaps, torch.nan, column)
        if self.any_log1p:
            x = torch.where(self.log1p, torch.expm1(x), x)
        start = n + len(self.indicators)
        codes = []
        for size in self.sizes:
            codes.append(numeric[:, start : start + size].argmax(dim=1, keepdim=True))
            start += size
        return x, torch.cat([*codes, categorical.long()], dim=1)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "dtype": "float64",
                "holds": "the numeric columns in original units, NaN where missing",
                "columns": self.numeric,
            },
            {
                "dtype": "int64",
                "holds": "category codes: 1 + the category's position in preprocessing.json "
                "(prep.categories), 0 for unknown or missing",
                "columns": [*self.onehot, *self.embedded],
            },
        ]


class AffineEncoder(InputEncoder):
    """One input standardised with training statistics: ``(raw - center) / scale``, the
    statistics broadcast along ``axis`` (the channel axis of a batch); with
    ``per_row=True`` each row (and channel) is standardised along its last axis by its own
    mean and standard deviation instead."""

    def __init__(
        self,
        center: Sequence[float],
        scale: Sequence[float],
        axis: int,
        holds: str,
        per_row: bool = False,
    ) -> None:
        super().__init__()
        self.axis, self.holds, self.per_row = axis, holds, per_row
        self.register_buffer("center", _buffer(center))
        self.register_buffer("scale", _buffer(scale))

    def _shaped(self, values: Tensor, ndim: int) -> Tensor:
        shape = [1] * ndim
        shape[self.axis] = -1
        return values.reshape(shape)

    def forward(self, values: Tensor) -> Tensor:
        x = values.to(torch.float64)
        if self.per_row:
            mean = x.mean(dim=-1, keepdim=True)
            std = x.std(dim=-1, keepdim=True, unbiased=False)
            flat = std <= FLAT * mean.abs().clamp(min=1.0)
            x = (x - mean) / torch.where(flat, torch.ones_like(std), std)
            return x.float()
        return ((x - self._shaped(self.center, x.ndim)) / self._shaped(self.scale, x.ndim)).float()

    def raw(self, encoded: Tensor) -> tuple[Tensor]:
        x = encoded.to(torch.float64)
        if self.per_row:  # a standardised row is its own raw form
            return (x,)
        return (x * self._shaped(self.scale, x.ndim) + self._shaped(self.center, x.ndim),)

    def describe(self) -> list[dict[str, Any]]:
        return [{"dtype": "float64", "holds": self.holds}]


class ForecastEncoder(InputEncoder):
    """A forecaster's windows ``(N, lookback, values + calendar)``: raw ``values`` (the
    targets then the covariates, original units) are log-transformed where training took
    the log of the targets and standardised; ``calendar`` (sine/cosine features of the
    timestamps, computed outside the graph) is appended as it is."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        super().__init__()
        self.targets = len(state["targets"])
        self.log_target = bool(state["log_target"])
        self.register_buffer("center", _buffer(state["center"]))
        self.register_buffer("scale", _buffer(state["scale"]))
        self.columns = [*state["targets"], *state["covariates"]]
        self.calendar = list(state["calendar"])

    def forward(self, values: Tensor, calendar: Tensor) -> Tensor:
        x = values.to(torch.float64)
        if self.log_target:
            k = self.targets
            x = torch.cat([torch.log(x[..., :k]), x[..., k:]], dim=-1)
        scaled = ((x - self.center) / self.scale).float()
        return torch.cat([scaled, calendar.float()], dim=-1)

    def raw(self, encoded: Tensor) -> tuple[Tensor, Tensor]:
        n = len(self.columns)
        x = encoded[..., :n].to(torch.float64) * self.scale + self.center
        if self.log_target:
            k = self.targets
            x = torch.cat([torch.exp(x[..., :k]), x[..., k:]], dim=-1)
        return x, encoded[..., n:]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "dtype": "float64",
                "holds": "windows (N, lookback, columns) of the targets then the covariates, "
                "original units",
                "columns": self.columns,
            },
            {
                "dtype": "float32",
                "holds": "the calendar features of each step (sine then cosine of each, as "
                "datamodules.forecast.calendar_features computes them)",
                "columns": self.calendar,
            },
        ]
