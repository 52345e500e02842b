"""Tabular problems: classification and regression of table rows with an MLP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from tasks._classify import ClassificationOutputs, label_metrics
from tasks._contract import datamodule_value
from tasks._files import save_figure
from tasks._plots import _pyplot
from tasks.base import BaseTask
from tasks.errors import ConfigError
from tasks.nets import TabularNet

LOSSES = ("mse", "mae", "huber")


class _TabularTask(BaseTask):
    """The network and weight penalties shared by the two tabular tasks."""

    def __init__(
        self,
        num_features: int = 4,
        categorical_cardinalities: Sequence[int] = (),
        hidden_sizes: Sequence[int] = (64,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        embedding_dim: int | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        penalty_layers: str = "all",
        **kwargs: Any,
    ) -> None:
        if penalty_layers not in ("all", "first"):
            raise ConfigError(
                f"task.penalty_layers must be 'all' or 'first', got {penalty_layers!r}"
            )
        if l1 < 0 or l2 < 0:
            raise ConfigError(f"weight penalties must be >= 0, got l1={l1}, l2={l2}")
        super().__init__(**kwargs)
        self.example_input_array = (
            torch.zeros(2, num_features),
            torch.zeros(2, len(categorical_cardinalities), dtype=torch.long),
        )

    @property
    def out_features(self) -> int:
        raise NotImplementedError

    def configure_model(self) -> nn.Module:
        hp = self.hparams
        return TabularNet(
            hp.num_features,
            self.out_features,
            hp.categorical_cardinalities,
            hp.embedding_dim,
            hidden_sizes=hp.hidden_sizes,
            activation=hp.activation,
            dropout=hp.dropout,
            batch_norm=hp.batch_norm,
        )

    def penalty(self) -> Tensor | float:
        """Keras-style ``kernel_regularizer``: ``l1*sum|w| + l2*sum(w**2)``, not weight decay."""
        hp = self.hparams
        if not (hp.l1 or hp.l2):
            return 0.0
        linears = self.model.mlp.linears
        chosen = linears[:1] if hp.penalty_layers == "first" else linears
        terms = []  # only non-zero coefficients: no abs/pow (nor their backward) for a zero
        for m in chosen:
            if hp.l1:
                terms.append(hp.l1 * m.weight.abs().sum())
            if hp.l2:
                terms.append(hp.l2 * m.weight.pow(2).sum())
        return sum(terms[1:], terms[0])


class TabularClassification(ClassificationOutputs, _TabularTask):
    """Binary or multiclass classification of table rows.

    Args:
        num_features: Numeric input width (set from the datamodule).
        categorical_cardinalities: Codes per embedded column (set from the datamodule).
        num_classes: Number of classes (set from the datamodule); 2 is binary.
        class_counts: Training rows per class (set from the datamodule); used for
            ``class_weights=balanced`` and the majority-class baseline.
        class_weights: ``none``, ``balanced`` (inverse class frequency), or one weight per class.
        hidden_sizes: Hidden layer widths; ``[]`` gives (multinomial) logistic regression.
        activation: Hidden activation name.
        dropout: Dropout after each hidden layer.
        batch_norm: Batch-normalise hidden layers.
        embedding_dim: Width of categorical embeddings (None: from each cardinality).
        l1: L1 weight penalty added to the training loss.
        l2: L2 weight penalty added to the training loss (``l2 * sum(w**2)``).
        penalty_layers: ``all`` dense layers, or only the ``first`` (as the reference spam net).
        **kwargs: Optimiser and scheduler settings of :class:`~tasks.base.BaseTask`.
    """

    option_hooks = {"configure_loss": ("class_weights",)}

    main_metric = "acc"

    def __init__(
        self,
        num_classes: int = 2,
        class_counts: Sequence[int] = (),
        class_weights: str | Sequence[float] = "none",
        **kwargs: Any,
    ) -> None:
        if num_classes < 2:
            raise ConfigError(
                f"classification needs at least 2 classes, got num_classes={num_classes}"
            )
        if class_counts and len(class_counts) != num_classes:
            raise ConfigError(
                f"class_counts has {len(class_counts)} entries for {num_classes} classes"
            )
        if isinstance(class_weights, str):
            if class_weights not in ("none", "balanced"):
                raise ConfigError(
                    f"task.class_weights={class_weights!r}; expected none, balanced or a list"
                )
        elif len(class_weights) != num_classes:
            raise ConfigError(
                f"task.class_weights has {len(class_weights)} entries for {num_classes} classes"
            )
        super().__init__(**kwargs)
        self.init_confusion()

    @property
    def out_features(self) -> int:
        return self.hparams.num_classes

    def _weights(self) -> Tensor | None:
        hp = self.hparams
        if isinstance(hp.class_weights, str):
            if hp.class_weights == "none":
                return None
            if not hp.class_counts:
                raise ConfigError("class_weights=balanced needs class_counts from the datamodule")
            counts = torch.tensor(hp.class_counts, dtype=torch.float).clamp(min=1)
            return counts.sum() / (len(counts) * counts)
        return torch.tensor(hp.class_weights, dtype=torch.float)

    def configure_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss(weight=self._weights())

    def configure_metrics(self) -> MetricCollection:
        return label_metrics(self.hparams.num_classes)


class TabularRegression(_TabularTask):
    """Regression of one or several numeric targets from table rows.

    The network predicts standardised targets; metrics, plots and predictions are in
    the original units (``target_center``/``target_scale`` come from the datamodule).

    Args:
        num_targets: Number of target columns (set from the datamodule).
        target_center: Training mean of each target (set from the datamodule).
        target_scale: Training standard deviation of each target (set from the datamodule).
        loss: ``mse``, ``mae`` or ``huber`` (robust to a few wild rows).
        huber_delta: Where ``huber`` turns from quadratic to linear, in standard deviations.
        **kwargs: Network and penalty settings as for :class:`TabularClassification`,
            optimiser and scheduler settings of :class:`~tasks.base.BaseTask`.
    """

    #: The target column names label the plots when the datamodule has them.
    datamodule_optional = ("targets",)

    option_hooks = {"configure_loss": ("loss", "huber_delta")}

    main_metric = "r2"

    def __init__(
        self,
        num_targets: int = 1,
        target_center: Sequence[float] = (),
        target_scale: Sequence[float] = (),
        loss: str = "mse",
        huber_delta: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r}; expected one of {LOSSES}")
        for name, values in (("target_center", target_center), ("target_scale", target_scale)):
            if values and len(values) != num_targets:
                raise ConfigError(f"{name} has {len(values)} entries for {num_targets} targets")
        super().__init__(**kwargs)
        center = torch.tensor(list(target_center) or [0.0] * num_targets, dtype=torch.float)
        scale = torch.tensor(list(target_scale) or [1.0] * num_targets, dtype=torch.float)
        self.register_buffer("target_center", center, persistent=False)
        self.register_buffer("target_scale", scale, persistent=False)
        self._test_pairs: list[tuple[Tensor, Tensor]] = []

    @property
    def out_features(self) -> int:
        return self.hparams.num_targets

    def configure_loss(self) -> nn.Module:
        loss = self.hparams.loss
        if loss == "huber":
            return nn.HuberLoss(delta=self.hparams.huber_delta)
        return nn.MSELoss() if loss == "mse" else nn.L1Loss()

    def configure_metrics(self) -> MetricCollection:
        # errors are averaged over every target value; R^2 is the mean of the per-target R^2
        n = self.hparams.num_targets
        return MetricCollection(
            {
                "mse": MeanSquaredError(),
                "rmse": MeanSquaredError(squared=False),
                "mae": MeanAbsoluteError(),
                "r2": R2Score(multioutput="uniform_average") if n > 1 else R2Score(),
            }
        )

    def forward(self, *inputs: Tensor) -> Tensor:
        """Standardised predictions: ``(N,)`` for one target, ``(N, num_targets)`` for
        several, from the numeric and categorical inputs ``(x_num, x_cat)``."""
        out = self.model(*inputs)
        return out.squeeze(-1) if self.hparams.num_targets == 1 else out

    def unscale(self, values: Tensor) -> Tensor:
        """Standardised predictions or targets back in original units."""
        if self.hparams.num_targets == 1:
            return values * self.target_scale[0] + self.target_center[0]
        return values * self.target_scale + self.target_center

    def metric_inputs(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Predictions and targets, both standardised by the datamodule, back in original
        units (:meth:`unscale`): the metrics report original units."""
        return self.unscale(output), self.unscale(target)

    def baseline_output(self, output: Tensor) -> Tensor | None:
        """Zeros: the training mean in standardised units (:meth:`metric_inputs` unscales it)."""
        return torch.zeros_like(output)  # the training mean, in standardised units

    def predict_outputs(self, output: Tensor) -> dict[str, Tensor]:
        """``pred`` in original units (:meth:`unscale` of the standardised output)."""
        return {"pred": self.unscale(output)}

    def on_test_epoch_start(self) -> None:
        self._test_pairs = []

    def record_test_outputs(self, output: Tensor, target: Tensor) -> None:
        """Keeps predictions and targets in original units for the regression plots: both
        arrive standardised and go through :meth:`metric_inputs`, as the metrics do."""
        pred, true = self.metric_inputs(output, target)
        self._test_pairs.append((pred.cpu(), true.cpu()))

    def on_test_epoch_end(self) -> None:
        # gathered on every rank (a collective), written by rank zero in save_artifacts
        k = self.hparams.num_targets
        pred = torch.cat([p for p, _ in self._test_pairs]).reshape(-1, k).to(self.device)
        true = torch.cat([t for _, t in self._test_pairs]).reshape(-1, k).to(self.device)
        self.test_predictions = (
            self.all_gather(pred).reshape(-1, k).cpu(),
            self.all_gather(true).reshape(-1, k).cpu(),
        )

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        if not self._test_pairs:
            return []
        pred, true = self.test_predictions
        names = datamodule_value(self, datamodule, "targets") or [
            f"target_{j}" for j in range(self.hparams.num_targets)
        ]
        return save_regression_plots(pred.numpy(), true.numpy(), list(names), output_dir)


# -- plots -------------------------------------------------------------------------------
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
