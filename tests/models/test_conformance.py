"""Conformance suite: every model class of ``fraudstream.models`` honours ``models/base.py``.

Model classes are collected, not listed: every concrete subclass of ``Model`` defined in a module
of ``fraudstream.models``. Each needs at least one entry in ``SPECS`` (how to train it, seeded);
``test_every_model_class_has_a_spec`` fails for a class without one, so a new model cannot skip
the suite.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import pickle
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import fraudstream.models
from fraudstream.errors import ModelArtifactError
from fraudstream.models import Model, OnlineLogistic, XGBChampion, fit_challenger, train_champion
from fraudstream.models.base import sha256_hex

N_FEATURES = 8
NAMES = tuple(f"f{i}" for i in range(N_FEATURES))
N_TRAIN = 1500

Fit = Callable[[np.ndarray, np.ndarray, tuple[str, ...], int], Model]


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Heavy-tailed and signed features, one constant column, 5 % missing values."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    logit = 2.0 * X[:, 0] - 1.5 * X[:, 1] + X[:, 2] * X[:, 3] - 2.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    X[:, 4] = np.exp(3.0 * X[:, 4])  # amounts
    X[:, 5] = np.round(np.abs(X[:, 5]) * 40)  # counts
    X[:, 6] = 1.0  # constant: zero variance
    X[:, 1] *= 1000.0
    X[rng.random(X.shape) < 0.05] = np.nan
    return X, y


@dataclass(frozen=True)
class Spec:
    """How to train one configuration of a model class, from rows in time order and a seed."""

    name: str
    fit: Fit


def _champion(X: np.ndarray, y: np.ndarray, names: tuple[str, ...], seed: int) -> Model:
    result = train_champion(X, y, names, seed=seed, n_estimators=15, max_depth=3)
    return XGBChampion(result.booster, names)


def _challenger(**params: object) -> Fit:
    return lambda X, y, names, seed: fit_challenger(X, y, names, seed=seed, **params)


SPECS: dict[type[Model], list[Spec]] = {
    XGBChampion: [Spec("default", _champion)],
    OnlineLogistic: [
        Spec("default", _challenger()),
        Spec("sgd-raw", _challenger(transform="none", optimizer="sgd", undersample=None)),
        Spec("adam-log", _challenger(transform="log", optimizer="adam", undersample=None)),
        Spec(
            "adagrad-weighted",
            _challenger(optimizer="adagrad", weight_neg=2.0, l2=0.01, undersample=None),
        ),
        Spec("sgd-undersampled", _challenger(optimizer="sgd", undersample=0.3)),
    ],
}


def model_classes() -> list[type[Model]]:
    """Every concrete ``Model`` subclass defined in a module of ``fraudstream.models``."""
    for module in pkgutil.iter_modules(fraudstream.models.__path__):
        importlib.import_module(f"fraudstream.models.{module.name}")
    found: set[type[Model]] = set()
    stack: list[type[Model]] = [Model]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if not inspect.isabstract(sub) and sub.__module__.startswith("fraudstream.models."):
                found.add(sub)
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


CASES = [(cls, spec) for cls in model_classes() for spec in SPECS.get(cls, [])]
IDS = [f"{cls.__name__}-{spec.name}" for cls, spec in CASES]
ONLINE = [(c, s) for c, s in CASES if c.learns_online]
ONLINE_IDS = [f"{c.__name__}-{s.name}" for c, s in ONLINE]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return synthetic(N_TRAIN + 400, seed=5)


@pytest.fixture(scope="module")
def train(data) -> tuple[np.ndarray, np.ndarray]:
    X, y = data
    return X[:N_TRAIN], y[:N_TRAIN]


@pytest.fixture(scope="module")
def X_new(data) -> np.ndarray:
    return data[0][N_TRAIN:]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case(request, train) -> tuple[type[Model], Spec, Model]:
    cls, spec = request.param
    model = spec.fit(*train, NAMES, 3)
    assert type(model) is cls
    return cls, spec, model


def as_dict(row: np.ndarray) -> dict[str, float]:
    return {n: float(v) for n, v in zip(NAMES, row, strict=True) if not np.isnan(v)}


def restore(cls: type[Model], data: bytes) -> Model:
    return cls.from_bytes(data, expected_sha256=sha256_hex(data))


def test_every_model_class_has_a_spec():
    classes = model_classes()
    assert XGBChampion in classes and OnlineLogistic in classes
    missing = [c.__qualname__ for c in classes if not SPECS.get(c)]
    assert not missing, f"model classes without a conformance spec: {missing}"


def test_scores_are_probabilities(case, X_new):
    _, _, model = case
    scores = model.score_many(X_new)
    assert scores.dtype == np.float64 and scores.shape == (len(X_new),)
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    assert scores.std() > 0


def test_score_one_equals_score_many_row(case, X_new):
    _, _, model = case
    batch = model.score_many(X_new[:150])
    one = np.array([model.score_one(as_dict(row)) for row in X_new[:150]])
    np.testing.assert_array_equal(one, batch)


def test_input_not_mutated(case, X_new):
    _, _, model = case
    x = as_dict(X_new[0])
    x.update({"not_a_feature": 12.0, "note": "text"})
    before = copy.deepcopy(x)
    model.score_one(x)
    assert x == before
    X = X_new[:50].copy()
    model.score_many(X)
    np.testing.assert_array_equal(X, X_new[:50])


def test_feature_order_irrelevant(case, X_new):
    _, _, model = case
    rng = np.random.default_rng(1)
    for row in X_new[:20]:
        x = as_dict(row)
        items = list(x.items())
        shuffled = dict(items[i] for i in rng.permutation(len(items)))
        assert model.score_one(dict(reversed(items))) == model.score_one(x)
        assert model.score_one(shuffled) == model.score_one(x)


def test_missing_features_tolerated(case, X_new):
    _, _, model = case
    empty = model.score_one({})
    assert 0.0 <= empty <= 1.0
    x = {"f0": 2.5, "f4": 30.0}
    assert model.score_one(x) == model.score_one({**x, "f1": None, "f2": float("nan")})
    row = np.full((1, N_FEATURES), np.nan)
    row[0, 0], row[0, 4] = 2.5, 30.0
    assert model.score_one(x) == model.score_many(row)[0]


def test_batch_invariance(case, X_new):
    """A row's score is bit-identical alone, in any batch, at any position, in any layout."""
    _, _, model = case
    X = X_new
    full = model.score_many(X)
    rng = np.random.default_rng(7)
    for _ in range(25):
        cuts = np.sort(rng.choice(np.arange(1, len(X)), size=rng.integers(1, 40), replace=False))
        parts = [model.score_many(part) for part in np.split(X, cuts)]
        np.testing.assert_array_equal(np.concatenate(parts), full)
    alone = np.array([model.score_many(X[i : i + 1])[0] for i in range(len(X))])
    np.testing.assert_array_equal(alone, full)
    perm = rng.permutation(len(X))
    np.testing.assert_array_equal(model.score_many(X[perm]), full[perm])
    np.testing.assert_array_equal(model.score_many(np.asfortranarray(X)), full)
    np.testing.assert_array_equal(model.score_many(X[::3]), full[::3])
    for size in (1, 2, 7, 64, 65, 300):
        batch = X[rng.choice(len(X), size=size, replace=False)]
        for pos in {0, size // 2, size - 1}:
            batch_with_row = batch.copy()
            batch_with_row[pos] = X[11]
            assert model.score_many(batch_with_row)[pos] == full[11]


def test_round_trip(case, X_new):
    cls, _, model = case
    data = model.to_bytes()
    assert isinstance(data, bytes)
    restored = restore(cls, data)
    assert type(restored) is cls
    assert restored.feature_names == model.feature_names
    assert restored.manifest == model.manifest
    np.testing.assert_array_equal(restored.score_many(X_new), model.score_many(X_new))
    assert restored.to_bytes() == data


@pytest.mark.parametrize(("cls", "spec"), ONLINE, ids=ONLINE_IDS)
def test_round_trip_keeps_learning_identically(cls, spec, train, X_new):
    X, y = train
    original = spec.fit(X[:1000], y[:1000], NAMES, 3)
    restored = restore(cls, original.to_bytes())
    for model in (original, restored):
        model.learn_many(X[1000:1300], y[1000:1300])
        for row, label in zip(X[1300:], y[1300:], strict=True):
            model.learn_one(as_dict(row), int(label))
    np.testing.assert_array_equal(restored.score_many(X_new), original.score_many(X_new))
    assert restored.to_bytes() == original.to_bytes()


def test_seeded_training_is_deterministic(case, train, X_new):
    _, spec, model = case
    again = spec.fit(*train, NAMES, 3)
    np.testing.assert_array_equal(again.score_many(X_new), model.score_many(X_new))
    assert again.to_bytes() == model.to_bytes()


def test_tampered_bytes_refused(case):
    cls, _, model = case
    data = model.to_bytes()
    digest = sha256_hex(data)
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(ModelArtifactError, match="sha256"):
        cls.from_bytes(bytes(tampered), expected_sha256=digest)
    with pytest.raises(ModelArtifactError, match="sha256"):
        cls.from_bytes(data, expected_sha256=sha256_hex(b"other"))
    cut = data[:-10]
    with pytest.raises(ModelArtifactError, match="sha256"):
        cls.from_bytes(cut, expected_sha256=digest)


_UNPICKLED: list[str] = []


class _Payload:
    def __reduce__(self):
        return (_UNPICKLED.append, ("code ran",))


def test_verified_but_foreign_bytes_refused_without_unpickling(case):
    """Even with a matching digest, only the model's own format is parsed, never pickle."""
    cls, _, model = case
    payload = pickle.dumps(_Payload())
    for data in (
        payload,
        b"not json",
        json.dumps({"format": "something-else"}).encode(),
        model.to_bytes()[:-1],
    ):
        with pytest.raises(ModelArtifactError, match="unreadable"):
            restore(cls, data)
    assert _UNPICKLED == []
    others = [c for c, _ in CASES if c is not cls]
    for other in others:
        with pytest.raises(ModelArtifactError, match="unreadable"):
            restore(other, model.to_bytes())


def test_learning_matches_the_flag(case, train, X_new):
    cls, spec, model = case
    if not cls.learns_online:
        with pytest.raises(NotImplementedError):
            model.learn_one(as_dict(X_new[0]), 1)
        with pytest.raises(NotImplementedError):
            model.learn_many(X_new[:2], np.array([0, 1]))
        return
    fresh = spec.fit(*train, NAMES, 3)
    before = fresh.score_many(X_new)
    low = int(np.argmin(before))
    x = as_dict(X_new[low])
    x["not_a_feature"] = 1.0
    kept = dict(x)
    for _ in range(20):
        fresh.learn_one(x, 1)
    assert x == kept
    fresh.learn_one({}, 0)  # nothing known: tolerated
    after = fresh.score_many(X_new)
    assert after[low] > before[low]
    assert np.all((after >= 0) & (after <= 1))
    with pytest.raises(ValueError):
        fresh.learn_many(X_new[:3], np.array([0, 1]))


def test_manifest(case):
    _, _, model = case
    manifest = model.manifest
    json.dumps(manifest, allow_nan=False)
    assert {"kind", "hyperparameters", "seed", "library_versions", "feature_names"} <= set(manifest)
    assert manifest["feature_names"] == list(model.feature_names) == list(NAMES)
    assert manifest["seed"] == 3
    assert manifest["library_versions"]
    manifest["hyperparameters"]["injected"] = 1
    manifest["feature_names"].append("x")
    assert model.manifest != manifest


def test_shape_checks(case):
    _, _, model = case
    assert model.score_many(np.empty((0, N_FEATURES))).shape == (0,)
    assert model.score_many(np.empty((0, N_FEATURES))).dtype == np.float64
    with pytest.raises(ValueError, match=f"{N_FEATURES} columns"):
        model.score_many(np.zeros((2, N_FEATURES - 1)))
    with pytest.raises(ValueError, match=f"{N_FEATURES} columns"):
        model.score_many(np.zeros(N_FEATURES))
