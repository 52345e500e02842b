"""Several optimizer steps per Lightning step: Lightning's per-step cost paid once per group.

Lightning runs a dozen hooks, a closure, the precision plugin and the progress bar around
every optimizer step: as much time on a CPU as the whole step of a small MLP, LSTM or
Conv1D (figures in benchmarks/RESULTS.md). With ``steps_per_execution: K`` (the idea of
Keras' option of that name) the training loader yields a :class:`StepGroup` of K batches
and the task takes K plain optimizer steps inside one Lightning training step (manual
optimization), so that cost is paid once per K steps. Validation batches come in groups
too. The results are those of the one-step-at-a-time path (same batches, same order, same
updates; tested), with these differences, documented in docs/scaling.md:

- gradient clipping (``trainer.gradient_clip_val``) is applied by the task at every step,
  with Lightning's own clipping function;
- per-batch callback hooks (``on_train_batch_start/end``, the progress bar) run once per
  group, and ``limit_*_batches``/``val_check_interval`` would count groups, so runs that set
  them (or ``fast_dev_run``, ``max_steps``) take one step at a time;
- ``trainer.global_step`` counts optimizer steps, as always.

This module is the policy; the mechanism is :class:`tasks._grouped.GroupedSteps`, the part
of ``BaseTask`` that takes the steps, with every access to Lightning's private loop state in
:func:`tasks._grouped.lightning_internals`. :func:`configure` decides, with :func:`why_not`:
a group of K > 1 only where the result cannot differ: one process, no gradient accumulation
or fp16 loss scaling, no callback hooked on backward or optimizer steps, a task whose
per-batch hooks are :class:`~tasks.base.BaseTask`'s own, a datamodule that can group
batches, and a Lightning whose loop state is where :mod:`tasks._grouped` expects it.
Anything else runs one step at a time, with the reason logged.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.strategies import SingleDeviceStrategy

from datamodules.base import BaseDataModule
from tasks._grouped import NOT_IN_THIS_LIGHTNING, every_n_train_steps, lightning_internals
from tasks.base import BaseTask
from tasks.batches import StepGroup  # noqa: F401 (its old import path)
from tasks.errors import ConfigError

log = logging.getLogger(__name__)

#: What ``steps_per_execution: auto`` asks for on in-memory data (measured in
#: benchmarks/RESULTS.md: larger groups gain little more).
AUTO_STEPS = 16

#: Callback hooks that run around each optimizer step; a callback overriding one of them
#: would be skipped by grouped steps, so its presence means one step at a time.
STEP_HOOKS = (
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)

#: Callback hooks that run once per Lightning training step: with groups, once per group of
#: batches. Lightning's own callbacks and this library's take that into account; another
#: callback overriding one keeps single steps unless it says ``handles_step_groups = True``.
BATCH_CALLBACK_HOOKS = ("on_train_batch_start", "on_train_batch_end")

#: Task hooks that see single batches or single optimizer steps (and the optimizer set-up,
#: whose schedules the task steps itself): a subclass overriding one keeps single steps.
BATCH_HOOKS = (
    "training_step",
    "validation_step",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "optimizer_step",
    "optimizer_zero_grad",
    "backward",
    "configure_gradient_clipping",
    "configure_optimizers",
    *STEP_HOOKS,
)


def resolve(requested: Any) -> int:
    """``auto``, ``null`` or an int >= 1 as a number of steps per execution."""
    if requested in (None, "auto"):
        return AUTO_STEPS
    try:
        steps = int(requested)
    except (TypeError, ValueError):
        steps = 0
    if steps < 1 or str(steps) != str(requested).strip():
        raise ConfigError(
            f"steps_per_execution={requested!r} is not valid: use auto or an integer >= 1 "
            "(1: one optimizer step per Lightning step)"
        )
    return steps


def why_not(task: Any, trainer: Any, datamodule: Any) -> str | None:
    """Why ``task`` must take one step at a time under ``trainer``, or None if it may group."""
    if not isinstance(task, BaseTask):
        return f"{type(task).__name__} is not a BaseTask"
    if not isinstance(datamodule, BaseDataModule) or _overridden(
        datamodule, BaseDataModule, ("train_dataloader", "val_dataloader")
    ):
        return f"{type(datamodule).__name__} builds its own training or validation loader"
    overridden = _overridden(task, BaseTask, BATCH_HOOKS)
    if overridden:
        return f"{type(task).__name__} overrides {', '.join(overridden)}"
    if not isinstance(trainer.strategy, SingleDeviceStrategy):
        return f"strategy {type(trainer.strategy).__name__} (grouped steps need one process)"
    if trainer.accumulate_grad_batches != 1:
        return "gradient accumulation (trainer.accumulate_grad_batches)"
    if str(trainer.precision).startswith("16"):
        return "fp16 loss scaling (precision 16-mixed)"
    if trainer.fast_dev_run or trainer.max_steps not in (-1, None):
        return "fast_dev_run or max_steps (they count Lightning steps)"
    limits = (trainer.limit_train_batches, trainer.limit_val_batches)
    if any(limit not in (None, 1.0) for limit in limits) or isinstance(
        trainer.val_check_interval, int
    ):
        return "limit_train/val_batches or an integer val_check_interval (they count batches)"
    for callback in trainer.callbacks:
        hooks = _overridden(callback, L.Callback, STEP_HOOKS)
        if hooks:
            return f"callback {type(callback).__name__} hooks {', '.join(hooks)}"
        hooks = _overridden(callback, L.Callback, BATCH_CALLBACK_HOOKS)
        hooks += [h for h in BATCH_CALLBACK_HOOKS if h in vars(callback) and h not in hooks]
        if hooks and not _group_aware(callback, hooks):
            return (
                f"callback {type(callback).__name__} hooks {', '.join(hooks)} (it would see "
                "a group of batches at a time; set handles_step_groups = True on it if it can)"
            )
        interval = every_n_train_steps(callback)
        if isinstance(interval, str):
            return interval
        if interval:
            return f"callback {type(callback).__name__} acts every n training steps"
    state = lightning_internals(trainer)
    return state if isinstance(state, str) else None


#: Lightning callbacks whose per-batch hooks count optimizer steps (an average of the
#: weights after every step, throughput per batch): with groups they would act once per
#: group, so they keep single steps.
STEP_COUNTING_CALLBACKS = ("WeightAveraging", "ThroughputMonitor")


def _group_aware(callback: Any, hooks: list[str]) -> bool:
    """Whether ``callback``'s ``hooks`` (batch hooks it overrides) take groups in their
    stride: it says so (``handles_step_groups``), or each hook is defined by one of
    Lightning's display/checkpoint callbacks or by this library (a subclass that only
    changes other methods inherits them as they are)."""
    if getattr(callback, "handles_step_groups", False):
        return True
    if any(c.__name__ in STEP_COUNTING_CALLBACKS for c in type(callback).__mro__):
        return False
    for hook in hooks:
        if hook in vars(callback):  # set on the instance (LambdaCallback): a user function
            return False
        owner = next(c for c in type(callback).__mro__ if hook in vars(c))
        if not owner.__module__.startswith(("lightning.", "pytorch_lightning.", "tasks.")):
            return False
    return True


def _overridden(obj: Any, base: type, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` the class of ``obj`` defines differently from ``base``."""
    return [name for name in names if getattr(type(obj), name) is not getattr(base, name)]


def configure(task: Any, trainer: Any, datamodule: Any, requested: Any = "auto") -> int:
    """Group ``requested`` steps per Lightning step where :func:`why_not` allows it; sets
    the task to manual optimization and the datamodule's loaders to groups. Returns the
    number of steps per execution that will be used."""
    steps = resolve(requested)
    reason = why_not(task, trainer, datamodule) if steps > 1 else None
    if reason is not None:
        # an explicit request, or a Lightning without what groups read, is worth a warning
        explicit = requested not in (None, "auto")
        level = (
            logging.WARNING
            if explicit or reason.startswith(NOT_IN_THIS_LIGHTNING)
            else logging.DEBUG
        )
        log.log(
            level, "steps_per_execution=%s: one step at a time because of %s", requested, reason
        )
        steps = 1
    task.use_step_groups(steps > 1)
    if steps > 1 and trainer.gradient_clip_val:
        # Lightning refuses its own clipping under manual optimization: the task clips
        # every step the same way instead (trainer.gradient_clip_algorithm, default norm)
        task.gradient_clip_val = float(trainer.gradient_clip_val)
        trainer.gradient_clip_val = None
    datamodule.steps_per_execution = steps
    if steps > 1:  # the runner's device line says it too
        log.debug(
            "%d optimizer steps per Lightning step (steps_per_execution=%s)", steps, requested
        )
    return steps
