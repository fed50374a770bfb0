"""The per-event model protocol (river-style).

Every model scores one event as a ``dict`` of feature name to value (``score_one``, higher means
riskier). Batch scoring (``score_many``) and online learning (``learn_one``) are optional: a model
that does not support them raises :class:`NotImplementedError`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np

__all__ = ["Model"]


class Model(abc.ABC):
    """A fraud model: ``score_one`` is required, the batch and learning forms are optional."""

    @abc.abstractmethod
    def score_one(self, x: Mapping[str, float]) -> float:
        """Risk score of one event; missing features are tolerated, extra keys ignored."""

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Risk scores of a 2-D batch whose columns follow the model's feature order."""
        raise NotImplementedError(f"{type(self).__name__} does not score batches")

    def learn_one(self, x: Mapping[str, float], y: int) -> None:
        """Update the model with one labelled event."""
        raise NotImplementedError(f"{type(self).__name__} does not learn online")
