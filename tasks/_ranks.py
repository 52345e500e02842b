"""Old import path of :func:`tasks.batches.unshard`, which now sits beside the sharding rule."""

from __future__ import annotations

from tasks.batches import unshard

__all__ = ["unshard"]
