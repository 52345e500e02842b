"""Quantile regression of table rows: one network predicts several quantiles at once."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection, R2Score

from tasks import ConfigError, TabularRegression


class PinballLoss(nn.Module):
    """Mean pinball (quantile) loss over rows and quantiles.

    For quantile ``q`` and error ``e = y - pred`` the loss is ``max(q * e, (q - 1) * e)``;
    its minimiser is the ``q``-quantile of ``y`` given the inputs.
    """

    def __init__(self, quantiles: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("quantiles", torch.tensor(list(quantiles), dtype=torch.float))

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        error = target.unsqueeze(-1) - pred  # (rows, quantiles)
        q = self.quantiles.to(pred.dtype)
        return torch.maximum(q * error, (q - 1) * error).mean()


class _OnColumn:
    """Mixin: update a one-column metric with one column of the quantile predictions."""

    def __init__(self, column: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.column = column

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(preds[:, self.column], target)  # type: ignore[misc]


class MedianMAE(_OnColumn, MeanAbsoluteError):
    """Mean absolute error of the median prediction."""


class MedianMSE(_OnColumn, MeanSquaredError):
    """(Root) mean squared error of the median prediction."""


class MedianR2(_OnColumn, R2Score):
    """R^2 of the median prediction."""


class _RowMean(Metric):
    """A per-row score averaged over every row seen (summed across processes)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rows", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.total += self.score(preds, target).double().sum()
        self.rows += len(target)

    def compute(self) -> Tensor:
        return (self.total / self.rows.clamp(min=1)).float()


class IntervalCoverage(_RowMean):
    """Share of rows whose target lies between the lowest and the highest quantile."""

    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        return ((preds[:, 0] <= target) & (target <= preds[:, -1])).float()


class IntervalWidth(_RowMean):
    """Mean distance between the highest and the lowest predicted quantile."""

    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        return preds[:, -1] - preds[:, 0]


class MeanPinball(_RowMean):
    """Pinball loss in the target's units, averaged over quantiles."""

    def __init__(self, quantiles: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loss = PinballLoss(quantiles)

    def score(self, preds: Tensor, target: Tensor) -> Tensor:
        error = target.unsqueeze(-1) - preds
        q = self.loss.quantiles.to(preds.dtype)
        return torch.maximum(q * error, (q - 1) * error).mean(dim=-1)


class TabularQuantileRegression(TabularRegression):
    """Predict several quantiles of one numeric target: a prediction interval per row.

    The network has one output per quantile and is trained with the pinball loss.
    Quantiles are sorted before use (monotone rearrangement), so they never cross.
    Metrics: ``pinball`` (mean pinball loss in target units), ``coverage`` (share of
    rows inside the outer interval; aim for ``max(q) - min(q)``), ``width`` (its mean
    width), and ``mae``/``rmse``/``r2`` of the median. Predictions have one column per
    quantile (``q0.1_<target>`` ...). The baseline is a normal distribution around the
    training mean with the training spread, the same for every row.

    Args:
        quantiles: The quantiles to predict, strictly between 0 and 1; must include 0.5
            (the point prediction).
        **kwargs: Everything :class:`~tasks.TabularRegression` takes except ``loss``.
    """

    main_metric = "pinball"

    def __init__(self, quantiles: Sequence[float] = (0.1, 0.5, 0.9), **kwargs: Any) -> None:
        qs = [float(q) for q in quantiles]
        if len(qs) < 2 or any(not 0.0 < q < 1.0 for q in qs) or len(set(qs)) != len(qs):
            raise ConfigError(
                f"task.quantiles={qs}: give at least two distinct values strictly between 0 and 1"
            )
        if 0.5 not in qs:
            raise ConfigError(f"task.quantiles={qs} must include 0.5, the point prediction")
        if kwargs.get("num_targets", 1) != 1:
            raise ConfigError(
                f"tabular_quantile predicts one target column, got {kwargs['num_targets']}; "
                "set datamodule.target to a single column"
            )
        super().__init__(**kwargs)
        self.register_buffer("_q", torch.tensor(sorted(qs)), persistent=False)

    @property
    def quantiles(self) -> list[float]:
        return sorted(float(q) for q in self.hparams.quantiles)

    @property
    def out_features(self) -> int:
        return len(self.hparams.quantiles)

    def configure_loss(self) -> nn.Module:
        return PinballLoss(self.quantiles)

    def configure_metrics(self) -> MetricCollection:
        median = self.quantiles.index(0.5)
        return MetricCollection(
            {
                "pinball": MeanPinball(self.quantiles),
                "coverage": IntervalCoverage(),
                "width": IntervalWidth(),
                "mae": MedianMAE(median),
                "rmse": MedianMSE(median, squared=False),
                "r2": MedianR2(median),
            }
        )

    def forward(self, *inputs: Tensor) -> Tensor:
        # sorted quantiles never cross; sorting only ever lowers the pinball loss
        return self.model(*inputs).sort(dim=-1).values

    def unscale(self, values: Tensor) -> Tensor:
        return values * self.target_scale[0] + self.target_center[0]

    def metric_inputs(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return self.unscale(output), self.unscale(target)

    def baseline_output(self, output: Tensor) -> Tensor | None:
        # quantiles of N(training mean, training std), in standardised units
        return torch.special.ndtri(self._q.to(output)).expand_as(output)

    def predict_outputs(self, output: Tensor) -> dict[str, Tensor]:
        values = self.unscale(output)
        return {f"q{q:g}": values[:, j] for j, q in enumerate(self.quantiles)}

    def on_test_epoch_end(self) -> None:
        k = len(self.quantiles)
        pred = torch.cat([p for p, _ in self._test_pairs]).reshape(-1, k).to(self.device)
        true = torch.cat([t for _, t in self._test_pairs]).reshape(-1).to(self.device)
        self.test_predictions = (
            self.all_gather(pred).reshape(-1, k).cpu(),
            self.all_gather(true).reshape(-1).cpu(),
        )

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        if not self._test_pairs:
            return []
        pred, true = self.test_predictions
        name = (getattr(datamodule, "targets", None) or ["target"])[0]
        return [
            _save_calibration(pred, true, self.quantiles, output_dir),
            _save_interval_plot(pred, true, self.quantiles, name, output_dir),
        ]


def _save_calibration(pred: Tensor, true: Tensor, quantiles: list[float], out: Path) -> Path:
    """Per quantile: the share of test targets below it (calibrated: equal to the quantile)."""
    path = out / "quantile_calibration.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["quantile", "observed_share_below", "rows"])
        for j, q in enumerate(quantiles):
            share = (true <= pred[:, j]).float().mean().item()
            writer.writerow([q, round(share, 4), len(true)])
    return path


def _save_interval_plot(
    pred: Tensor, true: Tensor, quantiles: list[float], name: str, out: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = pred[:, quantiles.index(0.5)].argsort()
    p, t = pred[order].numpy(), true[order].numpy()
    rows = range(len(t))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.fill_between(
        rows, p[:, 0], p[:, -1], alpha=0.3, label=f"q{quantiles[0]:g}-q{quantiles[-1]:g} interval"
    )
    ax.plot(rows, p[:, quantiles.index(0.5)], "k-", linewidth=1, label="median")
    ax.scatter(rows, t, s=8, color="tab:red", label="true", zorder=3)
    inside = ((p[:, 0] <= t) & (t <= p[:, -1])).mean()
    ax.set_title(f"{name}: test rows by predicted median; {inside:.0%} inside the interval")
    ax.set_xlabel("test row (sorted by predicted median)")
    ax.set_ylabel(name)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "prediction_intervals.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
