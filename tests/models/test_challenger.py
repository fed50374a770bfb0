"""The online challenger: River's pipeline semantics, numpy scoring, its state format."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from river import compose, linear_model, optim, preprocessing

from fraudstream.errors import ModelArtifactError
from fraudstream.models import Challenger, OnlineLogistic, fit_challenger
from fraudstream.models.base import sha256_hex

NAMES = tuple(f"f{i}" for i in range(6))


def synthetic(n: int = 1200, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES))) * np.array([1.0, 10.0, 100.0, 1.0, 1.0, 1.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X[:, 0] + X[:, 1] / 10 - 1.5)))).astype(np.int8)
    X[:, 3] = np.exp(2 * X[:, 3])
    X[rng.random(X.shape) < 0.05] = np.nan
    return X, y


def as_dict(row: np.ndarray) -> dict[str, float]:
    return {n: float(v) for n, v in zip(NAMES, row, strict=True) if not np.isnan(v)}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return synthetic()


RIVER_OPTIMIZERS = {
    "sgd": lambda: optim.SGD(0.01),
    "adam": lambda: optim.Adam(0.01),
    "adagrad": lambda: optim.AdaGrad(0.1),
    "ftrl": lambda: optim.FTRLProximal(alpha=0.05),
}


@pytest.mark.parametrize("optimizer", sorted(RIVER_OPTIMIZERS))
def test_learns_exactly_as_the_river_pipeline(optimizer, data):
    """Same dicts into ``StandardScaler | LogisticRegression``: same weights, bit for bit, and
    the numpy scores agree with River's ``predict_proba_one`` to rounding."""
    X, y = data
    ours = OnlineLogistic(NAMES, transform="none", optimizer=optimizer, undersample=None)
    river_model = compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=RIVER_OPTIMIZERS[optimizer]()),
    )
    for row, label in zip(X, y.tolist(), strict=True):
        ours.learn_one(as_dict(row), label)
        river_model.learn_one(as_dict(row), label)
    assert ours._logreg.weights == river_model["LogisticRegression"].weights
    assert ours._logreg.intercept == river_model["LogisticRegression"].intercept
    expected = np.array([river_model.predict_proba_one(as_dict(r))[True] for r in X[:300]])
    np.testing.assert_allclose(ours.score_many(X[:300]), expected, rtol=0, atol=1e-12)


def test_learn_many_equals_learn_one_in_order(data):
    X, y = data
    one = Challenger(NAMES, seed=4)
    for row, label in zip(X, y.tolist(), strict=True):
        one.learn_one(as_dict(row), label)
    many = fit_challenger(X, y, NAMES, seed=4)
    assert many.to_bytes() == one.to_bytes()
    reordered = fit_challenger(X[::-1], y[::-1], NAMES, seed=4)
    assert not np.array_equal(reordered.score_many(X), many.score_many(X))


def test_non_finite_values_count_as_missing(data):
    X, y = data
    model = fit_challenger(X, y, NAMES, seed=1)
    x = as_dict(X[5])
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert model.score_one({**x, "f2": bad}) == model.score_one(
            {k: v for k, v in x.items() if k != "f2"}
        )
    a, b = fit_challenger(X, y, NAMES, seed=1), fit_challenger(X, y, NAMES, seed=1)
    a.learn_one({**x, "f2": float("inf"), "f4": float("nan")}, 1)
    b.learn_one({k: v for k, v in x.items() if k not in ("f2", "f4")}, 1)
    assert a.to_bytes() == b.to_bytes()


def test_infinite_value_on_a_zero_variance_feature_warns_nothing(data):
    X, y = data
    X = X.copy()
    X[:, 5] = 7.0
    model = fit_challenger(X, y, NAMES, seed=1)
    row = X[:1].copy()
    row[0, 5] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.score_many(row) == model.score_many(X[:1])


def test_zero_variance_feature_contributes_nothing(data):
    X, y = data
    X = X.copy()
    X[:, 5] = 7.0
    model = fit_challenger(X, y, NAMES, seed=1)
    row = X[:1].copy()
    base = model.score_many(row)
    row[0, 5] = 1e6
    assert model.score_many(row) == base


def test_unseen_model_scores_one_half():
    model = Challenger(NAMES)
    np.testing.assert_array_equal(model.score_many(np.ones((3, len(NAMES)))), [0.5, 0.5, 0.5])


def test_extreme_logits_stay_in_range(data):
    X, y = data
    model = fit_challenger(X, y, NAMES, seed=1, transform="none", optimizer="sgd")
    huge = np.full((2, len(NAMES)), 1e300)
    huge[1] *= -1
    scores = model.score_many(huge)
    assert np.all((scores >= 0) & (scores <= 1)) and scores[0] != scores[1]


def test_sampler_seed_is_the_only_randomness(data):
    X, y = data
    assert (
        fit_challenger(X, y, NAMES, seed=1).to_bytes()
        != fit_challenger(X, y, NAMES, seed=2).to_bytes()
    )
    plain = [fit_challenger(X, y, NAMES, seed=s, undersample=None).score_many(X) for s in (1, 2)]
    np.testing.assert_array_equal(plain[0], plain[1])


def test_labels_validated(data):
    model = Challenger(NAMES)
    for bad in (2, -1, 0.5, "1", None):
        with pytest.raises(ValueError, match="0 or 1"):
            model.learn_one({"f0": 1.0}, bad)  # type: ignore[arg-type]
    model.learn_one({"f0": 1.0}, True)
    model.learn_one({"f0": 1.0}, np.int8(0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "params",
    [
        {"transform": "sqrt"},
        {"optimizer": "lbfgs"},
        {"lr": 0.0},
        {"undersample": 1.0},
        {"weight_pos": 0.0},
        {"l2": -1.0},
        {"seed": -1},
    ],
)
def test_bad_hyperparameters_rejected(params):
    with pytest.raises(ValueError):
        Challenger(NAMES, **params)


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="duplicates"):
        Challenger(("a", "b", "a"))


def test_defaults_are_the_documented_choice():
    manifest = Challenger(NAMES).manifest
    assert manifest["kind"] == "river-online-logistic"
    assert manifest["hyperparameters"] == {
        "transform": "both",
        "optimizer": "ftrl",
        "lr": 0.05,
        "l2": 0.0,
        "intercept_lr": 0.01,
        "weight_pos": 1.0,
        "weight_neg": 1.0,
        "undersample": 0.5,
    }
    assert manifest["pipeline"] == (
        "signed_log1p(both) | StandardScaler | RandomUnderSampler(0.5) | LogisticRegression(ftrl)"
    )


def test_artifact_is_json_state(data):
    X, y = data
    model = fit_challenger(X, y, NAMES, seed=1)
    raw = model.to_bytes()
    envelope = json.loads(raw)
    assert envelope["format"] == "fraudstream.online-logistic"
    state = envelope["state"]
    assert set(state) == {"scaler", "logreg", "sampler"}
    assert set(state["logreg"]["optimizer"]) == {"n_iterations", "z", "n"}
    weights = state["logreg"]["weights"]
    assert set(weights) == {*NAMES, *(f"log1p:{n}" for n in NAMES)}
    assert all(math.isfinite(w) for w in weights.values())


def test_state_inconsistent_with_hyperparameters_refused(data):
    X, y = data
    envelope = json.loads(fit_challenger(X, y, NAMES, seed=1).to_bytes())
    envelope["manifest"]["hyperparameters"]["undersample"] = None
    raw = json.dumps(envelope).encode()
    with pytest.raises(ModelArtifactError, match="sampler"):
        OnlineLogistic.from_bytes(raw, expected_sha256=sha256_hex(raw))
