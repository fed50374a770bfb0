"""The champion's scoring contract, training determinism, thresholds and metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fraudstream.models import (
    XGBChampion,
    action_for,
    actions,
    auc_roc,
    average_precision,
    train_champion,
)
from fraudstream.models.train import threshold_for_fpr

N_FEATURES = 10
NAMES = tuple(f"f{i}" for i in range(N_FEATURES))


def synthetic(n: int = 2000, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    logit = 2.0 * X[:, 0] - 1.5 * X[:, 1] + X[:, 2] * X[:, 3] - 2.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values, as in serving
    return X, y


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return synthetic()


@pytest.fixture(scope="module")
def trained(data):
    X, y = data
    return train_champion(X, y, NAMES, seed=3, n_estimators=20, max_depth=4)


@pytest.fixture(scope="module")
def champion(trained) -> XGBChampion:
    return XGBChampion(trained.booster, NAMES)


def as_dict(row: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(NAMES, row, strict=True) if not np.isnan(v)}


def test_score_many_matches_score_one(champion, data):
    X = data[0][:200]
    batch = champion.score_many(X)
    assert batch.shape == (200,)
    one = np.array([champion.score_one(as_dict(row)) for row in X])
    np.testing.assert_array_equal(batch, one.astype(batch.dtype))


def test_float32_and_float64_agree(champion, data):
    X = data[0][:100]
    np.testing.assert_array_equal(champion.score_many(X), champion.score_many(X.astype(np.float32)))


def test_scores_are_probabilities(champion, data):
    scores = champion.score_many(data[0])
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores.std() > 0


def test_input_not_mutated_and_order_irrelevant(champion, data):
    x = as_dict(data[0][5])
    x["not_a_feature"] = 123.0
    before = dict(x)
    score = champion.score_one(x)
    assert x == before
    reordered = dict(reversed(list(x.items())))
    assert champion.score_one(reordered) == score


def test_missing_features_tolerated(champion):
    assert 0.0 <= champion.score_one({}) <= 1.0
    assert champion.score_one({"f0": 3.0}) == champion.score_one({"f0": 3.0, "f9": float("nan")})


def test_wrong_width_rejected(champion):
    with pytest.raises(ValueError, match="10 columns"):
        champion.score_many(np.zeros((2, 9)))


def test_learn_one_unsupported(champion):
    with pytest.raises(NotImplementedError):
        champion.learn_one({"f0": 1.0}, 1)


def _nthread(booster) -> str:
    return json.loads(booster.save_config())["learner"]["generic_param"]["nthread"]


def test_serving_is_single_threaded_without_touching_callers_booster(trained):
    booster = trained.booster.copy()
    booster.set_param({"nthread": 4})
    champion = XGBChampion(booster, NAMES)
    assert _nthread(champion.booster) == "1"
    assert _nthread(booster) == "4"


def test_seeded_training_is_deterministic(data, trained):
    X, y = data
    again = train_champion(X, y, NAMES, seed=3, n_estimators=20, max_depth=4)
    np.testing.assert_array_equal(
        trained.booster.inplace_predict(X), again.booster.inplace_predict(X)
    )
    assert again.thresholds == trained.thresholds
    assert again.metrics == trained.metrics


def test_thresholds_respect_fpr(data, trained):
    X, y = data
    review, decline = trained.thresholds["review"], trained.thresholds["decline"]
    assert decline >= review
    n_valid = trained.metrics["n_valid"]
    assert n_valid == 400 and trained.metrics["n_train"] == 1600
    scores = trained.booster.inplace_predict(X[-n_valid:])
    y_valid = y[-n_valid:]
    neg = scores[y_valid == 0]
    assert (neg >= review).mean() <= 0.02
    assert (neg >= decline).mean() <= 0.002
    assert trained.metrics["fpr_at_review"] <= 0.02
    assert trained.metrics["positives"] == int(y_valid.sum())
    assert 0.5 < trained.metrics["auc_roc"] <= 1.0


def test_review_threshold_is_lowest_allowed():
    # 100 negatives at 0.00..0.99, 2 may be flagged: 0.97 would flag a third.
    scores = np.r_[np.arange(100) / 100, 0.5]
    y = np.r_[np.zeros(100), 1]
    t = threshold_for_fpr(scores, y, 0.02)
    assert t == pytest.approx(0.98)
    assert (scores[:100] >= t).sum() == 2
    assert (scores[:100] >= 0.97).sum() == 3


def test_threshold_above_every_negative_holds_in_float32():
    scores = np.array([0.1, 0.2, 0.9, 0.3], dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    t = threshold_for_fpr(scores, y, 0.002)
    assert t > 0.9
    assert not (scores >= t).any()  # float32 comparison, threshold as a Python float
    assert not (scores.astype(np.float64) >= t).any()


def test_auc_extremes_and_ties():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auc_roc(s, y) == 1.0
    assert auc_roc(-s, y) == 0.0
    assert auc_roc(np.ones(5), y) == 0.5
    assert average_precision(s, y) == 1.0
    assert average_precision(np.ones(5), y) == pytest.approx(0.4)


def test_average_precision_known_value():
    # ranks: P N P -> precision 1 at recall .5, 2/3 at recall 1
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx(
        0.5 + 0.5 * 2 / 3
    )


def test_actions():
    thresholds = {"review": 0.5, "decline": 0.9}
    scores = np.array([0.1, 0.5, 0.7, 0.9, 1.0])
    expected = ["approve", "review", "review", "decline", "decline"]
    assert actions(scores, thresholds) == expected
    assert [action_for(float(s), thresholds) for s in scores] == expected
    with pytest.raises(ValueError):
        action_for(float("nan"), thresholds)


def test_training_needs_both_classes_in_validation():
    X, y = synthetic(500)
    y[-100:] = 0
    with pytest.raises(ValueError, match="validation"):
        train_champion(X, y, NAMES, n_estimators=2, valid_fraction=0.2)
