"""Callbacks the configs can add by name (``callbacks.<name>._target_``)."""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from typing import Any
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import (
    ModelCheckpoint,
    ProgressBar,
    RichModelSummary,
    RichProgressBar,
)
from lightning.pytorch.utilities.model_summary import ModelSummary as Summary
from rich.progress import ProgressColumn
from rich.text import Text
from torch import Tensor, nn

from tasks.batches import batch_count, batch_rows
from tasks.errors import ConfigError

log = logging.getLogger(__name__)


class CompileModel(L.Callback):
    """``torch.compile`` the task's network in place when fitting starts.

    ``nn.Module.compile`` keeps the parameter names, so checkpoints load into an
    uncompiled task as before. Selected with ``compile=on``.

    Args:
        mode: ``default``, ``reduce-overhead`` or ``max-autotune``.
        dynamic: Let shapes vary without recompiling (None: torch decides).
        fullgraph: Fail instead of falling back where the graph breaks.
    """

    def __init__(self, mode: str = "default", dynamic: bool | None = None, fullgraph: bool = False):
        self.options = {"mode": mode, "dynamic": dynamic, "fullgraph": fullgraph}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        network = getattr(pl_module, "model", None)
        if stage == "fit" and network is not None and not getattr(network, "_compiled", False):
            network.compile(**self.options)
            network._compiled = True


def _bookkeeping(module: nn.Module) -> bool:
    """Metric objects and parameter-free losses: part of the task, not of the network."""
    from torchmetrics import Metric, MetricCollection

    return isinstance(module, (Metric, MetricCollection)) or (
        isinstance(module, nn.modules.loss._Loss) and not any(True for _ in module.parameters())
    )


class _NetworkLayers(Summary):
    """Lightning's summary without the metric and loss modules (and their children)."""

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        skipped: list[str] = []
        kept = []
        for name, module in super().named_modules:
            if any(name.startswith(prefix + ".") for prefix in skipped):
                continue
            if _bookkeeping(module):
                skipped.append(name)
                continue
            kept.append((name, module))
        return kept


class NetworkSummary(RichModelSummary):
    """The network's layers, parameters and shapes (not the task's metric objects); a Rich
    table on a terminal, a plain one elsewhere."""

    def _summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Summary:
        return _NetworkLayers(pl_module, max_depth=self._max_depth)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        from tasks.engine.console import is_terminal, say

        if is_terminal():
            RichModelSummary.summarize(
                summary_data, total_parameters, trainable_parameters, model_size, *args, **kwargs
            )
            return
        for line in plain_summary(summary_data, total_parameters, trainable_parameters, model_size):
            say(line)


#: Columns of Lightning's summary data shown in the plain table.
_SUMMARY_COLUMNS = ("Name", "Type", "Params", "In sizes", "Out sizes")


def plain_summary(
    summary_data: list[tuple[str, list[str]]], total: int, trainable: int, size_mb: float
) -> list[str]:
    """Lightning's summary data as a plain table (for logs and pipes) and a parameter line."""
    from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

    columns = [(name, [str(v) for v in values]) for name, values in summary_data]
    columns = [c for c in columns if c[0] in _SUMMARY_COLUMNS]
    widths = [max(len(name), *(len(v) for v in values)) for name, values in columns]
    rows = [[name for name, _ in columns], *zip(*(values for _, values in columns))]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(
        f"parameters: {get_human_readable_count(trainable).strip()} trainable, "
        f"{get_human_readable_count(total - trainable).strip()} frozen, {size_mb:.3g} MB"
    )
    return lines


def _loader_batches(loaders: Any, counted: float) -> float:
    """Batches Lightning's count ``counted`` stands for: a loader that groups batches
    (``num_batches`` > its length) yields groups, and Lightning counts groups."""
    loader = loaders[0] if isinstance(loaders, (list, tuple)) and len(loaders) == 1 else loaders
    total = getattr(loader, "num_batches", None)
    if total is None or counted == float("inf") or total <= counted:
        return counted
    return min(total, counted * getattr(loader, "group", 1))


class _RowsPerSecond(ProgressColumn):
    """Rows per second of the current bar (its ``rows`` field over its elapsed time)."""

    def render(self, task: Any) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        rows = task.fields.get("rows", 0)
        if not rows or not elapsed or elapsed < 0.05:  # too early for a meaningful rate
            return Text("- rows/s", style="grey70")
        return Text(f"{rows / elapsed:,.0f} rows/s", style="grey70")


class BatchProgressBar(RichProgressBar):
    """Lightning's Rich bar counting batches (a step group advances it by its batches) and
    showing rows per second instead of Lightning steps per second."""

    @property
    def total_train_batches(self) -> float:
        return _loader_batches(self.trainer.train_dataloader, super().total_train_batches)

    @property
    def total_val_batches_current_dataloader(self) -> float:
        return _loader_batches(
            self.trainer.val_dataloaders, super().total_val_batches_current_dataloader
        )

    def _get_train_description(self, current_epoch: int) -> str:
        """Epochs counted from 1, as the epoch lines and the closing block count them."""
        total = f"/{self.trainer.max_epochs}" if self.trainer.max_epochs else ""
        return f"{f'Epoch {current_epoch + 1}{total}':<{len(self.validation_description)}}"

    def configure_columns(self, trainer: L.Trainer) -> list:
        return [*super().configure_columns(trainer)[:-1], _RowsPerSecond()]

    def _advance(self, bar: Any, batch: Any) -> None:
        if self.progress is None or not self.is_enabled or bar is None:
            return
        rows = (
            self.progress.tasks[bar].fields.get("rows", 0) if bar < len(self.progress.tasks) else 0
        )
        self.progress.update(bar, advance=batch_count(batch), rows=rows + batch_rows(batch))
        self.refresh()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, completed=0, rows=0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._advance(self.train_progress_bar_id, batch)
        self._update_metrics(trainer, pl_module)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[no-untyped-def]
        if self.is_disabled:
            return
        bar = (
            self.val_sanity_progress_bar_id if trainer.sanity_checking else self.val_progress_bar_id
        )
        self._advance(bar, batch)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[no-untyped-def]
        if not self.is_disabled:
            self._advance(self.test_progress_bar_id, batch)

    def on_predict_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[no-untyped-def]
        if not self.is_disabled:
            self._advance(self.predict_progress_bar_id, batch)


class EpochLines(ProgressBar):
    """For logs, pipes and CI: one plain line per epoch (train loss, validation loss, the
    main metric, seconds; ``best`` when the monitored score improved). An epoch longer than
    ``every`` seconds also gets an indented line about its progress every ``every`` seconds,
    so a long first epoch is not silent.
    """

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._enabled = True
        self._started: float | None = None
        self._best: Any = None
        self._batches = self._rows = 0
        self._said = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        """Read by ``LightningModule.print``, which then prints through :meth:`print`."""
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        """A task's ``self.print(...)``: one plain line, as the epoch lines are."""
        from tasks.engine.console import say

        say(" ".join(str(a) for a in args))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, trainer.current_epoch - 1)
        if self._best is None:  # a score held before the first epoch (a resumed run's, a
            # forecaster's fitted start) is not an improvement of that epoch
            score = getattr(trainer.checkpoint_callback, "best_model_score", None)
            self._best = None if score is None else float(score)
        self._started = self._said = time.perf_counter()
        self._batches = self._rows = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self._batches += batch_count(batch)
        self._rows += batch_rows(batch)
        now = time.perf_counter()
        if self._started is None or now - self._said < self.every or not self._enabled:
            return
        self._said = now
        if trainer.is_global_zero:
            from tasks.engine.console import say

            total = _loader_batches(trainer.train_dataloader, trainer.num_training_batches)
            of = f"/{total:g}" if total != float("inf") else ""
            rate = self._rows / (now - self._started)
            say(
                f"  epoch {trainer.current_epoch + 1}: {self._batches}{of} batches, "
                f"{rate:,.0f} rows/s, {now - self._started:.0f} s"
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, trainer.current_epoch - 1)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exc: BaseException
    ) -> None:
        self._started = None

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        """The line of the epoch that just ended (once: ``_started`` is cleared)."""
        if self._started is None or not self._enabled or not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._started
        self._started = None
        from tasks.engine.console import say

        metrics = trainer.callback_metrics
        main = getattr(pl_module, "main_metric", "loss")
        keys = ["train/loss", "val/loss"] + ([f"val/{main}"] if main != "loss" else [])
        parts = [f"epoch {epoch + 1}" + (f"/{trainer.max_epochs}" if trainer.max_epochs else "")]
        parts += [f"{key} {float(metrics[key]):.4g}" for key in keys if key in metrics]
        parts.append(f"{seconds:.2f} s")
        checkpoint = trainer.checkpoint_callback
        score = getattr(checkpoint, "best_model_score", None)
        if score is not None and (self._best is None or float(score) != self._best):
            self._best = float(score)
            parts.append("best")
        say("  ".join(parts))


def progress_bar(**rich_options: Any) -> ProgressBar:
    """The Rich batch bar on a terminal; one line per epoch anywhere else."""
    from tasks.engine.console import is_terminal

    return BatchProgressBar(**rich_options) if is_terminal() else EpochLines()


class ResumeState(L.Callback):
    """A resumed run continues as the uninterrupted one would have: checkpoints carry the
    random-number state (torch, CUDA, numpy, Python; one per rank), restored when the resumed
    run's first epoch starts (dropout and augmentation draw the same numbers), and every
    training epoch tells a loader with ``set_epoch`` which epoch it is (the same shuffle).
    Added to every run by the runner."""

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    @staticmethod
    def _collect() -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        version, words, gauss = random.getstate()
        # plain types and tensors (checkpoints load weights_only); the two 624-word states as
        # tensors, not as 625 Python ints a checkpoint kept in memory would copy one by one
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": [version, torch.tensor(words, dtype=torch.int64), gauss],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _restore(state: dict[str, Any]) -> None:
        import random

        import numpy as np
        import torch

        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        version, words, gauss = state["python"]
        if isinstance(words, torch.Tensor):  # a tuple of ints in checkpoints before 2026-12
            words = tuple(words.tolist())
        random.setstate((version, words, gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def state_dict(self) -> dict[str, Any]:
        import torch.distributed as dist

        state = self._collect()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)  # every rank saves, rank 0 writes
            return {"ranks": states}
        return {"ranks": [state]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("ranks")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        if callable(getattr(loader, "set_epoch", None)):
            loader.set_epoch(trainer.current_epoch)
        if self._pending:
            ranks, self._pending = self._pending, None
            self._restore(
                ranks[trainer.global_rank] if trainer.global_rank < len(ranks) else ranks[0]
            )


#: Leaves a checkpoint holds by value: nothing to copy or count.
_ATOMS = frozenset({int, float, bool, str, bytes, type(None)})


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a checkpoint (nested dicts, lists and tuples)."""
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return 0
    return sum(_tensor_bytes(v) for v in value if type(v) not in _ATOMS)


def _copied(value: Any) -> Any:
    """A checkpoint that training no longer changes: its tensors copied to the CPU, its
    containers copied (a callback's state can be one of its live dicts)."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        copied = copy.copy(value)  # the same type (OrderedDict, AttributeDict, ...)
        for key, item in value.items():
            if type(item) not in _ATOMS:
                copied[key] = _copied(item)
        return copied
    if isinstance(value, list):
        return [v if type(v) in _ATOMS else _copied(v) for v in value]
    if isinstance(value, tuple):
        items = [v if type(v) in _ATOMS else _copied(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


class TimedModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (the same best epoch, file names and file contents)
    writing on a clock instead of at every epoch.

    At each epoch end the checkpoints Lightning would write (``best.ckpt`` when the monitored
    score improves, ``last.ckpt``) are taken as CPU copies and kept in memory; they are
    written when ``write_interval`` seconds have passed since the last write (sooner while a
    write costs under ``max_overhead`` of the training time since the last one), when
    fitting ends, and when it stops on an exception (SIGTERM, Ctrl-C, an error). A run killed
    without warning (SIGKILL, a lost machine) loses at most ``write_interval`` seconds of
    training, or the epoch in progress when an epoch is longer: checkpoints are taken at epoch
    ends only, since a run resumed from the middle of an epoch would not train as the
    uninterrupted one.

    Args:
        write_interval: Most seconds between two writes (at epoch ends).
        max_overhead: Write sooner while the last write took at most this fraction of the
            training time since it (0: on the clock only).
        memory_limit_mb: A checkpoint with more tensor bytes than this is not copied into
            memory (for a large model a copy costs more memory than a write costs time):
            ``best.ckpt`` is written when the score improves, ``last.ckpt`` when due and at
            the last epoch.
        **kwargs: ``ModelCheckpoint``'s arguments, except ``every_n_train_steps`` and
            ``train_time_interval`` (checkpoints in the middle of an epoch).

    Raises:
        ConfigError: a setting out of range, or one that checkpoints mid-epoch.
    """

    def __init__(
        self,
        write_interval: float = 60.0,
        max_overhead: float = 0.01,
        memory_limit_mb: float = 200.0,
        **kwargs: Any,
    ) -> None:
        for name in ("every_n_train_steps", "train_time_interval"):
            if kwargs.get(name):
                raise ConfigError(
                    f"callbacks.model_checkpoint.{name}: checkpoints are taken at epoch ends "
                    "and written on a clock; set callbacks.model_checkpoint.write_interval "
                    "(seconds) instead"
                )
        if not write_interval >= 0:
            raise ConfigError(
                f"callbacks.model_checkpoint.write_interval={write_interval}: seconds, 0 or "
                "more (0 writes at every epoch end)"
            )
        if not 0 <= max_overhead < 1:
            raise ConfigError(
                f"callbacks.model_checkpoint.max_overhead={max_overhead}: a fraction of the "
                "training time from 0 (write on the clock only) to below 1, e.g. 0.01"
            )
        super().__init__(**kwargs)
        self.write_interval = float(write_interval)
        self.max_overhead = float(max_overhead)
        self.memory_limit_mb = float(memory_limit_mb)
        self._pending: dict[str, dict[str, Any]] = {}  # path -> checkpoint, written in order
        self._saving_last = False
        self._written_at = time.monotonic()
        # how long the last writes took; the fastest of them is what a write costs (a first,
        # cold write or one slowed by a busy disk does not stall the next ones)
        self._write_times: deque[float] = deque(maxlen=3)

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: runs checkpointed before this class resume into it
        key = super().state_key
        return ModelCheckpoint.__qualname__ + key.removeprefix(type(self).__qualname__)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._pending.clear()
        self._written_at = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._take_last(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._take_last(trainer, at_train_epoch_end=False)

    def _take_last(self, trainer: L.Trainer, at_train_epoch_end: bool) -> None:
        """``last.ckpt`` of every epoch: Lightning 2.6 takes it only at epochs that also
        took ``best.ckpt``, so without this a run that stops improving would resume from
        its best epoch, however long it trained after it."""
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)  # taken at this step already
            and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._flush(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        try:  # the checkpoints of the last epoch end, for a resume
            self._flush(trainer)
        except Exception as exc:  # the run's own exception is the one to see
            log.warning("the checkpoints kept in memory could not be written: %s", exc)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        self._saving_last = True
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self._saving_last = False

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        self._pending.pop(filepath, None)
        super()._remove_checkpoint(trainer, filepath)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Keep the checkpoint Lightning writes here in memory (or write it, see the class
        docstring); ``last.ckpt`` also writes what is kept when a write is due."""
        last = self._saving_last
        same = self._same_state(trainer) if last else None  # kept already: no copy to make
        checkpoint = same or trainer._checkpoint_connector.dump_checkpoint(self.save_weights_only)
        due = (last or not self.save_last) and self._due(trainer)
        if self._may_hold(trainer):
            self._pending.pop(filepath, None)  # re-inserted: last.ckpt after best.ckpt
            if due:  # written now: no copy to keep
                self._pending[filepath] = checkpoint
                self._flush(trainer)
            elif same is not None:
                self._pending[filepath] = same
            elif self._fits(trainer, checkpoint):
                self._pending[filepath] = _copied(checkpoint)
            elif not last:  # too large to keep: best.ckpt written whenever it improves
                self._write(trainer, filepath, checkpoint)
        elif not last or due:
            # held by several processes (sharded): written now, as Lightning does;
            # best.ckpt whenever the score improves
            started = time.perf_counter()
            self._write(trainer, filepath, checkpoint)
            trainer.strategy.barrier("TimedModelCheckpoint._save_checkpoint")
            if last:
                self._wrote(time.perf_counter() - started)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _fits(self, trainer: L.Trainer, checkpoint: dict[str, Any]) -> bool:
        """Whether the checkpoint is small enough to keep in memory, decided alike in every
        process (a rank's optimizer state can be larger than another's, e.g. a sharded
        optimizer under DDP; ranks that kept different checkpoints would then disagree on
        whether to dump the next one, which every rank must do together)."""
        fits = _tensor_bytes(checkpoint) <= self.memory_limit_mb * 2**20
        return bool(trainer.strategy.reduce_boolean_decision(fits, all=True))

    def _same_state(self, trainer: L.Trainer) -> dict[str, Any] | None:
        """``last.ckpt`` from the ``best.ckpt`` kept at this same step, when there is one
        (Lightning takes them one after the other at an epoch that improves): the same
        state, so it is not dumped and copied a second time (it shares the kept copy's
        tensors, which training never changes); only this callback's own state differs
        (``last_model_path``)."""
        best = self._pending.get(self._last_checkpoint_saved or "")
        if (
            best is None
            or self._last_global_step_saved != trainer.global_step
            or best.get("epoch") != trainer.current_epoch
            or "callbacks" not in best
        ):
            return None
        callbacks = dict(best["callbacks"])
        callbacks[self.state_key] = _copied(self.state_dict())
        return {**best, "callbacks": callbacks}

    @staticmethod
    def _may_hold(trainer: L.Trainer) -> bool:
        """One process, or data parallel with a whole model in every process (sharded
        strategies save their shards collectively)."""
        from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

        strategy = trainer.strategy
        return isinstance(strategy, SingleDeviceStrategy) or type(strategy) is DDPStrategy

    def _due(self, trainer: L.Trainer) -> bool:
        """A write is due: the interval is over, a write is cheap for the time trained since
        the last one, or this is the last epoch (the same answer in every process)."""
        elapsed = time.monotonic() - self._written_at
        due = elapsed >= self.write_interval or (
            self.max_overhead > 0
            and min(self._write_times, default=0.0) <= self.max_overhead * elapsed
        )
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        due = due or bool(
            trainer.should_stop
            or (max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs)
            or (trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps)
        )
        return bool(trainer.strategy.broadcast(due, src=0))

    def _write(self, trainer: L.Trainer, filepath: str, checkpoint: dict[str, Any]) -> None:
        trainer.strategy.save_checkpoint(checkpoint, filepath)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _wrote(self, seconds: float) -> None:
        self._write_times.append(seconds)
        self._written_at = time.monotonic()

    def _flush(self, trainer: L.Trainer) -> None:
        """Write the checkpoints kept in memory, best.ckpt before last.ckpt (a last.ckpt on
        disk never names a best score whose best.ckpt is not written yet)."""
        if not self._pending:
            return
        started = time.perf_counter()
        pending, self._pending = self._pending, {}
        for filepath, checkpoint in pending.items():
            self._write(trainer, filepath, checkpoint)
        self._wrote(time.perf_counter() - started)
