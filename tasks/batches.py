"""Batches as tasks and datamodules both see them: step groups, the in-memory loader, sharding."""

# A leaf that both packages import: torch, the standard library and tasks.errors only, never
# tasks.base, tasks.fused or datamodules (the import-linter contracts in pyproject.toml,
# checked by tests/test_architecture.py).

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from tasks.errors import ConfigError


class StepGroup(list):
    """Consecutive batches that one Lightning step trains (or validates) on, in order."""


def batch_rows(batch: Any) -> int:
    """Rows in a batch (tensor, tuple, dict) or in every batch of a step group."""
    if isinstance(batch, StepGroup):
        return sum(batch_rows(b) for b in batch)
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, dict) else batch
    if isinstance(values, (list, tuple)) or isinstance(batch, dict):
        for value in values:
            rows = batch_rows(value)
            if rows:
                return rows
    return 0


def batch_count(batch: Any) -> int:
    """Batches in what one Lightning step received: the length of a step group, else 1."""
    return len(batch) if isinstance(batch, StepGroup) else 1


# -- the distributed sharding rule and its inverse ------------------------------------------
def rows_per_rank(rows: int, world: int) -> int:
    """Rows each of ``world`` ranks takes from ``rows`` rows: equal shares, rounded up."""
    return -(-rows // world)


def shard(index: Tensor, rank: int, world: int) -> Tensor:
    """Rank ``rank``'s share of the row order ``index`` (the rule of ``DistributedSampler``):
    positions ``rank, rank + world, ...`` of ``index`` padded by wrapping around, so that every
    rank gets :func:`rows_per_rank` rows and ranks step in lockstep. :func:`unshard` undoes it."""
    n = len(index)
    total = rows_per_rank(n, world) * world
    return torch.cat([index, index[: total - n]])[rank::world]


def unshard(stacked: Tensor, rows: int | None = None) -> Tensor:
    """Undo the distributed sharding of :class:`TensorLoader` (:func:`shard`, and that of
    ``DistributedSampler``):
    rank ``r`` gets rows ``r, r + world, ...``, padded by wrapping around to equal shares.
    ``stacked`` is ``(world, rows per rank, ...)``; reading it column-wise restores the
    input order, and the wrapped padding after the first ``rows`` is dropped."""
    return stacked.transpose(0, 1).reshape(-1, *stacked.shape[2:])[:rows]


class TensorLoader:
    """Batches sliced from tensors held in memory: no per-row collation, no workers.

    Each epoch draws a fresh permutation from a seeded generator (``seed + epoch``),
    so runs are reproducible. Under ``torch.distributed`` every rank takes an
    interleaved, equally long share of the indices (padded by wrapping around, as
    ``DistributedSampler`` does: :func:`shard`) so that ranks step in lockstep;
    :func:`unshard` puts gathered shares back in input order.

    Args:
        tensors: Tensors with the same first dimension.
        batch_size: Rows per batch.
        shuffle: Permute the rows every epoch.
        drop_last: Drop the last, smaller batch (keeps shapes fixed, e.g. under compile).
        seed: Base seed of the permutation.
        collate: Turns each batch of slices into what the model receives, e.g. window
            start indices into windows gathered from a strided view (nothing is
            materialised beyond the batch).
        group: Yield :class:`StepGroup` lists of this many consecutive
            batches (the last may be shorter), for tasks that take several optimizer
            steps per Lightning step; the length counts groups.
        epoch_rows: Rows per epoch when fewer than all: with ``shuffle``, the first
            ``epoch_rows`` of each epoch's permutation (a fresh random subset every
            epoch), else the first rows. None: every row.
    """

    def __init__(
        self,
        *tensors: Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        collate: Callable[[tuple[Tensor, ...]], Any] | None = None,
        group: int = 1,
        epoch_rows: int | None = None,
    ) -> None:
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.collate = collate
        self.group = max(1, int(group))
        if epoch_rows is not None and epoch_rows < 1:
            raise ConfigError(f"rows per epoch must be >= 1, got {epoch_rows}")
        self.epoch_rows = epoch_rows
        self.epoch = 0

    @staticmethod
    def _world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _epoch_size(self) -> int:
        n = len(self.tensors[0])
        return n if self.epoch_rows is None else min(n, int(self.epoch_rows))

    def _rows(self) -> int:
        _, world = self._world()
        return rows_per_rank(self._epoch_size(), world)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next permutation as epoch ``epoch`` (``seed + epoch``): called when each
        training epoch starts (``tasks.callbacks.ResumeState``), so a run resumed at epoch k
        shuffles as the uninterrupted run's epoch k did, not as epoch 0."""
        self.epoch = int(epoch)

    @property
    def num_batches(self) -> int:
        """Batches per epoch (on this rank), whatever the grouping."""
        rows = self._rows()
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def __len__(self) -> int:
        return -(-self.num_batches // self.group)

    def __iter__(self) -> Iterator[Any]:
        batches = self._slices()
        if self.collate is not None:
            batches = map(self.collate, batches)
        return batches if self.group == 1 else self._groups(batches)

    def _groups(self, batches: Iterator[Any]) -> Iterator[StepGroup]:
        group = StepGroup()
        for batch in batches:
            group.append(batch)
            if len(group) == self.group:
                yield group
                group = StepGroup()
        if group:
            yield group

    def _slices(self) -> Iterator[tuple[Tensor, ...]]:
        n = len(self.tensors[0])
        rank, world = self._world()
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            index: Tensor | None = torch.randperm(n, generator=generator)[: self._epoch_size()]
        else:
            index = None
            n = self._epoch_size()
        self.epoch += 1
        if world > 1:
            index = shard(torch.arange(n) if index is None else index, rank, world)
        rows = n if index is None else len(index)
        stop = rows - rows % self.batch_size if self.drop_last else rows
        for start in range(0, stop, self.batch_size):
            end = min(start + self.batch_size, stop)
            if index is None:  # contiguous views, no copy
                yield tuple(t[start:end] for t in self.tensors)
            else:
                part = index[start:end]
                yield tuple(t[part] for t in self.tensors)
