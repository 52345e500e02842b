"""Step groups, the mechanism: several optimizer steps inside one Lightning training step.

:class:`GroupedSteps` sits above the task's own hooks (``BaseTask`` is
``GroupedSteps`` over :class:`~tasks.base.TaskCore`): a :class:`~tasks.batches.StepGroup`
of K batches becomes K plain optimizer steps (forward under the precision plugin's
autocast, zero_grad, backward, optional clipping, step, step-interval schedulers), every
other batch goes down to the task's own ``training_step``/``validation_step`` unchanged.
Whether a run groups at all is decided by :mod:`tasks.fused`.

Lightning does not step optimizers or count steps under manual optimization the way it does
under automatic optimization, so the group advances Lightning's step counters itself. Those
counters are private loop state: every access to them is in :func:`lightning_internals`,
which returns the reason when an installed Lightning lacks one, and :mod:`tasks.fused` then
runs one step at a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tasks.batches import StepGroup
from tasks.errors import ConfigError

#: What ``scheduler=plateau`` watches.
PLATEAU_MONITOR = "val/loss"


@dataclass
class LoopState:
    """Lightning's private loop counters that grouped steps advance themselves."""

    epoch_loop: Any
    manual_progress: Any  # optimizer steps under manual optimization (trainer.global_step)
    automatic_steps: Any  # the count under automatic optimization (resumes across modes)

    @property
    def manual_steps(self) -> Any:
        return self.manual_progress.total

    def count_step(self) -> None:
        """One optimizer step taken: ``trainer.global_step`` counts it."""
        self.manual_progress.increment_ready()
        self.manual_progress.increment_completed()

    def add_logged_steps(self, count: int) -> None:
        """Loggers' step (``_batches_that_stepped``) counts optimizer steps, not groups."""
        self.epoch_loop._batches_that_stepped += count


def lightning_internals(trainer: Any) -> LoopState | str:
    """Lightning's loop state grouped steps use, or why this Lightning does not have it."""
    try:
        loop = trainer.fit_loop.epoch_loop
        state = LoopState(
            loop,
            loop.manual_optimization.optim_step_progress,
            loop.automatic_optimization.optim_progress.optimizer.step.total,
        )
        loop._batches_that_stepped  # noqa: B018 (checked, not used here)
    except AttributeError as exc:
        return f"{NOT_IN_THIS_LIGHTNING} has no {exc.name or exc} in its fit loop"
    return state


#: How a reason from :func:`lightning_internals` or :func:`every_n_train_steps` begins: the
#: installed Lightning lacks what grouped steps read (warned about even under ``auto``).
NOT_IN_THIS_LIGHTNING = "this Lightning"


def every_n_train_steps(callback: Any) -> int | str:
    """How often ``callback`` acts in training steps (``ModelCheckpoint``'s private
    setting; 0 for callbacks without one), or why it cannot be known: a ``ModelCheckpoint``
    of a Lightning that keeps the setting elsewhere might act every n steps unseen."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    if isinstance(callback, ModelCheckpoint) and not hasattr(callback, "_every_n_train_steps"):
        return f"{NOT_IN_THIS_LIGHTNING}'s ModelCheckpoint has no _every_n_train_steps"
    return int(getattr(callback, "_every_n_train_steps", 0) or 0)


class GroupedSteps:
    """The step-group half of ``BaseTask``; see the module docstring."""

    _step_groups = False
    #: Clip gradients to this (trainer.gradient_clip_algorithm) at every grouped step.
    gradient_clip_val: float | None = None
    _pending: list[tuple[tuple[Tensor, Tensor], Tensor, Any]] | None = None
    _plateau_due: list[tuple[Any, float]] | None = None

    def use_step_groups(self, enabled: bool) -> None:
        """Take every batch of a :class:`~tasks.batches.StepGroup` as one optimizer step
        inside a single Lightning training step (manual optimization); set by
        :func:`tasks.fused.configure`, which checks that nothing observable changes.

        Args:
            enabled: Group (manual optimization) or not (Lightning's automatic one).

        Called by:
            :func:`tasks.fused.configure`, once, before fitting.
        """
        self._step_groups = enabled
        self.automatic_optimization = not enabled

    # -- the hooks Lightning calls, groups handled here, single batches passed down ----------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, StepGroup):
            hook = super().on_after_batch_transfer  # type: ignore[misc]
            return StepGroup(hook(b, dataloader_idx) for b in batch)
        return super().on_after_batch_transfer(batch, dataloader_idx)  # type: ignore[misc]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self._step_groups:
            return self._train_steps(batch if isinstance(batch, StepGroup) else [batch])
        return super().training_step(batch, batch_idx)  # type: ignore[misc]

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        if not isinstance(batch, StepGroup):
            return super().validation_step(batch, batch_idx)  # type: ignore[misc]
        trainer = self.trainer  # type: ignore[attr-defined]
        checks = trainer.num_sanity_val_steps if trainer.sanity_checking else -1
        if checks >= 0:  # the sanity check counts batches, not groups
            batch = batch[: max(0, checks - batch_idx * len(batch))]
        if not batch:
            return None
        step = super().validation_step  # type: ignore[misc]
        losses = self._grouped("val", batch, lambda b: step(b, batch_idx))
        return torch.stack(losses).mean()

    def on_train_start(self) -> None:
        super().on_train_start()  # type: ignore[misc]
        state = lightning_internals(self.trainer)  # type: ignore[attr-defined]
        if isinstance(state, str):
            return  # fused.configure kept this run on single steps
        # Lightning counts optimizer steps separately for automatic and manual optimization:
        # a run resumed with the other mode continues from the larger count.
        counters = (state.manual_steps, state.automatic_steps)
        steps = max(counter.completed for counter in counters)
        for counter in counters:
            counter.ready = counter.completed = steps

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()  # type: ignore[misc]
        if self._step_groups:
            self._step_epoch_schedulers()

    # -- metric updates: once per group -------------------------------------------------------
    def accumulate(self, stage: str, update: tuple[Any, Tensor, Any]) -> None:
        """One batch's ``(metric inputs, loss, weight)``: kept for the group's single update
        inside a group, added to the epoch's means at once otherwise."""
        if self._pending is None:
            self._update_epoch_means(stage, [update])  # type: ignore[attr-defined]
        else:
            self._pending.append(update)

    def _grouped(self, stage: str, batches: list[Any], step: Any) -> list[Any]:
        """``step(batch)`` for every batch of a group, metric updates once at the end."""
        self._pending = []
        try:
            results = [step(batch) for batch in batches]
            self._update_epoch_means(stage, self._pending)  # type: ignore[attr-defined]
        finally:
            self._pending = None
        return results

    # -- the optimizer steps -------------------------------------------------------------------
    def _train_steps(self, batches: list[Any]) -> Tensor:
        """The steps Lightning's automatic optimization would take, one per batch: forward
        (under the precision plugin's autocast), zero_grad, backward, optimizer step."""
        self._step_due_plateaus()
        trainer = self.trainer  # type: ignore[attr-defined]
        state = lightning_internals(trainer)
        assert not isinstance(state, str), state  # fused.configure checked it
        optimizer = self.optimizers(use_pl_optimizer=False)  # type: ignore[attr-defined]
        step_schedulers = [
            c.scheduler for c in trainer.lr_scheduler_configs if c.interval == "step"
        ]
        device = self.device.type  # type: ignore[attr-defined]
        no_autocast = (  # backward runs outside autocast, as in Lightning's closure
            torch.autocast(device, enabled=False)
            if torch.is_autocast_enabled(device)
            else contextlib.nullcontext()
        )

        def step(batch: Any) -> Tensor:
            loss = self.model_step(batch, "train")  # type: ignore[attr-defined]
            with no_autocast:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.gradient_clip_val:
                    self.clip_gradients(  # type: ignore[attr-defined]
                        optimizer, gradient_clip_val=self.gradient_clip_val
                    )
                optimizer.step()
                for scheduler in step_schedulers:  # after every optimizer step, as Lightning
                    scheduler.step()
            state.count_step()
            return loss.detach()

        losses = self._grouped("train", batches, step)
        state.add_logged_steps(len(batches) - 1)
        return losses[-1]

    def _step_epoch_schedulers(self) -> None:
        """Lightning steps no schedulers under manual optimization: step the per-epoch ones
        when it would. Others step at the end of the epoch (before checkpoints are saved);
        plateau ones on ``PLATEAU_MONITOR`` once the epoch's checkpoints are written, i.e.
        before the next epoch's first step, so checkpoints hold the same state."""
        trainer = self.trainer  # type: ignore[attr-defined]
        self._plateau_due = []
        for config in trainer.lr_scheduler_configs:
            if config.interval != "epoch" or (self.current_epoch + 1) % config.frequency:  # type: ignore[attr-defined]
                continue
            if not isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config.scheduler.step()
                continue
            value = trainer.callback_metrics.get(PLATEAU_MONITOR)
            if value is None:
                raise ConfigError(
                    f"scheduler=plateau monitors {PLATEAU_MONITOR!r}, which was not logged; "
                    f"logged: {sorted(trainer.callback_metrics)}"
                )
            self._plateau_due.append((config.scheduler, float(value)))

    def _step_due_plateaus(self) -> None:
        for scheduler, value in self._plateau_due or ():
            scheduler.step(value)
        self._plateau_due = None

    def optimizer_steps(self) -> int:
        """Optimizer steps of the whole fit (Lightning's estimate counts Lightning steps,
        i.e. groups under step groups); one-cycle schedules are sized with it."""
        trainer = self.trainer  # type: ignore[attr-defined]
        steps = int(trainer.estimated_stepping_batches)
        loader = trainer.train_dataloader
        if self._step_groups and getattr(loader, "group", 1) > 1:
            steps = steps // len(loader) * loader.num_batches
        return steps
