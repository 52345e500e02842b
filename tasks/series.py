"""Unsupervised anomaly detection on one long series: a window autoencoder, per-step
reconstruction scores and a threshold chosen on validation data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from tasks._files import save_figure, write_csv
from tasks._plots import _pyplot
from tasks.base import BaseTask
from tasks.errors import ConfigError


class ConvAutoencoder1d(nn.Module):
    """Two strided Conv1D layers down to a bottleneck and two transposed ones back up."""

    def __init__(self, channels: int, window: int, width: int = 32, bottleneck: int = 8) -> None:
        super().__init__()
        if window % 4:
            raise ConfigError(f"the autoencoder needs a window divisible by 4, got {window}")
        self.encoder = nn.Sequential(
            nn.Conv1d(channels, width, 7, stride=2, padding=3),
            nn.ReLU(),
            nn.Conv1d(width, bottleneck, 7, stride=2, padding=3),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose1d(bottleneck, width, 7, stride=2, padding=3, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose1d(width, channels, 7, stride=2, padding=3, output_padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class SeriesAnomalyDetection(BaseTask):
    """Learn to reconstruct normal windows; steps reconstructed badly are anomalies.

    The score of a step is its squared reconstruction error (mean over channels),
    smoothed by a moving average of ``smooth`` steps. After every validation epoch the
    threshold is set to the ``threshold_percentile`` of the validation scores (steps
    labelled anomalous left out): on normal data about ``100 - percentile`` % of the
    steps are flagged, i.e. the percentile sets the false-positive rate. The threshold is
    a buffer of the model, saved in its checkpoint with the weights it belongs to.

    With labels, the test metrics are point-wise ``precision``, ``recall``, ``f1`` and
    ``auroc`` of the scores, and ``event_recall``: the share of labelled anomalies
    (runs of labelled steps) with at least one flagged step.

    Args:
        in_channels: Values per step (set from the datamodule).
        window: Steps per window (set from the datamodule).
        width: Channels of the autoencoder's hidden layer.
        bottleneck: Channels of the bottleneck (at a quarter of the window's length).
        threshold_percentile: Percentile of the validation scores used as the threshold.
        smooth: Moving-average width of the per-step scores (1: none).
        **kwargs: Optimiser and scheduler settings of :class:`~tasks.base.BaseTask`.
    """

    datamodule_needs = ("assemble", "parts")

    main_metric = "loss"

    def __init__(
        self,
        in_channels: int = 1,
        window: int = 64,
        width: int = 32,
        bottleneck: int = 8,
        threshold_percentile: float = 99.0,
        smooth: int = 5,
        **kwargs: Any,
    ) -> None:
        if not 0 < threshold_percentile < 100:
            raise ConfigError(
                f"task.threshold_percentile must be in (0, 100), got {threshold_percentile}"
            )
        if smooth < 1:
            raise ConfigError(f"task.smooth must be >= 1, got {smooth}")
        super().__init__(**kwargs)
        self.register_buffer("threshold", torch.tensor(float("inf")))
        self.example_input_array = torch.zeros(2, in_channels, window)
        self._errors: list[Tensor] = []
        self.test_report: dict[str, Any] = {}

    def configure_model(self) -> nn.Module:
        hp = self.hparams
        return ConvAutoencoder1d(hp.in_channels, hp.window, hp.width, hp.bottleneck)

    def configure_loss(self) -> nn.Module:
        return nn.MSELoss()

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({})

    def step_errors(self, windows: Tensor) -> Tensor:
        """Squared reconstruction error per window and step ``(windows, window)``."""
        return (self(windows) - windows).pow(2).mean(dim=1)

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """``error``: squared reconstruction errors ``(N, window)`` of the standardised
        windows; ``threshold``: the model's threshold per window. The datamodule's
        ``predictions_frame`` assembles them into per-step scores. Replaces
        :meth:`predict_outputs`, which this task does not use."""
        windows = batch[0] if isinstance(batch, (tuple, list)) else batch
        errors = self.step_errors(windows)
        # expand_as, not len(): an exported graph keeps its batch size free
        return {"error": errors, "threshold": self.threshold.expand_as(errors[:, 0])}

    # -- per-step scores on validation and test -------------------------------------------
    def step_outputs(self, batch: Any) -> tuple[Tensor, Tensor, Tensor, int]:
        """The shared step's outputs; on validation and test batches (the network in eval
        mode) it also keeps the per-step errors ``(windows, window)`` of the
        reconstruction for the threshold and the test scores. A hook of every batch, not
        ``validation_step``, so that step groups (several batches per Lightning step) keep
        every batch's errors."""
        output, target, loss, weight = super().step_outputs(batch)
        if not self.training:
            self._errors.append((output - target).pow(2).mean(dim=1).detach())
        return output, target, loss, weight

    def on_validation_epoch_start(self) -> None:
        self._errors = []

    def on_test_epoch_start(self) -> None:
        self._errors = []

    def _scores(self, split: str) -> tuple[np.ndarray, np.ndarray | None]:
        datamodule = self.trainer.datamodule
        raw = datamodule.assemble(split, torch.cat(self._errors))
        k = self.hparams.smooth
        score = np.convolve(raw, np.ones(k) / k, mode="same") if k > 1 else raw
        return score, datamodule.parts[split]["labels"]

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking or not self._errors or self.trainer.datamodule is None:
            return
        score, labels = self._scores("val")
        normal = score if labels is None else score[labels == 0]
        self.threshold.fill_(float(np.percentile(normal, self.hparams.threshold_percentile)))

    def on_test_epoch_end(self) -> None:
        if not self._errors or self.trainer.datamodule is None:
            return
        score, labels = self._scores("test")
        flags = score > float(self.threshold)
        report: dict[str, Any] = {"score": score, "flags": flags, "labels": labels}
        self.log("test/flagged_share", float(flags.mean()))
        if labels is not None and 0 < labels.sum() < len(labels):
            from torchmetrics.functional.classification import binary_auroc

            tp = float((flags & (labels == 1)).sum())
            precision = tp / max(float(flags.sum()), 1.0)
            recall = tp / float(labels.sum())
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            auroc = float(binary_auroc(torch.from_numpy(score), torch.from_numpy(labels)))

            events = spans(labels == 1)  # an event counts as found when any step is flagged
            event_recall = sum(bool(flags[a:b].any()) for a, b in events) / len(events)
            metrics = {
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "auroc": auroc,
                "event_recall": event_recall,
            }
            for name, value in metrics.items():
                self.log(f"test/{name}", value)
        self.test_report = report

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        report = self.test_report
        if not report:
            return []
        part = datamodule.parts["test"]
        import pandas as pd

        frame = pd.DataFrame(
            {"time": part["time"], "score": report["score"], "anomaly": report["flags"].astype(int)}
        )
        if report["labels"] is not None:
            frame["label"] = report["labels"]
        csv_path = output_dir / "anomaly_scores.csv"
        write_csv(frame, csv_path, index=False)
        png = save_series_anomalies(
            part["values"][0],
            report["score"],
            report["flags"],
            report["labels"],
            float(self.threshold),
            output_dir,
        )
        return [csv_path, png]


# -- plots -------------------------------------------------------------------------------
def spans(mask: Any) -> list[tuple[int, int]]:
    """``[start, end)`` runs of True in a boolean array."""
    import numpy as np

    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def save_series_anomalies(
    values: Any, score: Any, flags: Any, labels: Any, threshold: float, output_dir: Path
) -> Path:
    """The (first channel of the) test series with flagged regions in red and true ones in
    green, above the per-step score and the threshold."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(14, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    top.plot(values, color="tab:blue", linewidth=0.7)
    for a, b in spans(flags):
        top.axvspan(a, b, color="tab:red", alpha=0.3, linewidth=0)
    if labels is not None:
        for a, b in spans(labels == 1):
            top.axvspan(a, b, ymin=0, ymax=0.06, color="tab:green", alpha=0.9, linewidth=0)
    top.set_title("test series: flagged (red) and true anomalies (green bar)")
    bottom.plot(score, color="k", linewidth=0.7)
    bottom.axhline(threshold, color="tab:red", linestyle="--", label="threshold")
    bottom.set_yscale("log")
    bottom.set_xlabel("step")
    bottom.set_ylabel("score")
    bottom.legend()
    fig.tight_layout()
    path = output_dir / "anomalies.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
