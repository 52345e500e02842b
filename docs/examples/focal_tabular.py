"""A user's own task: tabular classification with a focal loss instead of cross-entropy.

Train it from the CLI (with this folder on PYTHONPATH):

    python -m tasks +task=breast_cancer_mlp \
        task._name_=focal_tabular:FocalTabularClassification task.focal_gamma=2

or from Python:

    from tasks import compose, run
    run(compose("breast_cancer_mlp", ["task._name_=focal_tabular:FocalTabularClassification"]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tasks import TabularClassification


class FocalLoss(nn.Module):
    """Cross-entropy scaled by ``(1 - p_true) ** gamma``: easy rows count less."""

    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
        return (-((1 - log_p.exp()) ** self.gamma) * log_p).mean()


class FocalTabularClassification(TabularClassification):
    """:class:`~tasks.TabularClassification` trained with a focal loss.

    Args:
        focal_gamma: Focusing strength; 0 gives plain cross-entropy. Not ``gamma``: the
            base class already takes ``gamma`` (the learning-rate decay of
            ``scheduler=step``/``plateau``), and both would read one ``hparams.gamma``.
        **kwargs: Everything :class:`~tasks.TabularClassification` takes.
    """

    def __init__(self, focal_gamma: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # saves focal_gamma with the other hyperparameters

    def configure_loss(self) -> nn.Module:
        return FocalLoss(self.hparams.focal_gamma)
