"""The engine's plots: headless matplotlib and the training history. Each problem's own plots
(confusion matrix, forecasts, anomalies, examples) live in its module, next to its task."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from tasks._files import save_figure


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_epoch_metrics(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """Per-epoch values from a Lightning ``CSVLogger`` file: ``{key: {epoch: value}}``.

    The logger writes one row per logging call with blanks elsewhere, so the
    last non-blank value of each key within an epoch is kept.
    """
    history: dict[str, dict[int, float]] = {}
    with open(metrics_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            epoch_text = row.get("epoch", "")
            if not epoch_text:
                continue
            epoch = int(float(epoch_text))
            for key, text in row.items():
                if key in ("epoch", "step") or text in ("", None):
                    continue
                value = float(text)
                if math.isfinite(value):
                    history.setdefault(key, {})[epoch] = value
    return history


def save_history_plot(metrics_csv: Path, path: Path, main_metric: str = "loss") -> Path | None:
    """Loss and the main metric per epoch, train vs val, as one PNG; None if nothing to plot."""
    history = read_epoch_metrics(metrics_csv)
    names = ["loss"] + ([main_metric] if main_metric != "loss" else [])
    panels = [n for n in names if f"train/{n}" in history or f"val/{n}" in history]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, name in zip(axes[0], panels):
        for stage, style in (("train", "-o"), ("val", "-s")):
            series = history.get(f"{stage}/{name}")
            if series:
                epochs = sorted(series)
                ax.plot(
                    [e + 1 for e in epochs],
                    [series[e] for e in epochs],
                    style,
                    markersize=3,
                    label=stage,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(f"{name} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


#: Classes drawn in ``confusion_matrix.png`` at most: beyond that, the most confused ones.
