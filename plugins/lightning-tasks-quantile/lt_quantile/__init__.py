"""Quantile regression for lightning-tasks: prediction intervals for table rows.

Registered through entry points (see ``pyproject.toml``); after ``pip install`` the
presets run as ``python -m tasks +task=quantile_diabetes``.
"""

from lt_quantile.data import HeteroscedasticDataModule
from lt_quantile.task import PinballLoss, TabularQuantileRegression

#: The lightning-tasks plugin API this package is written against (``tasks.API_VERSION``).
LIGHTNING_TASKS_API = 1

__version__ = "0.1.0"
__all__ = ["HeteroscedasticDataModule", "PinballLoss", "TabularQuantileRegression"]
