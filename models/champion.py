"""The champion: a gradient-boosted tree model (XGBoost) trained offline, scored online."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xgboost as xgb

from fraudstream.models.base import Model

__all__ = ["XGBChampion"]


class XGBChampion(Model):
    """Scores events with an ``xgboost.Booster`` whose columns are ``feature_names``, in order.

    The booster is copied and set to ``nthread`` threads (1 by default): serving scores small
    batches, where thread start-up costs more than it saves; parallelism comes from the flow.
    """

    def __init__(self, booster: xgb.Booster, feature_names: Sequence[str], *, nthread: int = 1):
        names = tuple(feature_names)
        if len(set(names)) != len(names):
            raise ValueError("feature_names contains duplicates")
        if booster.num_features() != len(names):
            raise ValueError(
                f"booster expects {booster.num_features()} features, got {len(names)} names"
            )
        if nthread < 1:
            raise ValueError(f"nthread must be >= 1, got {nthread}")
        self._booster = booster.copy()
        self._booster.set_param({"nthread": nthread})
        self.feature_names = names
        self.nthread = nthread

    @property
    def booster(self) -> xgb.Booster:
        return self._booster

    def __repr__(self) -> str:
        return f"XGBChampion(n_features={len(self.feature_names)}, nthread={self.nthread})"

    def row(self, x: Mapping[str, float]) -> np.ndarray:
        """The 1 x n float32 row for ``x`` in feature order (missing -> nan, extras ignored)."""
        return np.array([[x.get(name, np.nan) for name in self.feature_names]], dtype=np.float32)

    def score_one(self, x: Mapping[str, float]) -> float:
        return float(self.score_many(self.row(x))[0])

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Fraud probabilities for the rows of ``X`` (float32 or float64, columns in order)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected a 2-D array with {len(self.feature_names)} columns, got {X.shape}"
            )
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        return np.asarray(self._booster.inplace_predict(X, validate_features=False))
