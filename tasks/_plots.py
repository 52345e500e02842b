"""Plots and tables written into a run directory (matplotlib, headless)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from tasks._files import save_figure, write_text_atomic


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


def save_regression_plots(pred: Any, true: Any, names: list[str], output_dir: Path) -> list[Path]:
    """Predicted vs true (with the identity line) and residuals, one row per target."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 4 * len(names)), squeeze=False)
    for j, name in enumerate(names):
        p, t = pred[:, j], true[:, j]
        ax = axes[j][0]
        ax.scatter(t, p, s=10, alpha=0.6)
        low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([low, high], [low, high], "k--", linewidth=1, label="perfect")
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(f"{name}: predicted vs true (test)")
        ax.legend()
        ax = axes[j][1]
        ax.scatter(p, p - t, s=10, alpha=0.6)
        ax.axhline(0.0, color="k", linestyle="--", linewidth=1)
        ax.set_xlabel(f"predicted {name}")
        ax.set_ylabel("residual (predicted - true)")
        ax.set_title(f"{name}: residuals (test)")
        for a in axes[j]:
            a.grid(alpha=0.3)
    fig.tight_layout()
    path = output_dir / "predictions_vs_truth.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return [path]


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


def save_example_sequences(
    x: Any, true: Any, pred: Any, names: list[str], output_dir: Path, per_class: int = 6
) -> Path:
    """Test sequences by predicted class: correct ones in blue, misclassified in red
    (labelled with their true class); the first channel is drawn."""
    plt = _pyplot()
    k = len(names)
    fig, axes = plt.subplots(k, 1, figsize=(10, 2.6 * k), squeeze=False)
    for c, ax in enumerate(axes[:, 0]):
        chosen = (pred == c).nonzero().flatten()
        wrong = chosen[true[chosen] != c][: max(1, per_class // 2)]
        right = chosen[true[chosen] == c][: per_class - len(wrong)]
        for i in right.tolist():
            ax.plot(x[i, 0].numpy(), color="tab:blue", alpha=0.6, linewidth=1)
        for i in wrong.tolist():
            ax.plot(
                x[i, 0].numpy(), color="tab:red", linewidth=1.4, label=f"true {names[int(true[i])]}"
            )
        total, errors = len(chosen), int((true[chosen] != c).sum())
        ax.set_title(f"predicted {names[c]}: {total} test sequences, {errors} misclassified (red)")
        if len(wrong):
            ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    path = output_dir / "example_sequences.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


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


def save_forecast_plots(
    time: Any,
    truth: Any,
    forecast: Any,
    seasonal: Any,
    names: list[str],
    season: int,
    output_dir: Path,
) -> list[Path]:
    """``forecast.png``: per target, the whole test period (one step ahead: truth, forecast,
    seasonal naive) and a zoom on its first three seasons with full multi-step forecasts
    from a few origins; ``forecast_residuals.png``: one-step residuals over time and their
    histogram. Arrays are ``(windows, horizon, targets)``; ``time`` is each window's first
    forecast time."""
    import numpy as np

    plt = _pyplot()
    horizon = truth.shape[1]
    zoom = min(len(time), max(3 * season, 3 * horizon, 48))
    fig, axes = plt.subplots(len(names), 2, figsize=(16, 4 * len(names)), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j][0]
        ax.plot(time, truth[:, 0, j], color="k", linewidth=0.8, label="truth")
        ax.plot(time, forecast[:, 0, j], color="tab:blue", linewidth=0.8, label="forecast")
        ax.plot(
            time,
            seasonal[:, 0, j],
            color="tab:orange",
            linewidth=0.6,
            alpha=0.7,
            label=f"seasonal naive ({season})",
        )
        ax.set_title(f"{name}: test period, one step ahead")
        ax.legend(loc="upper left")
        ax = axes[j][1]
        ax.plot(time[:zoom], truth[:zoom, 0, j], color="k", linewidth=1.0, label="truth")
        if horizon == 1:
            ax.plot(time[:zoom], forecast[:zoom, 0, j], color="tab:blue", label="forecast")
        else:  # a forecast of every horizon step from origins one horizon apart
            for k, origin in enumerate(range(0, zoom - horizon + 1, horizon)):
                ax.plot(
                    time[origin : origin + horizon],
                    forecast[origin, :, j],
                    color="tab:blue",
                    label="forecast" if k == 0 else None,
                )
        ax.set_title(f"{name}: first {zoom} test steps (horizon {horizon})")
        ax.legend(loc="upper left")
        for a in axes[j]:
            a.grid(alpha=0.3)
            a.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    paths = [output_dir / "forecast.png"]
    save_figure(fig, paths[0], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(names), 2, figsize=(14, 3.5 * len(names)), squeeze=False)
    for j, name in enumerate(names):
        residual = forecast[:, 0, j] - truth[:, 0, j]
        axes[j][0].plot(time, residual, color="tab:blue", linewidth=0.7)
        axes[j][0].axhline(0.0, color="k", linewidth=0.8)
        axes[j][0].set_title(f"{name}: one-step residual (forecast - truth)")
        axes[j][0].tick_params(axis="x", labelrotation=30)
        axes[j][1].hist(residual, bins=min(50, max(10, len(residual) // 10)), color="tab:blue")
        axes[j][1].axvline(float(np.mean(residual)), color="k", linestyle="--", label="mean")
        axes[j][1].set_title(f"{name}: residual distribution")
        axes[j][1].legend()
    fig.tight_layout()
    paths.append(output_dir / "forecast_residuals.png")
    save_figure(fig, paths[1], dpi=110)
    plt.close(fig)
    return paths
