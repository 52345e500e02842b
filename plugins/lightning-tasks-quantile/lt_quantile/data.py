"""A table whose noise grows with the inputs, with known true quantiles."""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from datamodules import TabularDataModule
from tasks import ConfigError


class HeteroscedasticDataModule(TabularDataModule):
    """Rows ``x0..x3 ~ U(-2, 2)`` and ``y = x0 + sin(2 x1) + s(x) * e``, ``e ~ N(0, 1)``,
    with noise scale ``s(x) = noise * (0.2 + |x2|)``; ``x3`` is irrelevant.

    A point model can only learn the mean; quantile regression must also learn that
    the spread depends on ``x2``. The true ``q``-quantile of a row is
    ``mean + s(x) * Phi^-1(q)`` (:meth:`true_quantile`), so an interval's coverage and
    width can be checked against the truth. Generated from ``generator_seed``, so the
    table is the same on every process and every run; the split uses ``seed``.

    Args:
        rows: Number of rows generated.
        noise: Noise multiplier.
        generator_seed: Seed of the generated table.
        **kwargs: Split and loader settings of :class:`~datamodules.TabularDataModule`.
    """

    FEATURES = ("x0", "x1", "x2", "x3")

    def __init__(
        self,
        rows: int = 4000,
        noise: float = 1.0,
        generator_seed: int = 0,
        target: str = "y",
        problem: str = "regression",
        **kwargs: Any,
    ) -> None:
        if rows < 10:
            raise ConfigError(f"datamodule.rows must be >= 10, got {rows}")
        if noise <= 0:
            raise ConfigError(f"datamodule.noise must be > 0, got {noise}")
        if target != "y" or problem != "regression":
            raise ConfigError("the heteroscedastic table has one regression target, 'y'")
        super().__init__(target=target, problem=problem, **kwargs)

    @staticmethod
    def _mean_and_scale(frame: pd.DataFrame, noise: float) -> tuple[np.ndarray, np.ndarray]:
        mean = frame["x0"].to_numpy() + np.sin(2 * frame["x1"].to_numpy())
        return mean, noise * (0.2 + np.abs(frame["x2"].to_numpy()))

    def load_frame(self) -> pd.DataFrame:
        hp = self.hparams
        rng = np.random.default_rng(hp.generator_seed)
        frame = pd.DataFrame(rng.uniform(-2, 2, size=(hp.rows, 4)), columns=list(self.FEATURES))
        mean, scale = self._mean_and_scale(frame, hp.noise)
        frame["y"] = mean + scale * rng.standard_normal(hp.rows)
        return frame

    def true_quantile(self, frame: pd.DataFrame, q: float) -> np.ndarray:
        """The true ``q``-quantile of ``y`` for each row of ``frame`` (feature columns)."""
        mean, scale = self._mean_and_scale(frame, self.hparams.noise)
        return mean + scale * NormalDist().inv_cdf(q)
