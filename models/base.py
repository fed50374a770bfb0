"""The model protocol (river-style) that every fraud model implements.

A model scores events whose features are named by ``feature_names``:

* ``score_many(X)``: float64 risk scores in ``[0, 1]`` (higher means riskier), one per row of a
  2-D array whose columns follow ``feature_names``. Missing values are ``nan``.
* ``score_one(x)``: the score of one event given as a mapping of feature name to value; missing
  features are tolerated, extra keys ignored, ``x`` is not mutated. It equals ``score_many`` of
  the row :meth:`Model.row` builds from ``x``, bit for bit.
* ``learn_one(x, y)`` / ``learn_many(X, y)``: online learning from a label (0 or 1). A model that
  does not learn online raises :class:`NotImplementedError` (``learns_online`` is ``False``).
* ``manifest``: a JSON-serialisable description (kind, hyperparameters, seed, library versions,
  feature names).
* ``to_bytes()`` / ``from_bytes(data, expected_sha256=...)``: persistence. The digest is checked
  before anything in ``data`` is parsed (:func:`verify_sha256`); keep :func:`sha256_hex` of the
  bytes beside them (a registry manifest) and hand it back on load.

Batch invariance: a row's score depends on that row and the model's state only, never on the
other rows of its batch, the batch size or the row's position. The live flow batches differently
from run to run and must still decide the same way; the conformance suite checks it for every
model class (``tests/models/test_conformance.py``).
"""

from __future__ import annotations

import abc
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np

from fraudstream.errors import ModelArtifactError

__all__ = ["Model", "sha256_hex", "verify_sha256"]


def sha256_hex(data: bytes) -> str:
    """The lowercase hex sha256 of ``data``: what a manifest records for ``to_bytes()``."""
    return hashlib.sha256(data).hexdigest()


def verify_sha256(data: bytes, expected_sha256: str, *, what: str) -> None:
    """Raise :class:`ModelArtifactError` unless ``data`` hashes to ``expected_sha256``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what}: expected bytes, got {type(data).__name__}")
    if not isinstance(expected_sha256, str):
        raise TypeError(f"{what}: expected_sha256 must be a hex string")
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, expected_sha256.lower()):
        raise ModelArtifactError(
            f"{what}: sha256 mismatch: expected {expected_sha256}, data has {actual}; not loaded"
        )


class Model(abc.ABC):
    """A fraud model over a fixed, ordered list of named features (see the module docstring)."""

    #: True when ``learn_one`` updates the model; False when it raises NotImplementedError.
    learns_online: ClassVar[bool] = False

    feature_names: tuple[str, ...]

    @abc.abstractmethod
    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Float64 scores in ``[0, 1]`` for the rows of ``X`` (columns in ``feature_names``
        order, ``nan`` where missing); batch-invariant."""

    def row(self, x: Mapping[str, float]) -> np.ndarray:
        """The 1 x n float64 row for ``x`` in feature order (missing or None -> nan; extras
        ignored)."""
        values = [x.get(name) for name in self.feature_names]
        return np.array([[np.nan if v is None else v for v in values]], dtype=np.float64)

    def score_one(self, x: Mapping[str, float]) -> float:
        """Score of one event: ``score_many`` of :meth:`row`, so both agree bit for bit."""
        return float(self.score_many(self.row(x))[0])

    def learn_one(self, x: Mapping[str, float], y: int) -> None:
        """Update the model with one labelled event (``y`` is 0 or 1)."""
        raise NotImplementedError(f"{type(self).__name__} does not learn online")

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        """``learn_one`` over the rows of ``X`` in order (``nan`` = missing); rows must be in
        the order their labels became known."""
        if not self.learns_online:
            raise NotImplementedError(f"{type(self).__name__} does not learn online")
        X = self._check_batch(X)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
        names = self.feature_names
        for values, label in zip(X.tolist(), y.tolist(), strict=True):
            self.learn_one({n: v for n, v in zip(names, values, strict=True) if v == v}, int(label))

    @property
    @abc.abstractmethod
    def manifest(self) -> dict[str, Any]:
        """Kind, hyperparameters, seed, library versions and feature names (JSON-serialisable)."""

    @abc.abstractmethod
    def to_bytes(self) -> bytes:
        """The model's full state; :meth:`from_bytes` restores an identical model."""

    @classmethod
    @abc.abstractmethod
    def from_bytes(cls, data: bytes, *, expected_sha256: str) -> Self:
        """Restore a model from :meth:`to_bytes` output after verifying its sha256;
        :class:`ModelArtifactError` when the digest or the content is wrong."""

    def _check_batch(self, X: np.ndarray) -> np.ndarray:
        """``X`` as a C-contiguous float64 (n, n_features) array (a copy when needed)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected a 2-D array with {len(self.feature_names)} columns, got {X.shape}"
            )
        return np.ascontiguousarray(X, dtype=np.float64)
