"""The champion: a gradient-boosted tree model (XGBoost) trained offline, scored online.

Persistence (:meth:`XGBChampion.to_bytes`) is a JSON envelope, never pickle: the manifest, the
serving thread count and the booster in XGBoost's own UBJSON format (base64).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import xgboost as xgb

from fraudstream.errors import ModelArtifactError
from fraudstream.models.base import Model, verify_sha256

__all__ = ["XGBChampion"]

_FORMAT = "fraudstream.xgb-champion"
_FORMAT_VERSION = 1
_KIND = "xgboost-champion"

# (section of the booster's configuration, key) for each hyperparameter in the manifest
_HYPERPARAMETERS = {
    "objective": ("learner_train_param", "objective"),
    "booster": ("learner_train_param", "booster"),
    "tree_method": ("gbtree_train_param", "tree_method"),
    "max_depth": ("tree_train_param", "max_depth"),
    "eta": ("tree_train_param", "eta"),
    "min_child_weight": ("tree_train_param", "min_child_weight"),
    "subsample": ("tree_train_param", "subsample"),
    "colsample_bytree": ("tree_train_param", "colsample_bytree"),
    "lambda": ("tree_train_param", "lambda"),
    "alpha": ("tree_train_param", "alpha"),
    "max_bin": ("tree_train_param", "max_bin"),
}


def _configuration(booster: xgb.Booster) -> tuple[dict[str, Any], int | None]:
    """Hyperparameters and seed as the booster's configuration reports them (strings, as
    XGBoost keeps them), plus the number of boosted rounds."""
    config = json.loads(booster.save_config())
    learner = config.get("learner", {})
    gbm = learner.get("gradient_booster", {})
    sections = {
        "learner_train_param": learner.get("learner_train_param", {}),
        "gbtree_train_param": gbm.get("gbtree_train_param", {}),
        "tree_train_param": gbm.get("tree_train_param", {}),
    }
    params: dict[str, Any] = {
        name: sections[section][key]
        for name, (section, key) in _HYPERPARAMETERS.items()
        if key in sections[section]
    }
    params["num_boosted_rounds"] = booster.num_boosted_rounds()
    seed = learner.get("generic_param", {}).get("seed")
    return params, (int(seed) if seed is not None else None)


class XGBChampion(Model):
    """Scores events with an ``xgboost.Booster`` whose columns are ``feature_names``, in order.

    The booster is copied and set to ``nthread`` threads (1 by default): serving scores small
    batches, where thread start-up costs more than it saves; parallelism comes from the flow.

    Scores are XGBoost's float32 probabilities widened to float64 (exactly). XGBoost predicts
    each row on its own (sum of the trees' leaves, in tree order), so scores are batch-invariant.
    """

    learns_online = False

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
        self._hyperparameters, self._seed = _configuration(booster)
        self._booster = booster.copy()
        self._booster.set_param({"nthread": nthread})
        self.feature_names = names
        self.nthread = nthread

    @property
    def booster(self) -> xgb.Booster:
        return self._booster

    def __repr__(self) -> str:
        return f"XGBChampion(n_features={len(self.feature_names)}, nthread={self.nthread})"

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
            return np.empty(0, dtype=np.float64)
        X = np.ascontiguousarray(X)
        scores = self._booster.inplace_predict(X, validate_features=False)
        return np.asarray(scores, dtype=np.float64)

    @property
    def manifest(self) -> dict[str, Any]:
        return {
            "kind": _KIND,
            "hyperparameters": dict(self._hyperparameters),
            "seed": self._seed,
            "serving": {"nthread": self.nthread},
            "library_versions": {"xgboost": xgb.__version__, "numpy": np.__version__},
            "feature_names": list(self.feature_names),
        }

    def to_bytes(self) -> bytes:
        envelope = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "manifest": self.manifest,
            "booster_ubj": base64.b64encode(bytes(self._booster.save_raw("ubj"))).decode("ascii"),
        }
        return json.dumps(envelope, sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_sha256: str) -> Self:
        verify_sha256(data, expected_sha256, what=cls.__name__)
        try:
            envelope = json.loads(data)
            if not isinstance(envelope, dict) or envelope.get("format") != _FORMAT:
                raise ValueError(f"not a {_FORMAT} artifact")
            if envelope.get("format_version") != _FORMAT_VERSION:
                raise ValueError(f"unsupported format_version {envelope.get('format_version')!r}")
            manifest = envelope["manifest"]
            names = manifest["feature_names"]
            nthread = manifest["serving"]["nthread"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("feature_names is not a list of strings")
            raw = base64.b64decode(envelope["booster_ubj"], validate=True)
            booster = xgb.Booster()
            booster.load_model(bytearray(raw))
            model = cls(booster, names, nthread=nthread)
            # Training hyperparameters are not in XGBoost's model file: keep the recorded ones.
            model._hyperparameters = dict(manifest["hyperparameters"])
            model._seed = manifest["seed"]
        except (ValueError, KeyError, TypeError, binascii.Error, xgb.core.XGBoostError) as exc:
            raise ModelArtifactError(f"{cls.__name__}: unreadable artifact: {exc}") from exc
        return model
