"""The online challenger: River's ``StandardScaler | LogisticRegression``, scored in numpy.

It runs beside the champion (shadow): it scores every transaction and learns from late labels
(chargebacks, reviews) with the features the transaction had at decision time. The choice of
pipeline and its numbers are in ``docs/models.md`` (section "Challenger").

Pipeline, per labelled event (``learn_one``), exactly as River's ``compose.Pipeline`` applies it:

1. ``transform``: ``"none"`` keeps the features; ``"log"`` replaces each value ``v`` by
   ``sign(v) * log1p(|v|)``; ``"both"`` keeps the raw values and appends the logged ones (amounts,
   counts and sums are heavy-tailed; the log makes them usable by a linear model, the raw values
   keep the top of the range the log compresses). Missing and non-finite values are left out.
2. ``preprocessing.StandardScaler``: learns from the event, then scales it.
3. optionally ``imblearn.RandomUnderSampler`` (``undersample`` = desired share of positives).
4. ``linear_model.LogisticRegression`` with the chosen optimizer.

Scoring (``score_many``) does not go through River's per-event dicts: the scaler's means and
variances, the weights and the intercept are read into arrays after learning, and a batch is
scored with elementwise numpy and a row-wise ``np.add.reduce``. A matrix product (``X @ w``, what
River's own ``predict_proba_many`` does) goes through BLAS, whose kernels block rows and give a
row a different rounding depending on its batch: not batch-invariant. A missing value, or a
feature whose variance is still 0, contributes 0 after scaling, as River's ``transform_one`` and
its sparse dot product do; a non-finite value counts as missing.

Persistence is JSON of the River state (scaler counts, means and variances; weights, intercept,
optimizer state; sampler counts and random state), never pickle: floats are written with
``repr`` and read back exactly, so a restored model scores and keeps learning bit for bit like the
original.
"""

from __future__ import annotations

import collections
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Self, cast

import numpy as np
import river
from river import imblearn, linear_model, optim, preprocessing
from river.utils import VectorDict

from fraudstream.errors import ModelArtifactError
from fraudstream.models.base import Model, verify_sha256

__all__ = ["Challenger", "OnlineLogistic", "fit_challenger"]

Transform = Literal["none", "log", "both"]
OptimizerName = Literal["sgd", "adam", "adagrad", "ftrl"]

_FORMAT = "fraudstream.online-logistic"
_FORMAT_VERSION = 1
_KIND = "river-online-logistic"
_TRANSFORMS = ("none", "log", "both")
# The optimizer's learning rate (``alpha`` for FTRL-Proximal) when ``lr`` is not given.
_DEFAULT_LR = {"sgd": 0.01, "adam": 0.01, "adagrad": 0.1, "ftrl": 0.05}
_LOG_PREFIX = "log1p:"


def _signed_log1p(X: np.ndarray) -> np.ndarray:
    return np.copysign(np.log1p(np.abs(X)), X)


def _make_optimizer(name: str, lr: float) -> optim.base.Optimizer:
    if name == "sgd":
        return optim.SGD(lr)
    if name == "adam":
        return optim.Adam(lr)
    if name == "adagrad":
        return optim.AdaGrad(lr)
    if name == "ftrl":
        return optim.FTRLProximal(alpha=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(_DEFAULT_LR)}")


def _float_map(d: Mapping[str, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in d.items()}


def _label_counts(counter: Mapping[int, int]) -> list[list[int]]:
    return [[int(k), int(v)] for k, v in counter.items()]


class OnlineLogistic(Model):
    """Online logistic regression (River) over ``feature_names``; see the module docstring.

    The defaults are the chosen challenger: raw and signed-log1p features, standard scaling,
    under-sampling to a balanced label stream, FTRL-Proximal (``alpha`` 0.05).

    Parameters
    ----------
    feature_names
        Column order of ``score_many``; keys of ``score_one`` / ``learn_one``.
    transform
        ``"none"``, ``"log"`` or ``"both"`` (raw and signed-log1p features).
    optimizer
        ``"sgd"``, ``"adam"``, ``"adagrad"`` or ``"ftrl"`` (FTRL-Proximal, River's defaults for
        ``beta``, ``l1`` and ``l2``).
    lr
        The optimizer's learning rate (``alpha`` for FTRL); None takes the default for it.
    l2
        L2 penalty of the logistic regression.
    intercept_lr
        Learning rate of the intercept.
    weight_pos, weight_neg
        Class weights in the log loss.
    undersample
        Desired share of positives among the labels the regression learns from
        (``imblearn.RandomUnderSampler``); None for no sampler.
    seed
        Seeds the sampler, the only source of randomness.
    """

    learns_online = True

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        transform: Transform = "both",
        optimizer: OptimizerName = "ftrl",
        lr: float | None = None,
        l2: float = 0.0,
        intercept_lr: float = 0.01,
        weight_pos: float = 1.0,
        weight_neg: float = 1.0,
        undersample: float | None = 0.5,
        seed: int = 0,
    ) -> None:
        names = tuple(feature_names)
        if not names or len(set(names)) != len(names):
            raise ValueError("feature_names must be non-empty and without duplicates")
        if not all(isinstance(n, str) for n in names):
            raise TypeError("feature_names must be strings")
        if transform not in _TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; choose from {_TRANSFORMS}")
        if optimizer not in _DEFAULT_LR:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose from {sorted(_DEFAULT_LR)}")
        lr = _DEFAULT_LR[optimizer] if lr is None else float(lr)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if l2 < 0 or intercept_lr < 0 or weight_pos <= 0 or weight_neg <= 0:
            raise ValueError("l2 and intercept_lr must be >= 0, class weights > 0")
        if undersample is not None and not 0.0 < undersample < 1.0:
            raise ValueError(f"undersample must be in (0, 1) or None, got {undersample}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")

        self.feature_names = names
        self.transform: Transform = transform
        self.optimizer: OptimizerName = optimizer
        self.lr = lr
        self.l2 = float(l2)
        self.intercept_lr = float(intercept_lr)
        self.weight_pos = float(weight_pos)
        self.weight_neg = float(weight_neg)
        self.undersample = None if undersample is None else float(undersample)
        self.seed = seed

        if transform == "both":
            self._keys = (*names, *(_LOG_PREFIX + n for n in names))
        else:
            self._keys = names
        self._scaler = preprocessing.StandardScaler()
        self._logreg = linear_model.LogisticRegression(
            optimizer=_make_optimizer(optimizer, lr),
            loss=optim.losses.Log(weight_pos=self.weight_pos, weight_neg=self.weight_neg),
            l2=self.l2,
            intercept_lr=self.intercept_lr,
        )
        self._sampler: imblearn.RandomUnderSampler | None = None
        if self.undersample is not None:
            self._sampler = imblearn.RandomUnderSampler(
                self._logreg,
                desired_dist={0: 1.0 - self.undersample, 1: self.undersample},
                seed=seed,
            )
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None

    def __repr__(self) -> str:
        return (
            f"OnlineLogistic(n_features={len(self.feature_names)}, transform={self.transform!r}, "
            f"optimizer={self.optimizer!r}, lr={self.lr}, undersample={self.undersample})"
        )

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments (``seed`` aside)."""
        return {
            "transform": self.transform,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "l2": self.l2,
            "intercept_lr": self.intercept_lr,
            "weight_pos": self.weight_pos,
            "weight_neg": self.weight_neg,
            "undersample": self.undersample,
        }

    # -- scoring ---------------------------------------------------------------------------------

    def _features(self, X: np.ndarray) -> np.ndarray:
        if self.transform == "none":
            return X
        logged = _signed_log1p(X)
        if self.transform == "log":
            return logged
        return np.concatenate((X, logged), axis=1)

    def _state_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Means, standard deviations (inf where the variance is 0), weights, intercept."""
        if self._arrays is None:
            keys = self._keys
            means, variances = self._scaler.means, self._scaler.vars
            weights = self._logreg._weights.to_dict()
            mean = np.array([means.get(k, 0.0) for k in keys], dtype=np.float64)
            var = np.array([variances.get(k, 0.0) for k in keys], dtype=np.float64)
            std = np.full(len(keys), np.inf)
            np.sqrt(var, out=std, where=var > 0)
            w = np.array([weights.get(k, 0.0) for k in keys], dtype=np.float64)
            self._arrays = (mean, std, w, float(self._logreg.intercept))
        return self._arrays

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Fraud probabilities for the rows of ``X``; each row is computed on its own."""
        X = self._check_batch(X)
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        mean, std, w, intercept = self._state_arrays()
        # inf input over an infinite std is nan, exp overflows to inf: both are handled below
        with np.errstate(over="ignore", invalid="ignore"):
            Z = self._features(X)
            Z = Z - mean
            Z /= std
            Z[~np.isfinite(Z)] = 0.0
            Z *= w
            logit = np.add.reduce(Z, axis=1)  # per row (pairwise sum), never a BLAS product
            logit += intercept
            return 1.0 / (1.0 + np.exp(-logit))

    # -- learning --------------------------------------------------------------------------------

    def _learn_features(self, values: np.ndarray, y: int) -> None:
        finite = np.isfinite(values)
        if finite.all():
            x = dict(zip(self._keys, values.tolist(), strict=True))
        else:
            x = {
                k: v
                for k, v, ok in zip(self._keys, values.tolist(), finite.tolist(), strict=True)
                if ok
            }
        self._scaler.learn_one(x)
        scaled = self._scaler.transform_one(x)
        if self._sampler is not None:
            self._sampler.learn_one(scaled, y)
        else:
            self._logreg.learn_one(scaled, y)
        self._arrays = None

    @staticmethod
    def _label(y: Any) -> int:
        if isinstance(y, bool | np.bool_) or y in (0, 1):
            return int(y)
        raise ValueError(f"y must be 0 or 1, got {y!r}")

    def learn_one(self, x: Mapping[str, float], y: int) -> None:
        """Learn one labelled event; missing and non-finite features are left out."""
        label = self._label(y)
        self._learn_features(self._features(self.row(x))[0], label)

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        """``learn_one`` over the rows of ``X``, in order (the same state, bit for bit)."""
        X = self._check_batch(X)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
        labels = [self._label(v) for v in y.tolist()]
        for values, label in zip(self._features(X), labels, strict=True):
            self._learn_features(values, label)

    # -- manifest and persistence ----------------------------------------------------------------

    @property
    def manifest(self) -> dict[str, Any]:
        steps = ["StandardScaler", f"LogisticRegression({self.optimizer})"]
        if self.transform != "none":
            steps.insert(0, f"signed_log1p({self.transform})")
        if self.undersample is not None:
            steps.insert(-1, f"RandomUnderSampler({self.undersample})")
        return {
            "kind": _KIND,
            "pipeline": " | ".join(steps),
            "hyperparameters": self.hyperparameters,
            "seed": self.seed,
            "library_versions": {"river": river.__version__, "numpy": np.__version__},
            "feature_names": list(self.feature_names),
        }

    def _optimizer_state(self) -> dict[str, Any]:
        opt: Any = self._logreg.optimizer
        state: dict[str, Any] = {"n_iterations": int(opt.n_iterations)}
        if self.optimizer == "adam":
            for name in ("m", "v"):
                vec = getattr(opt, name)
                state[name] = None if vec is None else _float_map(vec.to_dict())
        elif self.optimizer == "adagrad":
            state["g2"] = _float_map(opt.g2)
        elif self.optimizer == "ftrl":
            state["z"] = _float_map(opt.z)
            state["n"] = _float_map(opt.n)
        return state

    def _set_optimizer_state(self, state: Mapping[str, Any]) -> None:
        opt: Any = self._logreg.optimizer
        opt.n_iterations = int(state["n_iterations"])
        if self.optimizer == "adam":
            for name in ("m", "v"):
                vec = state[name]
                setattr(opt, name, None if vec is None else VectorDict(_float_map(vec)))
        elif self.optimizer == "adagrad":
            opt.g2 = collections.defaultdict(float, _float_map(state["g2"]))
        elif self.optimizer == "ftrl":
            opt.z = collections.defaultdict(float, _float_map(state["z"]))
            opt.n = collections.defaultdict(float, _float_map(state["n"]))

    def _state(self) -> dict[str, Any]:
        sc = self._scaler
        state: dict[str, Any] = {
            "scaler": {
                "counts": {str(k): int(v) for k, v in sc.counts.items()},
                "means": _float_map(sc.means),
                "vars": _float_map(sc.vars),
            },
            "logreg": {
                "weights": _float_map(self._logreg._weights.to_dict()),
                "intercept": float(self._logreg.intercept),
                "optimizer": self._optimizer_state(),
            },
            "sampler": None,
        }
        if self._sampler is not None:
            s = self._sampler
            version, internal, gauss_next = s._rng.getstate()
            state["sampler"] = {
                "actual": _label_counts(s._actual_dist),
                "trained_on": _label_counts(s._trained_on_dist),
                "pivot": None if s._pivot is None else int(s._pivot),
                "rng": [version, list(internal), gauss_next],
            }
        return state

    def _set_state(self, state: Mapping[str, Any]) -> None:
        sc = self._scaler
        scaler = state["scaler"]
        sc.counts = collections.Counter({str(k): int(v) for k, v in scaler["counts"].items()})
        sc.means = collections.defaultdict(float, _float_map(scaler["means"]))
        sc.vars = collections.defaultdict(float, _float_map(scaler["vars"]))
        logreg = state["logreg"]
        self._logreg._weights = VectorDict(_float_map(logreg["weights"]))
        self._logreg.intercept = float(logreg["intercept"])
        self._set_optimizer_state(logreg["optimizer"])
        sampler = state["sampler"]
        if (sampler is None) != (self._sampler is None):
            raise ValueError("sampler state does not match the undersample hyperparameter")
        if self._sampler is not None:
            s: Any = self._sampler
            s._actual_dist = collections.Counter({int(k): int(v) for k, v in sampler["actual"]})
            s._trained_on_dist = collections.Counter(
                {int(k): int(v) for k, v in sampler["trained_on"]}
            )
            s._pivot = None if sampler["pivot"] is None else int(sampler["pivot"])
            version, internal, gauss_next = sampler["rng"]
            rng = random.Random()
            rng.setstate((int(version), tuple(int(i) for i in internal), gauss_next))
            s._rng = rng
        self._arrays = None

    def to_bytes(self) -> bytes:
        envelope = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "manifest": self.manifest,
            "state": self._state(),
        }
        return json.dumps(envelope, allow_nan=False, separators=(",", ":")).encode()

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
            params = dict(manifest["hyperparameters"])
            model = cls(manifest["feature_names"], seed=manifest["seed"], **params)
            model._set_state(envelope["state"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelArtifactError(f"{cls.__name__}: unreadable artifact: {exc}") from exc
        return cast(Self, model)


#: The challenger the flow runs in shadow (see docs/models.md, "Challenger").
Challenger = OnlineLogistic


def fit_challenger(
    X: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str],
    *,
    seed: int = 0,
    **hyperparameters: Any,
) -> OnlineLogistic:
    """A challenger warm-started on replayed history: rows of ``X`` must be in time order (the
    order their labels became known); it learns them one by one, as it would have online."""
    model = Challenger(feature_names, seed=seed, **hyperparameters)
    model.learn_many(X, y)
    return model
