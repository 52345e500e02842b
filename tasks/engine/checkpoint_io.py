"""Checkpoints written atomically in their own folder.

Lightning's default writer stages a checkpoint in the system's temporary folder and moves it
over: on a full disk that leaves a truncated ``best.ckpt`` behind. Here the bytes go to a
temporary file beside the target, are flushed to disk, and replace it in one rename, so a
checkpoint file is always the old one or the new one, whole.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tasks._files import write_bytes_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        if "://" in str(path):  # a remote store: Lightning's own writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes_atomic(target, buffer.getvalue())
