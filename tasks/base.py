"""The thin base every task (LightningModule) builds on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from tasks._contract import warn_shadowed_arguments
from tasks._grouped import PLATEAU_MONITOR, GroupedSteps
from tasks.errors import ConfigError

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
SCHEDULERS = ("none", "cosine", "step", "plateau", "onecycle")
STAGES = ("train", "val", "test")
__all__ = ["PLATEAU_MONITOR", "BaseTask", "TaskCore"]  # PLATEAU_MONITOR: its old import path


def separate_states(metrics: MetricCollection) -> MetricCollection:
    """``metrics`` with every metric keeping its own state.

    torchmetrics' compute groups (on by default) merge metrics whose states are equal after
    the first update and share one state from then on. Equal once is not equal always
    (top-5 and macro accuracy agree on a perfect first batch), so a merged metric would
    silently report another's value.
    """
    return MetricCollection(
        dict(metrics.items(keep_base=True, copy_state=False)),
        prefix=metrics.prefix,
        postfix=metrics.postfix,
        compute_groups=False,
    )


def build_optimizers(task: TaskCore) -> Any:
    """The optimizer (and learning-rate schedule) ``task.hparams`` name, in the form
    ``configure_optimizers`` returns."""
    hp = task.hparams
    kwargs: dict[str, Any] = {"lr": hp.lr, "weight_decay": hp.weight_decay}
    if hp.optimizer in ("sgd", "rmsprop"):
        kwargs["momentum"] = hp.momentum
    optimizer = OPTIMIZERS[hp.optimizer](task.parameters(), **kwargs)
    if hp.scheduler == "none":
        return optimizer
    sched = torch.optim.lr_scheduler
    if hp.scheduler == "cosine":
        scheduler = sched.CosineAnnealingLR(optimizer, T_max=max(1, task.trainer.max_epochs or 1))
    elif hp.scheduler == "step":
        scheduler = sched.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
    elif hp.scheduler == "plateau":
        scheduler = sched.ReduceLROnPlateau(optimizer, factor=hp.gamma, patience=hp.patience)
        # under manual optimization (step groups) Lightning ignores "monitor": the steps
        # are taken, and the plateau stepped on PLATEAU_MONITOR, by GroupedSteps
        monitor = {"monitor": PLATEAU_MONITOR} if task.automatic_optimization else {}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **monitor}}
    else:  # onecycle steps every batch
        scheduler = sched.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=task.optimizer_steps())
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
    return {"optimizer": optimizer, "lr_scheduler": scheduler}


class TaskCore(L.LightningModule):
    """A task without step groups: hyperparameters, one step for every stage, metrics,
    optimizers by name, and the hooks subclasses override. Tasks subclass :class:`BaseTask`
    (this with :class:`~tasks._grouped.GroupedSteps` on top), which documents the arguments.
    """

    #: Metric (without its stage prefix) drawn next to the loss in history plots.
    main_metric: str = "loss"
    #: Constructor arguments a subclass re-declares on purpose with a base class's meaning.
    shared_arguments: tuple[str, ...] = ()
    #: Which constructor arguments each ``configure_*`` hook of this class reads: a subclass
    #: that replaces the hook (without calling ``super()``'s) ignores them, and setting one
    #: is refused (:func:`tasks._contract.ignored_options`).
    option_hooks: dict[str, tuple[str, ...]] = {}
    #: What this task reads from its datamodule beyond ``data_facts()``: attributes a
    #: datamodule must have after ``setup("fit")`` to serve it (the conformance kit checks
    #: them, :func:`tasks._contract.missing_datamodule_needs`). Attributes read only if
    #: present are in ``datamodule_optional``.
    datamodule_needs: tuple[str, ...] = ()
    #: Attributes this task reads from its datamodule when they are there (names for plots,
    #: texts for the mistakes table...), through :func:`tasks._contract.datamodule_value`,
    #: which refuses undeclared reads. Mixins and subclasses add their own.
    datamodule_optional: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        warn_shadowed_arguments(cls)

    def __init__(
        self,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        scheduler: str = "none",
        step_size: int = 10,
        gamma: float = 0.1,
        patience: int = 5,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"task.optimizer={optimizer!r} is not supported; "
                f"expected one of {sorted(OPTIMIZERS)}"
            )
        if scheduler not in SCHEDULERS:
            raise ConfigError(
                f"task.scheduler={scheduler!r} is not supported; expected one of {list(SCHEDULERS)}"
            )
        if lr <= 0:
            raise ConfigError(f"task.lr must be positive, got {lr}")
        self.save_hyperparameters()
        self.model = self.configure_model()
        self.criterion = self.configure_loss()
        metrics = separate_states(self.configure_metrics())
        # Training steps stay cheap: only the main metric (drawn in history.png) is tracked
        # while training, and training values are logged once per epoch, not every step.
        train = {name: metrics[name].clone() for name in metrics if name == self.main_metric}
        self.train_metrics = MetricCollection(train, prefix="train/", compute_groups=False)
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.baseline_metrics = metrics.clone(prefix="baseline/")

    # -- what subclasses provide -------------------------------------------------------
    def configure_model(self) -> nn.Module:
        """Build the network (a plain ``nn.Module``) from ``self.hparams``.

        Returns:
            The network, kept as ``self.model``; the default :meth:`forward` calls it with
            the batch's inputs.

        Called by:
            ``BaseTask.__init__``, once, after ``save_hyperparameters()`` and before
            :meth:`configure_loss` and :meth:`configure_metrics`. Required: the default
            raises ``NotImplementedError``.

        """
        raise NotImplementedError(f"{type(self).__name__} must implement configure_model()")

    def configure_loss(self) -> nn.Module:
        """The training criterion, ``criterion(output, target)``; default ``nn.MSELoss()``.

        Returns:
            A module kept as ``self.criterion``. :meth:`step_outputs` applies it to the raw
            network output and the batch's target, both in the units the datamodule delivers
            (e.g. standardised regression targets).

        Called by:
            ``BaseTask.__init__``, once, after :meth:`configure_model`.

        """
        return nn.MSELoss()

    def configure_metrics(self) -> MetricCollection:
        """The metrics, named without a stage prefix (``acc``, ``r2``); default none.

        Returns:
            A ``torchmetrics.MetricCollection``, updated with what :meth:`metric_inputs`
            returns. Every metric keeps its own state (compute groups are off), and the
            collection is cloned for ``val/``, ``test/`` and ``baseline/``; training tracks
            only the metric named by ``main_metric``.

        Called by:
            ``BaseTask.__init__``, once, after :meth:`configure_loss`.

        """
        return MetricCollection({})

    def metric_inputs(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """What the metrics are updated with; classification passes probabilities.

        Args:
            output: The raw network output of the batch, detached, as :meth:`step_outputs`
                returns it (logits, standardised values), or the output of
                :meth:`baseline_output` for the batch.
            target: The batch's target as the datamodule delivers it (class ids,
                standardised values).

        Returns:
            ``(preds, target)`` for ``MetricCollection.update``, in the units the metrics
            report (tabular regression and forecasting unscale both here). Under
            ``steps_per_execution`` the pairs of a step group's batches are concatenated
            along the first dimension before one update.

        Called by:
            :meth:`model_step`, for every training, validation and test batch (the
            ``train/``, ``val/`` and ``test/`` metrics), and once more per test batch for
            what :meth:`baseline_output` returned (``baseline/``).

        """
        return output, target

    def predict_outputs(self, output: Tensor) -> dict[str, Tensor]:
        """Per-row prediction columns from the network output.

        Args:
            output: The raw network output of one predict batch, ``self(*inputs)``.

        Returns:
            Named tensors with one row per input row, in the units users read (class
            indices and probabilities, original target units). They are concatenated over
            batches and handed to the datamodule's ``predictions_frame``.

        Called by:
            ``predict_step``, once per predict batch (``mode=predict``, the conformance
            kit); never in training, validation or test.

        """
        return {"pred": output}

    def baseline_output(self, output: Tensor) -> Tensor | None:
        """What a trivial model (majority class, training mean) would output for this batch.

        Its test metrics are logged as ``baseline/*`` beside ``test/*`` so that a user sees
        whether the network learnt anything. None means no baseline.

        Args:
            output: The raw network output of the test batch, detached (for its shape,
                dtype and device).

        Returns:
            A tensor shaped like ``output`` and in the network's units (log-prior logits;
            zeros for the training mean of standardised targets): it goes through
            :meth:`metric_inputs` like the network output. None: no baseline.

        Called by:
            :meth:`model_step`, once per test batch (never in training or validation),
            after :meth:`record_test_outputs`.

        """
        return None

    def record_test_outputs(self, output: Tensor, target: Tensor) -> None:
        """Accumulate test-only state (e.g. a confusion matrix) for :meth:`save_artifacts`.

        Args:
            output: The raw network output of the test batch, detached, as
                :meth:`step_outputs` returns it: logits or standardised values, not what
                :meth:`metric_inputs` or :meth:`predict_outputs` make of it. Call those for
                probabilities or original units (``TabularRegression`` calls
                ``metric_inputs``) instead of converting it a second way.
            target: The batch's target as the datamodule delivers it (e.g. standardised).

        Called by:
            :meth:`model_step`, once per test batch, after the test metrics are updated and
            before :meth:`baseline_output`. Reset the state in ``on_test_epoch_start`` and
            gather it across processes in ``on_test_epoch_end`` (it runs on every process;
            :meth:`save_artifacts` on rank zero only).

        """

    def summary_notes(self) -> list[str]:
        """Sentences about the test result for the run summary (``notes``) and the log,
        e.g. whether the model beats its baseline; called after testing.

        Returns:
            Sentences, stored under ``notes`` in ``summary.json`` and logged.

        Called by:
            The runner, once after testing (``mode=train``, after testing the best
            checkpoint; ``mode=test``), on every process, before :meth:`save_artifacts`.

        """
        return []

    def penalty(self) -> Tensor | float:
        """Extra regularisation added to the training loss (weight penalties).

        Returns:
            A scalar tensor (or 0.0) added to the loss of every training batch:
            ``train/loss`` includes it, ``val/loss`` and ``test/loss`` do not.

        Called by:
            :meth:`model_step`, once per training batch, after :meth:`step_outputs`.

        """
        return 0.0

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        """Write task-specific test artefacts (plots, tables) after testing; rank zero only.

        Args:
            output_dir: The run folder.
            datamodule: The run's datamodule, set up: names of classes, targets and times,
                and the test data.

        Returns:
            The paths written, listed as artefacts in ``summary.json``.

        Called by:
            The runner, once after testing and :meth:`summary_notes`, on rank zero only,
            with what ``on_test_epoch_end`` gathered. The conformance kit does not call it.

        """
        return []

    def augment_batch(self, batch: Any) -> Any:
        """A changed copy of the training batch ``(inputs, ...)``, on its device; called
        for training batches only when the ``augment`` hyperparameter is set.

        Args:
            batch: A training batch ``(*inputs, target)`` as the datamodule delivers it,
                already on the training device (e.g. uint8 images, before :meth:`forward`
                normalises them).

        Returns:
            A batch of the same structure; the target usually unchanged.

        Called by:
            ``on_after_batch_transfer``, once per training batch (per batch of a step
            group too), when :meth:`augmentable` says so; never for validation, test or
            predict batches.

        """
        return batch

    def augmentable(self, batch: Any) -> bool:
        """Whether ``batch`` is a training batch ``(inputs, ...)`` that this task's
        ``augment`` hyperparameter asks to change (never validation, test or predict).

        Args:
            batch: A batch on its device, or the model summary's example input.

        Called by:
            ``on_after_batch_transfer``, for every batch, to decide whether to call
            :meth:`augment_batch`.

        """
        return bool(
            self.hparams.get("augment")
            and self._trainer is not None
            and self.trainer.training
            and isinstance(batch, (tuple, list))  # not the model summary's example input
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.augment_batch(batch) if self.augmentable(batch) else batch

    # -- the one shared step -------------------------------------------------------------
    def forward(self, *inputs: Tensor) -> Tensor:
        """The network output for a batch's inputs; by default ``self.model(*inputs)``.

        Args:
            *inputs: The batch without its target, on the task's device: ``batch[:-1]`` of a
                training, validation or test batch ``(*inputs, target)``, or the whole
                predict batch.

        Called by:
            :meth:`step_outputs` for every training, validation and test batch,
            ``predict_step`` for every predict batch (the result goes to
            :meth:`predict_outputs`), and Lightning's model summary with
            ``example_input_array``. Preprocessing done here (``ImageClassification``
            normalises uint8 pixels) travels with the checkpoint.

        """
        return self.model(*inputs)

    def step_outputs(self, batch: Any) -> tuple[Tensor, Tensor, Tensor, int]:
        """Network output, target, loss and weight of one batch ``(*inputs, target)``.

        The weight is what the loss is a mean over (rows here; a language model counts
        characters), so epoch means weight every batch by it.

        Args:
            batch: One batch as the datamodule's loader yields it, on the task's device
                (after :meth:`augment_batch` for training batches).

        Returns:
            ``(output, target, loss, weight)``: the raw network output ``self(*inputs)``,
            the batch's target, ``self.criterion(output, target)`` and the weight.

        Called by:
            :meth:`model_step`, once per batch of every stage (train, validation, test).

        """
        *inputs, y = batch
        output = self(*inputs)
        return output, y, self.criterion(output, y), len(y)

    def model_step(self, batch: Any, stage: str) -> Tensor:
        """Loss and metrics of one batch, for every stage.

        A test batch goes through :meth:`step_outputs`, then the test metrics are updated
        with ``metric_inputs(output, target)``, then ``record_test_outputs(output,
        target)`` and ``baseline_output(output)`` are called with the same raw output, and
        a baseline that is not None updates the baseline metrics through
        ``metric_inputs(baseline, target)``. Training adds :meth:`penalty` to the loss;
        training and validation update the epoch's loss and metrics, logged once per epoch.

        Args:
            batch: One batch ``(*inputs, target)`` on the task's device.
            stage: ``train``, ``val`` or ``test``.

        Returns:
            The loss (with the penalty for ``train``): what training backpropagates.

        Called by:
            ``training_step`` (for each batch of a step group under
            ``steps_per_execution``), ``validation_step`` and ``test_step``, once per
            batch. Override it to take another batch layout and call
            ``super().model_step((*inputs, target), stage)``, as ``Forecasting`` does with
            its dict batches; the fast path stays.

        """
        output, y, loss, weight = self.step_outputs(batch)
        if stage == "train":
            loss = loss + self.penalty()
        if stage in ("train", "val"):  # logged once per epoch by _log_epoch: cheap steps
            self.accumulate(stage, (self.metric_inputs(output.detach(), y), loss.detach(), weight))
            return loss
        metrics = self.test_metrics
        metrics.update(*self.metric_inputs(output.detach(), y))
        self.record_test_outputs(output.detach(), y)
        baseline = self.baseline_output(output.detach())
        if baseline is not None:
            self.baseline_metrics.update(*self.metric_inputs(baseline, y))
            self.log_dict(self.baseline_metrics, on_step=False, on_epoch=True, batch_size=weight)
        self.log(
            "test/loss",
            loss,
            on_step=False,
            on_epoch=True,
            sync_dist=True,  # averaged over ranks once per epoch (no cost on one process)
            batch_size=weight,
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=weight)
        return loss

    def accumulate(self, stage: str, update: tuple[Any, Tensor, Any]) -> None:
        """Add one batch's ``(metric inputs, loss, weight)`` to the epoch's means (a step
        group collects its batches' and adds them in one update)."""
        self._update_epoch_means(stage, [update])

    def _update_epoch_means(self, stage: str, updates: list[tuple[Any, Tensor, Any]]) -> None:
        """Add ``(metric inputs, loss, weight)`` of one or more batches to the epoch's
        loss mean and metrics in one update each."""
        metrics = getattr(self, f"{stage}_metrics")
        if len(updates) == 1:
            inputs, loss, weight = updates[0]
        else:
            inputs = tuple(torch.cat(parts) for parts in zip(*(u[0] for u in updates)))
            weight = sum(u[2] for u in updates)
            loss = sum(u[1] * u[2] for u in updates) / weight
        if len(metrics):
            metrics.update(*inputs)
        getattr(self, f"{stage}_loss").update(loss, weight)

    def _log_epoch(self, stage: str) -> Tensor | None:
        """Log the epoch's mean loss and metrics of ``train`` or ``val``, accumulated without
        per-step logging (Lightning's per-step ``log`` would cost as much as a small step;
        benchmarks/RESULTS.md); both are synchronised across ranks when computed."""
        loss, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        mean = loss.compute() if loss.update_count else None
        if mean is not None:
            self.log(f"{stage}/loss", mean, prog_bar=True)
            if metrics:
                self.log_dict(metrics.compute())
        loss.reset()
        metrics.reset()
        self.log_epoch_extras(stage, mean)
        return mean

    def log_epoch_extras(self, stage: str, mean_loss: Tensor | None) -> None:
        """Log more values of a training or validation epoch (e.g. perplexity); by default
        nothing.

        Args:
            stage: ``train`` or ``val``.
            mean_loss: The epoch's mean loss just logged as ``{stage}/loss`` (weighted by
                :meth:`step_outputs`' weights), or None when the epoch saw no batch.

        Called by:
            ``on_train_epoch_end`` and ``on_validation_epoch_end``, after the stage's mean
            loss and metrics are logged and their accumulators reset.
        """

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.model_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self.model_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.model_step(batch, "test")

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        inputs = batch if isinstance(batch, (tuple, list)) else (batch,)
        return self.predict_outputs(self(*inputs))

    def optimizer_steps(self) -> int:
        """Optimizer steps of the whole fit (one-cycle schedules are sized with it)."""
        return int(self.trainer.estimated_stepping_batches)

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return build_optimizers(self)


class BaseTask(GroupedSteps, TaskCore):
    """Shared machinery: hyperparameters, one step for every stage, optimizers by name.

    Subclasses take typed scalar arguments, forward the rest to this constructor
    and implement :meth:`configure_model` (and usually :meth:`configure_loss` and
    :meth:`configure_metrics`) by reading ``self.hparams``. Every constructor
    argument of the whole class chain is saved, so ``Task.load_from_checkpoint(path)``
    alone rebuilds the task.

    The code is in two parts: :class:`TaskCore` (the shared step, metrics, optimisers,
    the hooks) and :class:`~tasks._grouped.GroupedSteps` above it, which takes a group of
    batches as several optimizer steps in one Lightning step where :mod:`tasks.fused`
    allows it and hands every single batch down to :class:`TaskCore` unchanged.

    Args:
        optimizer: One of ``adam``, ``adamw``, ``sgd``, ``rmsprop``.
        lr: Learning rate.
        weight_decay: Decoupled (adamw) or L2 (others) weight decay.
        momentum: Momentum for ``sgd`` and ``rmsprop``.
        scheduler: One of ``none``, ``cosine``, ``step``, ``plateau``, ``onecycle``.
        step_size: Epochs between decays for ``scheduler=step``.
        gamma: Decay factor for ``step`` and ``plateau``.
        patience: Epochs without improvement of ``val/loss`` before ``plateau`` decays.
    """
