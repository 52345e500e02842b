"""Time-series forecasting: ``horizon`` future steps of one or several series from the last
``lookback`` steps, judged against the naive and seasonal naive forecasts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import Tensor, nn
from torchmetrics import (
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MetricCollection,
    R2Score,
    SymmetricMeanAbsolutePercentageError,
)

from tasks._contract import datamodule_value
from tasks._files import save_figure, write_csv
from tasks._plots import _pyplot
from tasks.base import BaseTask
from tasks.errors import ConfigError
from tasks.nets.forecast import build_forecast_net

LOSSES = {"mse": nn.MSELoss, "mae": nn.L1Loss, "huber": nn.HuberLoss}
BASELINES = ("naive", "seasonal_naive")
#: Ridge penalty of the least-squares fit of the linear part, relative to each input's
#: sum of squares: enough to keep the solve stable, too little to bias it.
RIDGE = 1e-4
#: Penalties (relative, as :data:`RIDGE`) the linear part chooses from on validation
#: windows: from the plain least-squares fit to the prior forecast itself.
PENALTIES = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e4)
#: Folds of the training windows that the choice among :data:`PENALTIES` and the priors is
#: also cross-validated on (windows dealt to folds in the training loader's order).
FOLDS = 5


def _flat_batches(loader: Any) -> Any:
    """The batches of a loader, with step groups (lists of batches) opened."""
    for item in loader:
        yield from (item if isinstance(item, list) else [item])


class RelativeForecaster(nn.Module):
    """A network that forecasts relative to each window's last observed target values.

    With ``d = window targets - last values`` (``(N, lookback, targets)``) the forecast is
    ``last + linear(d) + spread * net([d / spread, other inputs])``: ``linear`` is a linear
    autoregression per target (``horizon x lookback`` weights and a bias; off with
    ``linear=False``) and ``spread`` the root mean square of ``d`` over the training
    windows, so that the network sees inputs of unit size however strong the trend.
    Nothing depends on the level itself, so a series that leaves the training range (a
    trend, a level shift) is forecast like one inside it.

    :meth:`fit` sets ``linear`` by least squares and ``spread`` from the training windows,
    and zeroes the network's output layer, so that training starts from the fitted linear
    forecast and the network learns what it misses. Both are saved in checkpoints
    (``fitted`` says the fit was done).

    Args:
        net: A forecasting network, ``(N, lookback, inputs)`` -> ``(N, horizon, targets)``.
        targets: Series forecast: the first ``targets`` inputs.
        lookback: Input steps.
        horizon: Steps forecast.
        linear: Add the linear autoregression.
    """

    def __init__(
        self, net: nn.Module, targets: int, lookback: int, horizon: int, linear: bool = True
    ) -> None:
        super().__init__()
        self.net, self.targets = net, targets
        self.linear = linear
        self.weight = nn.Parameter(torch.zeros(targets, horizon, lookback))
        self.bias = nn.Parameter(torch.zeros(targets, horizon))
        self.weight.requires_grad_(linear)
        self.bias.requires_grad_(linear)
        self.register_buffer("spread", torch.ones(targets))
        self.register_buffer("fitted", torch.tensor(False))
        #: Per target, the prior and penalty :meth:`fit` chose (not saved in checkpoints).
        self.choice: list[str] = []
        #: Whether :meth:`fit` chose on validation windows (not saved in checkpoints).
        self.validated = False

    def changes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The window's targets minus their last values ``(N, lookback, targets)``, and the
        last values ``(N, 1, targets)``."""
        last = x[:, -1:, : self.targets]
        return x[..., : self.targets] - last, last

    def forward(self, x: Tensor) -> Tensor:
        d, last = self.changes(x)
        net = self.net(torch.cat([d / self.spread, x[..., self.targets :]], dim=-1))
        out = last + net * self.spread
        if self.linear:
            out = out + torch.einsum("nlk,khl->nhk", d, self.weight) + self.bias.T
        return out

    def _moments(self, batches: Any, folds: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sums over the windows of ``batches``, one set per fold (window ``i`` of the
        stream goes to fold ``i % folds``): the Gram matrices of ``[d, 1]``
        ``(folds, targets, lookback + 1, lookback + 1)``, their products with the target
        changes ``(folds, targets, lookback + 1, horizon)``, the squares of ``d`` and the
        squares of the changes ``(folds, targets)``."""
        k, lookback, horizon = self.targets, self.weight.shape[-1], self.weight.shape[1]
        gram = torch.zeros(folds, k, lookback + 1, lookback + 1, dtype=torch.float64)
        cross = torch.zeros(folds, k, lookback + 1, horizon, dtype=torch.float64)
        square = torch.zeros(folds, k, dtype=torch.float64)
        changes = torch.zeros(folds, k, dtype=torch.float64)
        seen = 0
        for batch in batches:
            x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else batch[:2]
            d, last = self.changes(x.double().cpu())
            change = y.double().cpu() - last  # (N, horizon, k)
            design = torch.cat([d, torch.ones_like(d[:, :1])], dim=1)  # (N, lookback + 1, k)
            fold = (seen + torch.arange(len(x))) % folds
            seen += len(x)
            for f in fold.unique().tolist():
                rows = fold == f
                part, moved = design[rows], change[rows]
                gram[f] += torch.einsum("nik,njk->kij", part, part)
                cross[f] += torch.einsum("nik,nhk->kih", part, moved)
                square[f] += (d[rows] ** 2).sum(dim=(0, 1))
                changes[f] += (moved**2).sum(dim=(0, 1))
        return gram, cross, square, changes

    def _priors(self, season: int) -> list[tuple[str, Tensor]]:
        """Weights the linear part is shrunk towards: none (the naive forecast: no change);
        when a season fits in the window, the seasonal naive forecast (the change to the
        value one season before each forecast step); when two or more fit, the seasonal
        mean (the mean of the values whole seasons before each step that the window holds:
        last year's value with less of its noise)."""
        k, horizon, lookback = self.weight.shape
        priors = [("naive", torch.zeros(k, lookback, horizon, dtype=torch.float64))]
        if season <= 1:
            return priors
        seasonal = torch.zeros(k, lookback, horizon, dtype=torch.float64)
        mean = torch.zeros_like(seasonal)
        for h in range(horizon):
            j = lookback + h - season * (1 + h // season)  # that value's window position
            if not 0 <= j < lookback:
                return priors
            seasonal[:, j, h] = 1.0
            back = torch.arange(j, -1, -season)  # and the same season further back
            mean[:, back, h] = 1.0 / len(back)
        priors.append(("seasonal_naive", seasonal))
        if (mean > 0).sum(dim=1).min() > 1:
            priors.append(("seasonal_mean", mean))
        return priors

    @torch.no_grad()
    def fit(
        self, batches: Any, reduce: Any = None, val_batches: Any = None, season: int = 1
    ) -> None:
        """Least-squares linear part and ``spread`` from training batches ``{"x", "y"}``
        (or ``(x, y)``); ``reduce`` sums a tensor over processes (distributed training).

        With ``val_batches`` the linear part's ridge penalty, and the forecast it shrinks
        towards (naive; with ``season``, seasonal naive or the seasonal mean), are chosen
        per target among :data:`PENALTIES` by the squared error on those windows plus a
        :data:`FOLDS`-fold cross-validation on the training windows (valid for a linear
        autoregression; it adds evidence where the validation period is short): few
        training windows (a short series) give a strong penalty, so the forecast stays near
        the better prior instead of fitting noise with ``lookback`` weights; many give the
        plain least-squares fit. Without them the penalty is :data:`RIDGE`, towards naive.
        """

        def summed(*tensors: Tensor) -> tuple[Tensor, ...]:
            if reduce is None:
                return tensors
            return tuple(reduce(t.to(self.spread.device)).cpu() for t in tensors)

        validate = self.linear and val_batches is not None
        folds = FOLDS if validate else 1
        fgram, fcross, fsquare, fchanges = summed(*self._moments(batches, folds))
        gram, cross, square = fgram.sum(0), fcross.sum(0), fsquare.sum(0)
        rows = gram[:, -1, -1]  # windows seen (the bias column's square sum)
        if float(rows.min()) < 1:
            return
        lookback = self.weight.shape[-1]
        if self.linear:
            diagonal = gram.diagonal(dim1=1, dim2=2)  # (k, lookback + 1)
            floor = 1e-9 * diagonal.mean(dim=1, keepdim=True)
            # every weight is penalised relative to its input's sum of squares; the bias
            # (the mean change: a trend, or the drift beside a seasonal prior) is free, or,
            # without drift, held towards 0 by the same penalty
            scale = torch.cat([diagonal[:, :-1], torch.zeros_like(diagonal[:, -1:])], dim=1)
            if validate:
                vgram, vcross, _, vchanges = summed(*self._moments(val_batches))
                vgram, vcross, vchanges = vgram[0], vcross[0], vchanges[0]
                validate = float(vgram[:, -1, -1].min()) >= 1
            candidates = [
                (name, prior, penalty, drift)
                for name, prior in (self._priors(season) if validate else self._priors(1))
                for penalty in (PENALTIES if validate else (RIDGE,))
                for drift in ((True, False) if validate else (True,))
            ]
            self.validated = validate
            best_error = torch.full((len(rows),), float("inf"), dtype=torch.float64)
            best = torch.zeros_like(cross)
            self.choice = [f"naive with drift, penalty {RIDGE:g}"] * len(rows)
            for name, prior, penalty, drift in candidates:  # without validation: one
                anchor = torch.cat([prior, torch.zeros_like(prior[:, :1])], dim=1)
                ridge = torch.diag_embed(penalty * (scale if drift else diagonal) + floor)
                solution = torch.linalg.solve(gram + ridge, cross + ridge @ anchor)
                error = torch.zeros_like(best_error)
                if validate:  # squared errors on held-out windows, from their sums
                    error = _squared_error(solution, vgram, vcross, vchanges)
                    for f in range(folds):  # each training fold, fitted without it
                        rest = gram - fgram[f] + ridge
                        held = torch.linalg.solve(rest, cross - fcross[f] + ridge @ anchor)
                        error += _squared_error(held, fgram[f], fcross[f], fchanges[f])
                better = error < best_error
                best[better] = solution[better]
                best_error = torch.where(better, error, best_error)
                for target in better.nonzero().flatten().tolist():
                    self.choice[target] = (
                        f"{name}{' with drift' if drift else ''}, penalty {penalty:g}"
                    )
            self.weight.copy_(best[:, :-1].transpose(1, 2))
            self.bias.copy_(best[:, -1])
        spread = (square / (rows * lookback)).sqrt()
        self.spread.copy_(torch.where(spread > 0, spread, torch.ones_like(spread)))
        heads = [
            m for m in getattr(self.net, "head", self.net).modules() if isinstance(m, nn.Linear)
        ]
        if heads:  # the network adds nothing until it has learnt something
            nn.init.zeros_(heads[-1].weight)
            nn.init.zeros_(heads[-1].bias)
        self.fitted.fill_(True)


def _squared_error(solution: Tensor, gram: Tensor, cross: Tensor, changes: Tensor) -> Tensor:
    """Per target, the summed squared error of the linear ``solution`` on the windows whose
    sums are ``gram``, ``cross`` and ``changes`` (as :meth:`RelativeForecaster._moments`
    gives them): ``|c|^2 - 2 w.X'c + w.X'X w``."""
    return (
        changes
        - 2 * (solution * cross).sum(dim=(1, 2))
        + (solution * (gram @ solution)).sum(dim=(1, 2))
    )


class Forecasting(BaseTask):
    """Direct multi-output forecasting of windows ``(N, lookback, inputs)``.

    Networks (``network``): ``lstm`` (the reference: LSTM on the window, last hidden state
    -> dense), ``gru``, ``mlp`` (the flattened window) and ``cnn`` (dilated causal 1D
    CNN), sized by ``hidden_size``/``num_layers`` (``network_options`` for the rest).

    The network works in the datamodule's scaled units; metrics, baselines, plots and
    predictions are in original units. The targets are the first ``num_targets`` inputs.

    With ``relative`` (the ``forecast_csv`` preset's default) every window is seen
    relative to its last observed target values and the forecast is that value plus a
    predicted change (:class:`RelativeForecaster`): a linear autoregression on the
    window's changes, fitted by least squares on the training windows when training
    starts (``linear``), plus the network, which starts at zero and learns what the linear
    part misses. Nothing depends on the level, so trends and level shifts are forecast
    beyond the training range, where a network on standardised levels cannot go. Without
    it the network maps the standardised window to standardised levels; ``residual``
    then adds its output to the last value (the network still sees levels).

    Test metrics (``test/*``): ``mse``, ``rmse``, ``mae``, ``mape`` and ``smape`` (as
    fractions: 0.05 is 5 %), ``r2`` (mean over targets), over every test window and
    horizon step. The same metrics of the ``naive`` (last value) and ``seasonal_naive``
    (one season back) forecasts on the same windows are logged as
    ``baseline/naive_*`` and ``baseline/seasonal_naive_*``; ``test/skill`` is
    ``1 - mse / mse(seasonal naive)`` (> 0: the model beats seasonal naive) and the run
    summary says in words whether the model beats it.

    Args:
        num_inputs: Values per input step (set from the datamodule).
        num_targets: Series forecast (set from the datamodule).
        lookback: Input steps (set from the datamodule).
        horizon: Steps forecast (set from the datamodule).
        target_center: Scaling centre per target (set from the datamodule).
        target_scale: Scaling scale per target (set from the datamodule).
        target_log: Targets were log-transformed before scaling (set from the datamodule).
        network: ``lstm``, ``gru``, ``mlp`` or ``cnn``.
        hidden_size: Hidden width (RNN units, CNN channels, MLP width).
        num_layers: RNN layers, CNN layers or MLP hidden layers.
        dropout: Dropout before the output layer (and between RNN layers).
        network_options: Extra network arguments, e.g. ``{hidden_sizes: [256, 64]}``.
        residual: Add the network's output to the last observed value (without
            ``relative``, which implies it).
        relative: Forecast relative to each window's last values (:class:`RelativeForecaster`).
        linear: With ``relative``, add the least-squares linear autoregression.
        loss: ``mse``, ``mae`` or ``huber`` (on scaled values).
        **kwargs: Optimiser and scheduler settings of :class:`~tasks.base.BaseTask`.
    """

    datamodule_needs = ("time", "targets")
    datamodule_optional = ("season",)

    option_hooks = {"configure_loss": ("loss",)}

    main_metric = "r2"

    def __init__(
        self,
        num_inputs: int = 1,
        num_targets: int = 1,
        lookback: int = 24,
        horizon: int = 1,
        target_center: Sequence[float] = (),
        target_scale: Sequence[float] = (),
        target_log: bool = False,
        network: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        network_options: Mapping[str, Any] | None = None,
        residual: bool = False,
        relative: bool = False,
        linear: bool = True,
        loss: str = "mse",
        **kwargs: Any,
    ) -> None:
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r}; expected one of {list(LOSSES)}")
        if num_targets > num_inputs:
            raise ConfigError(f"num_targets={num_targets} exceeds num_inputs={num_inputs}")
        for name, values in (("target_center", target_center), ("target_scale", target_scale)):
            if values and len(values) != num_targets:
                raise ConfigError(f"{name} has {len(values)} entries for {num_targets} targets")
        super().__init__(**kwargs)
        center = list(target_center) or [0.0] * num_targets
        scale = list(target_scale) or [1.0] * num_targets
        self.register_buffer("target_center", torch.tensor(center), persistent=False)
        self.register_buffer("target_scale", torch.tensor(scale), persistent=False)
        metrics = self.configure_metrics()
        self.baselines = nn.ModuleDict(
            {name: metrics.clone(prefix=f"baseline/{name}_") for name in BASELINES}
        )
        self.example_input_array = torch.zeros(2, lookback, num_inputs)
        self._test_rows: list[dict[str, Tensor]] = []
        self.test_table: dict[str, Tensor] = {}
        self.notes: list[str] = []

    def configure_model(self) -> nn.Module:
        hp = self.hparams
        net = self._net()
        if hp.relative:
            return RelativeForecaster(net, hp.num_targets, hp.lookback, hp.horizon, hp.linear)
        return net

    def _net(self) -> nn.Module:
        hp = self.hparams
        return build_forecast_net(
            hp.network,
            hp.num_inputs,
            hp.horizon,
            hp.num_targets,
            hp.lookback,
            hp.hidden_size,
            hp.num_layers,
            hp.dropout,
            **dict(hp.network_options or {}),
        )

    def configure_loss(self) -> nn.Module:
        return LOSSES[self.hparams.loss]()

    def configure_metrics(self) -> MetricCollection:
        k = self.hparams.num_targets
        return MetricCollection(
            {
                "mse": MeanSquaredError(),
                "rmse": MeanSquaredError(squared=False),
                "mae": MeanAbsoluteError(),
                "mape": MeanAbsolutePercentageError(),
                "smape": SymmetricMeanAbsolutePercentageError(),
                "r2": R2Score(multioutput="uniform_average") if k > 1 else R2Score(),
            }
        )

    # -- units ---------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Scaled forecasts ``(N, horizon, num_targets)`` of windows ``(N, lookback,
        num_inputs)``; with ``residual`` (and not ``relative``, whose model adds them
        itself), the network's output plus the last observed (scaled) target values."""
        hp = self.hparams
        out = self.model(x)
        if hp.residual and not hp.relative:
            out = out + x[:, -1:, : hp.num_targets]
        return out

    def unscale(self, values: Tensor) -> Tensor:
        """Scaled ``(..., targets)`` values back in original units."""
        out = values * self.target_scale + self.target_center
        return out.exp() if self.hparams.target_log else out

    def metric_inputs(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Forecasts and truths, both scaled by the datamodule, in original units
        (:meth:`unscale`), flattened over windows and horizon steps: ``(N * horizon,
        num_targets)``, or ``(N * horizon,)`` for one target."""
        k = self.hparams.num_targets
        pred, true = self.unscale(output.float()), self.unscale(target.float())
        shape = (-1, k) if k > 1 else (-1,)
        return pred.reshape(shape), true.reshape(shape)

    def predict_outputs(self, output: Tensor) -> dict[str, Tensor]:
        """``pred``: forecasts ``(N, horizon, num_targets)`` in original units."""
        return {"pred": self.unscale(output.float())}

    # -- steps ---------------------------------------------------------------------------
    def model_step(self, batch: Any, stage: str) -> Tensor:
        """Takes the dict batches of the datamodule (``x``, ``y``; test batches also
        ``naive``, ``seasonal_naive`` and ``start``) as ``(x, y)``. On test batches it also
        updates the baselines' metrics through :meth:`metric_inputs` (so in original units;
        :meth:`baseline_output` is not used) and keeps the rows for the test table."""
        if stage == "test":
            y = batch["y"]
            for name, metrics in self.baselines.items():
                metrics.update(*self.metric_inputs(batch[name], y))
                self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=len(y))
            self._test_rows.append({key: batch[key] for key in ("start", "y", *BASELINES)})
        return super().model_step((batch["x"], batch["y"]), stage)

    def record_test_outputs(self, output: Tensor, target: Tensor) -> None:
        """Keeps the raw (scaled) forecasts beside the batch's rows; ``on_test_epoch_end``
        unscales the gathered table for ``test_forecasts.csv`` and the plots."""
        self._test_rows[-1]["pred"] = output

    def on_fit_start(self) -> None:
        """With ``relative``: fit the linear part and the input spread on the training
        windows (:meth:`RelativeForecaster.fit`) when training starts from scratch; a
        resumed run keeps those of its checkpoint."""
        super().on_fit_start()
        model, trainer = self.model, self.trainer
        if not isinstance(model, RelativeForecaster) or bool(model.fitted):
            return
        datamodule = trainer.datamodule
        if datamodule is None or trainer.global_step > 0:
            return
        reduce = None
        if trainer.world_size > 1:
            reduce = lambda t: trainer.strategy.reduce(t, reduce_op="sum")  # noqa: E731
        loader = datamodule.train_dataloader()
        if getattr(loader, "epoch_rows", None) is not None:
            loader.epoch_rows = None  # every training window, not one budgeted epoch's draw
        val = None
        if getattr(datamodule, "val_data", None) is not None:
            val = _flat_batches(datamodule.val_dataloader())
        season = int(datamodule_value(self, datamodule, "season", 1) or 1)
        model.fit(_flat_batches(loader), reduce, val_batches=val, season=season)
        self._score_start = val is not None and trainer.limit_val_batches == 1.0

    def on_train_start(self) -> None:
        """A freshly fitted linear part is the first candidate for the best checkpoint: its
        validation scores are computed as a validation epoch computes them and given to
        the checkpoint and early-stopping callbacks before any step, so the network must
        beat the forecast it starts from on the validation windows to be kept (on a short
        series an LSTM trained on a hundred windows often learns noise). Runs after the
        callbacks' own ``on_train_start`` (which resets what they hold)."""
        super().on_train_start()
        if not getattr(self, "_score_start", False):
            return
        self._score_start = False
        trainer = self.trainer
        scores = self._start_scores(trainer)
        monitor = getattr(trainer.checkpoint_callback, "monitor", None)
        if monitor not in scores:
            return
        self.start_score = float(scores[monitor])
        candidates = {**scores, "epoch": torch.tensor(0), "step": torch.tensor(0)}
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor == monitor:
                callback._save_topk_checkpoint(trainer, candidates)
            elif isinstance(callback, EarlyStopping) and callback.monitor == monitor:
                callback._evaluate_stopping_criteria(scores[monitor].squeeze())

    @torch.no_grad()
    def _start_scores(self, trainer: L.Trainer) -> dict[str, Tensor]:
        """``val/loss`` and the validation metrics of the model as it is, over every
        validation batch, accumulated and synchronised as a validation epoch does."""
        was_training = self.training
        self.eval()
        try:
            with trainer.precision_plugin.val_step_context():
                for batch in _flat_batches(trainer.datamodule.val_dataloader()):
                    self.model_step(trainer.strategy.batch_to_device(batch), "val")
            scores = {"val/loss": self.val_loss.compute(), **self.val_metrics.compute()}
        finally:
            self.val_loss.reset()
            self.val_metrics.reset()
            self.train(was_training)
        return {k: v.detach() for k, v in scores.items()}

    def on_test_epoch_start(self) -> None:
        self._test_rows = []
        self.notes = []

    def on_test_epoch_end(self) -> None:
        mse = float(self.test_metrics["mse"].compute())
        seasonal = float(self.baselines["seasonal_naive"]["mse"].compute())
        naive = float(self.baselines["naive"]["mse"].compute())
        skill = 1.0 - mse / seasonal if seasonal > 0 else float("nan")
        self.log("test/skill", skill)
        self.log("test/skill_vs_naive", 1.0 - mse / naive if naive > 0 else float("nan"))
        verdict = "beats" if skill > 0 else "does NOT beat"
        self.notes = [
            f"The model {verdict} the seasonal naive forecast on the test windows: "
            f"MSE {mse:.4g} vs {seasonal:.4g} (skill {skill:+.3f}); naive MSE {naive:.4g}."
        ]
        if not self._test_rows:
            return
        # gathered on every rank (a collective), deduplicated and ordered by window start
        table = {
            key: torch.cat([row[key] for row in self._test_rows])
            for key in ("start", "pred", "y", *BASELINES)
        }
        gathered = {key: self.all_gather(value) for key, value in table.items()}
        if self.trainer.world_size > 1:
            gathered = {key: value.flatten(0, 1) for key, value in gathered.items()}
        start = gathered["start"].cpu()
        order = torch.argsort(start)
        keep = torch.ones(len(order), dtype=torch.bool)
        keep[1:] = start[order][1:] != start[order][:-1]
        order = order[keep]
        self.test_table = {"start": start[order]}
        for key in ("pred", "y", *BASELINES):
            self.test_table[key] = self.unscale(gathered[key][order].float()).cpu()

    def summary_notes(self) -> list[str]:
        choice = getattr(self.model, "choice", None)
        if not choice:
            return list(self.notes)
        chosen = "; ".join(
            f"towards {c}" if len(choice) == 1 else f"target {i}: towards {c}"
            for i, c in enumerate(choice)
        )
        how = (
            f"chosen on the validation windows and {FOLDS} folds of the training windows"
            if getattr(self.model, "validated", False)
            else "fitted without validation windows to choose on"
        )
        notes = [*self.notes, f"linear part {how}: {chosen}"]
        start = getattr(self, "start_score", None)
        callback = getattr(self._trainer, "checkpoint_callback", None) if self._trainer else None
        if start is not None and isinstance(callback, ModelCheckpoint):
            best = callback.best_model_score
            if best is not None and float(best) == start:
                notes.append(
                    f"the network never beat the fitted linear part on the validation windows "
                    f"({callback.monitor} {start:.4g} before training): the linear part alone "
                    "is the model tested and saved (best epoch 0)"
                )
        return notes

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        if not self.test_table:
            return []
        import pandas as pd

        table = self.test_table
        lookback = self.hparams.lookback
        time = datamodule.time
        names = datamodule.targets or [f"target_{j}" for j in range(self.hparams.num_targets)]
        origin = (table["start"] + lookback).numpy()  # first forecast step of each window
        horizon = table["pred"].shape[1]
        rows = []
        for h in range(horizon):
            for j, name in enumerate(names):
                rows.append(
                    pd.DataFrame(
                        {
                            "time": time[origin + h].astype(str),
                            "origin": time[origin - 1].astype(str),
                            "step": h + 1,
                            "target": name,
                            "truth": table["y"][:, h, j].numpy(),
                            "forecast": table["pred"][:, h, j].numpy(),
                            "naive": table["naive"][:, h, j].numpy(),
                            "seasonal_naive": table["seasonal_naive"][:, h, j].numpy(),
                        }
                    )
                )
        frame = pd.concat(rows, ignore_index=True)
        csv = output_dir / "test_forecasts.csv"
        write_csv(frame, csv, index=False)
        pngs = save_forecast_plots(
            time[origin],
            table["y"].numpy(),
            table["pred"].numpy(),
            table["seasonal_naive"].numpy(),
            names,
            season=datamodule_value(self, datamodule, "season", 1),
            output_dir=output_dir,
        )
        return [csv, *pngs]


# -- plots -------------------------------------------------------------------------------
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
