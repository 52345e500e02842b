"""Putting per-rank results of a distributed run back together."""

from __future__ import annotations

from torch import Tensor


def unshard(stacked: Tensor, rows: int | None = None) -> Tensor:
    """Undo the distributed sharding of ``datamodules.base.TensorLoader`` (and of
    ``DistributedSampler``):
    rank ``r`` gets rows ``r, r + world, ...``, padded by wrapping around to equal shares.
    ``stacked`` is ``(world, rows per rank, ...)``; reading it column-wise restores the
    input order, and the wrapped padding after the first ``rows`` is dropped."""
    return stacked.transpose(0, 1).reshape(-1, *stacked.shape[2:])[:rows]
