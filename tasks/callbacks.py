"""Callbacks the configs can add by name (``callbacks.<name>._target_``)."""

from __future__ import annotations

import lightning as L


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
