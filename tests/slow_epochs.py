"""A callback that makes every training epoch last a while (for tests that interrupt runs),
loaded by import path: ``+callbacks.slow._target_=slow_epochs.SlowEpochs``."""

from __future__ import annotations

import time

import lightning as L


class SlowEpochs(L.Callback):
    def __init__(self, seconds: float = 0.5) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        time.sleep(self.seconds)  # before the checkpoints of the epoch are written


class BrokenCallback(L.Callback):
    """A callback with a bug in its constructor (not a config mistake)."""

    def __init__(self) -> None:
        raise RuntimeError("a bug in the callback")
