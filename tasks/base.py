"""The thin base every task (LightningModule) builds on."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from tasks.batches import StepGroup
from tasks.errors import ConfigError

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
SCHEDULERS = ("none", "cosine", "step", "plateau", "onecycle")
STAGES = ("train", "val", "test")
#: What ``scheduler=plateau`` watches.
PLATEAU_MONITOR = "val/loss"


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


def _forwarded_to_super(init: Any) -> set[str]:
    """Arguments ``init`` passes on by name to ``super().__init__`` (``name=name``)."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "__init__"
        ):
            names |= {
                k.arg
                for k in node.keywords
                if k.arg and isinstance(k.value, ast.Name) and k.value.id == k.arg
            }
    return names


def shadowed_arguments(cls: type) -> dict[str, type]:
    """Constructor arguments of ``cls`` that a base task class already takes but that
    ``cls`` does not pass on to it: ``{name: the base class that takes it}``.

    One ``hparams`` value then drives two things (a focal loss's ``gamma`` would also be the
    scheduler's decay factor). Listing a name in the class attribute ``shared_arguments``
    says it is meant to be the same setting.
    """
    import inspect

    init = cls.__dict__.get("__init__")
    if init is None:
        return {}

    def named(function: Any) -> set[str]:
        return {
            p.name
            for p in inspect.signature(function).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"
        }

    own = named(init) - _forwarded_to_super(init) - set(getattr(cls, "shared_arguments", ()))
    found: dict[str, type] = {}
    for base in cls.__mro__[1:]:
        base_init = base.__dict__.get("__init__")
        if base_init is None or not issubclass(base, BaseTask):
            continue
        for name in own & named(base_init):
            found.setdefault(name, base)
    return found


class BaseTask(L.LightningModule):
    """Shared machinery: hyperparameters, one step for every stage, optimizers by name.

    Subclasses take typed scalar arguments, forward the rest to this constructor
    and implement :meth:`configure_model` (and usually :meth:`configure_loss` and
    :meth:`configure_metrics`) by reading ``self.hparams``. Every constructor
    argument of the whole class chain is saved, so ``Task.load_from_checkpoint(path)``
    alone rebuilds the task.

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

    #: Metric (without its stage prefix) drawn next to the loss in history plots.
    main_metric: str = "loss"
    #: Constructor arguments a subclass re-declares on purpose with a base class's meaning.
    shared_arguments: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        import warnings

        from tasks.errors import ArgumentShadowWarning

        for name, base in shadowed_arguments(cls).items():
            warnings.warn(
                f"{cls.__qualname__}.__init__ takes {name!r}, which {base.__qualname__} already "
                f"takes for its own purpose: both read hparams.{name}, so one setting drives "
                f"both. Rename yours (e.g. '{cls.__name__.lower()}_{name}'), pass it on with "
                f"super().__init__({name}={name}, ...), or list it in shared_arguments if it "
                "is the same setting",
                ArgumentShadowWarning,
                stacklevel=2,
            )

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
        """Build the network (a plain ``nn.Module``) from ``self.hparams``."""
        raise NotImplementedError(f"{type(self).__name__} must implement configure_model()")

    def configure_loss(self) -> nn.Module:
        return nn.MSELoss()

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({})

    def metric_inputs(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """What the metrics are updated with; classification passes probabilities."""
        return output, target

    def predict_outputs(self, output: Tensor) -> dict[str, Tensor]:
        """Per-row prediction columns from the network output."""
        return {"pred": output}

    def baseline_output(self, output: Tensor) -> Tensor | None:
        """What a trivial model (majority class, training mean) would output for this batch.

        Its test metrics are logged as ``baseline/*`` beside ``test/*`` so that a user sees
        whether the network learnt anything. None means no baseline.
        """
        return None

    def record_test_outputs(self, output: Tensor, target: Tensor) -> None:
        """Accumulate test-only state (e.g. a confusion matrix) for :meth:`save_artifacts`."""

    def summary_notes(self) -> list[str]:
        """Sentences about the test result for the run summary (``notes``) and the log,
        e.g. whether the model beats its baseline; called after testing."""
        return []

    def penalty(self) -> Tensor | float:
        """Extra regularisation added to the training loss (weight penalties)."""
        return 0.0

    def save_artifacts(self, output_dir: Path, datamodule: L.LightningDataModule) -> list[Path]:
        """Write task-specific test artefacts (plots, tables) after testing; rank zero only."""
        return []

    def augment_batch(self, batch: Any) -> Any:
        """A changed copy of the training batch ``(inputs, ...)``, on its device; called
        for training batches only when the ``augment`` hyperparameter is set."""
        return batch

    def augmentable(self, batch: Any) -> bool:
        """Whether ``batch`` is a training batch ``(inputs, ...)`` that this task's
        ``augment`` hyperparameter asks to change (never validation, test or predict)."""
        return bool(
            self.hparams.get("augment")
            and self._trainer is not None
            and self.trainer.training
            and isinstance(batch, (tuple, list))  # not the model summary's example input
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, StepGroup):
            return StepGroup(self.on_after_batch_transfer(b, dataloader_idx) for b in batch)
        return self.augment_batch(batch) if self.augmentable(batch) else batch

    # -- the one shared step -------------------------------------------------------------
    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(*inputs)

    def step_outputs(self, batch: Any) -> tuple[Tensor, Tensor, Tensor, int]:
        """Network output, target, loss and weight of one batch ``(*inputs, target)``.

        The weight is what the loss is a mean over (rows here; a language model counts
        characters), so epoch means weight every batch by it.
        """
        *inputs, y = batch
        output = self(*inputs)
        return output, y, self.criterion(output, y), len(y)

    def model_step(self, batch: Any, stage: str) -> Tensor:
        """Loss and metrics of one batch, for every stage."""
        output, y, loss, weight = self.step_outputs(batch)
        if stage == "train":
            loss = loss + self.penalty()
        if stage in ("train", "val"):  # logged once per epoch by _log_epoch: cheap steps
            update = (self.metric_inputs(output.detach(), y), loss.detach(), weight)
            if self._pending is None:
                self._update_epoch_means(stage, [update])
            else:  # a step group: one metric update for the whole group
                self._pending.append(update)
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

    _pending: list[tuple[tuple[Tensor, Tensor], Tensor, Any]] | None = None

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

    def _grouped(self, stage: str, batches: list[Any], step: Any) -> list[Any]:
        """``step(batch)`` for every batch of a group, metric updates once at the end."""
        self._pending = []
        try:
            results = [step(batch) for batch in batches]
            self._update_epoch_means(stage, self._pending)
        finally:
            self._pending = None
        return results

    def _log_epoch(self, stage: str) -> Tensor | None:
        """Log the epoch's mean loss and metrics of ``train`` or ``val``, accumulated without
        per-step logging (Lightning's per-step ``log`` costs about a millisecond a call);
        both are synchronised across ranks when computed. Returns the mean loss."""
        loss, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        mean = loss.compute() if loss.update_count else None
        if mean is not None:
            self.log(f"{stage}/loss", mean, prog_bar=True)
            if metrics:
                self.log_dict(metrics.compute())
        loss.reset()
        metrics.reset()
        return mean

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")
        if self._step_groups:
            self._step_epoch_schedulers()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self._step_groups:
            return self._train_steps(batch if isinstance(batch, StepGroup) else [batch])
        return self.model_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        if isinstance(batch, StepGroup):
            checks = self.trainer.num_sanity_val_steps if self.trainer.sanity_checking else -1
            if checks >= 0:  # the sanity check counts batches, not groups
                batch = batch[: max(0, checks - batch_idx * len(batch))]
            if not batch:
                return None
            losses = self._grouped("val", batch, lambda b: self.model_step(b, "val"))
            return torch.stack(losses).mean()
        return self.model_step(batch, "val")

    # -- several optimizer steps per Lightning step (tasks.fused) ----------------------------
    _step_groups = False
    #: Clip gradients to this (trainer.gradient_clip_algorithm) at every grouped step.
    gradient_clip_val: float | None = None

    def use_step_groups(self, enabled: bool) -> None:
        """Take every batch of a :class:`~tasks.fused.StepGroup` as one optimizer step
        inside a single Lightning training step (manual optimization); set by
        :func:`tasks.fused.configure`, which checks that nothing observable changes."""
        self._step_groups = enabled
        self.automatic_optimization = not enabled

    def on_train_start(self) -> None:
        # Lightning counts optimizer steps separately for automatic and manual optimization:
        # a run resumed with the other mode continues from the larger count.
        loop = self.trainer.fit_loop.epoch_loop
        counters = (
            loop.manual_optimization.optim_step_progress.total,
            loop.automatic_optimization.optim_progress.optimizer.step.total,
        )
        steps = max(counter.completed for counter in counters)
        for counter in counters:
            counter.ready = counter.completed = steps

    def _train_steps(self, batches: list[Any]) -> Tensor:
        """The steps Lightning's automatic optimization would take, one per batch: forward
        (under the precision plugin's autocast), zero_grad, backward, optimizer step."""
        self._step_due_plateaus()
        optimizer = self.optimizers(use_pl_optimizer=False)
        loop = self.trainer.fit_loop.epoch_loop
        progress = loop.manual_optimization.optim_step_progress
        step_schedulers = [
            c.scheduler for c in self.trainer.lr_scheduler_configs if c.interval == "step"
        ]
        device = self.device.type
        no_autocast = (  # backward runs outside autocast, as in Lightning's closure
            torch.autocast(device, enabled=False)
            if torch.is_autocast_enabled(device)
            else contextlib.nullcontext()
        )

        def step(batch: Any) -> Tensor:
            loss = self.model_step(batch, "train")
            with no_autocast:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.gradient_clip_val:
                    self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val)
                optimizer.step()
                for scheduler in step_schedulers:  # after every optimizer step, as Lightning
                    scheduler.step()
            progress.increment_ready()  # trainer.global_step counts optimizer steps
            progress.increment_completed()
            return loss.detach()

        losses = self._grouped("train", batches, step)
        loop._batches_that_stepped += len(batches) - 1  # loggers' step: optimizer steps too
        return losses[-1]

    _plateau_due: list[tuple[Any, float]] | None = None

    def _step_epoch_schedulers(self) -> None:
        """Lightning steps no schedulers under manual optimization: step the per-epoch ones
        when it would. Others step at the end of the epoch (before checkpoints are saved);
        plateau ones on ``PLATEAU_MONITOR`` once the epoch's checkpoints are written, i.e.
        before the next epoch's first step, so checkpoints hold the same state."""
        self._plateau_due = []
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != "epoch" or (self.current_epoch + 1) % config.frequency:
                continue
            if not isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config.scheduler.step()
                continue
            value = self.trainer.callback_metrics.get(PLATEAU_MONITOR)
            if value is None:
                raise ConfigError(
                    f"scheduler=plateau monitors {PLATEAU_MONITOR!r}, which was not logged; "
                    f"logged: {sorted(self.trainer.callback_metrics)}"
                )
            self._plateau_due.append((config.scheduler, float(value)))

    def _step_due_plateaus(self) -> None:
        for scheduler, value in self._plateau_due or ():
            scheduler.step(value)
        self._plateau_due = None

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.model_step(batch, "test")

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        inputs = batch if isinstance(batch, (tuple, list)) else (batch,)
        return self.predict_outputs(self(*inputs))

    def _total_steps(self) -> int:
        """Optimizer steps of the whole fit (Lightning's estimate counts Lightning steps,
        i.e. groups under step groups)."""
        steps = int(self.trainer.estimated_stepping_batches)
        loader = self.trainer.train_dataloader
        if self._step_groups and getattr(loader, "group", 1) > 1:
            steps = steps // len(loader) * loader.num_batches
        return steps

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        kwargs: dict[str, Any] = {"lr": hp.lr, "weight_decay": hp.weight_decay}
        if hp.optimizer in ("sgd", "rmsprop"):
            kwargs["momentum"] = hp.momentum
        optimizer = OPTIMIZERS[hp.optimizer](self.parameters(), **kwargs)
        if hp.scheduler == "none":
            return optimizer
        sched = torch.optim.lr_scheduler
        if hp.scheduler == "cosine":
            scheduler = sched.CosineAnnealingLR(
                optimizer, T_max=max(1, self.trainer.max_epochs or 1)
            )
        elif hp.scheduler == "step":
            scheduler = sched.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
        elif hp.scheduler == "plateau":
            scheduler = sched.ReduceLROnPlateau(optimizer, factor=hp.gamma, patience=hp.patience)
            # under step groups (manual optimization) Lightning ignores "monitor": the
            # task steps it with PLATEAU_MONITOR itself
            monitor = {} if self._step_groups else {"monitor": PLATEAU_MONITOR}
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **monitor}}
        else:  # onecycle steps every batch
            scheduler = sched.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=self._total_steps())
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
