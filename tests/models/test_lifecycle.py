"""The promotion gate's rules, as pure functions of evaluations."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from fraudstream.models import XGBChampion
from fraudstream.models.lifecycle import (
    DAY_MS,
    GatePolicy,
    ModelEvaluation,
    check_promotion,
    evaluation_window,
    measure_scoring_cost_us,
    rows_digest,
    trained_until_ms,
)
from fraudstream.models.train import train_champion

T0 = 1_767_225_600_000  # 2026-01-01


def evaluation(**changes) -> ModelEvaluation:
    base = ModelEvaluation(
        version="v0002",
        kind="xgboost",
        review_threshold=0.5,
        window_from_ms=T0 + 10 * DAY_MS,
        window_to_ms=T0 + 17 * DAY_MS,
        transactions=1000,
        frauds=20,
        recall_at_review=0.60,
        fpr_at_review=0.015,
        alerts=27,
        auc_roc=0.9,
        average_precision=0.5,
        cost_us_per_row=4.0,
        rows=rows_digest(["a", "b"]),
        trained_until_ms=T0 + 10 * DAY_MS - 1,
    )
    return dataclasses.replace(base, **changes)


PRODUCTION = evaluation(version="v0001", recall_at_review=0.55, trained_until_ms=None)
POLICY = GatePolicy()


def failed(decision) -> list[str]:
    return [c.name for c in decision.checks if not c.passed]


def test_a_better_candidate_passes():
    decision = check_promotion(evaluation(), PRODUCTION, POLICY, to="canary")
    assert decision.accepted and failed(decision) == []
    assert [c.name for c in decision.checks] == [
        "frauds",
        "same_transactions",
        "recall",
        "fpr",
        "cost",
        "out_of_sample",
    ]
    assert "recall 60.00 % (production v0001 55.00 %)" in decision.summary()
    assert decision.to_json()["accepted"] is True


def test_equal_recall_is_not_worse():
    decision = check_promotion(evaluation(recall_at_review=0.55), PRODUCTION, POLICY, to="canary")
    assert decision.accepted


def test_a_worse_candidate_is_refused_with_the_numbers():
    decision = check_promotion(
        evaluation(recall_at_review=0.50), PRODUCTION, POLICY, to="production"
    )
    assert not decision.accepted and failed(decision) == ["recall"]
    assert "50.00 % vs production v0001's 55.00 %" in decision.summary()


@pytest.mark.parametrize(
    ("changes", "policy", "check"),
    [
        ({"fpr_at_review": 0.021}, POLICY, "fpr"),
        ({"fpr_at_review": 0.0101}, GatePolicy(max_fpr=0.01), "fpr"),
        ({"fpr_at_review": None}, POLICY, "fpr"),
        ({"cost_us_per_row": 30.0}, POLICY, "cost"),
        ({"cost_us_per_row": 3.01}, GatePolicy(max_cost_us=3.0), "cost"),
        ({"frauds": 0}, POLICY, "frauds"),
        ({"rows": rows_digest(["a", "c"])}, POLICY, "same_transactions"),
        ({"window_to_ms": T0 + 18 * DAY_MS}, POLICY, "same_transactions"),
        ({"trained_until_ms": T0 + 12 * DAY_MS}, POLICY, "out_of_sample"),
        ({"trained_until_ms": None}, POLICY, "out_of_sample"),
    ],
)
def test_each_rule_refuses_on_its_own(changes, policy, check):
    decision = check_promotion(evaluation(**changes), PRODUCTION, policy, to="canary")
    assert failed(decision) == [check] and not decision.accepted


def test_without_production_only_the_candidate_is_judged():
    decision = check_promotion(evaluation(recall_at_review=0.01), None, POLICY, to="production")
    assert decision.accepted
    assert "no production model" in decision.summary()
    assert [c.name for c in decision.checks] == ["frauds", "recall", "fpr", "cost", "out_of_sample"]


def test_policy_and_target_are_validated():
    with pytest.raises(ValueError):
        GatePolicy(max_fpr=0.0)
    with pytest.raises(ValueError):
        GatePolicy(max_cost_us=-1)
    with pytest.raises(ValueError, match="guards"):
        check_promotion(evaluation(), PRODUCTION, POLICY, to="shadow")


def test_evaluation_window_and_trained_until():
    as_of = T0 + 40 * DAY_MS
    assert evaluation_window(as_of, maturity_ms=8 * DAY_MS, days=7) == (
        T0 + 25 * DAY_MS,
        T0 + 32 * DAY_MS,
    )
    # never before the candidate's training data ends
    later = evaluation_window(as_of, maturity_ms=8 * DAY_MS, days=7, not_before_ms=T0 + 30 * DAY_MS)
    assert later == (T0 + 30 * DAY_MS, T0 + 32 * DAY_MS)
    with pytest.raises(ValueError, match="no matured window"):
        evaluation_window(as_of, maturity_ms=8 * DAY_MS, days=7, not_before_ms=T0 + 32 * DAY_MS)
    assert trained_until_ms({"training_window": {"from_ms": 1, "to_ms": 90}}) == 90
    assert trained_until_ms({"training_window": {"to_ms": 90, "requested_to_ms": 100}}) == 99
    online = {"training_window": {"requested_to_ms": 100, "learned_until_ms": 150}}
    assert trained_until_ms(online) == 150
    assert trained_until_ms({"training_window": None}) is None


def test_scoring_cost_is_measured_per_row_at_batch_256():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    model = train_champion(X, (X[:, 0] > 1).astype(int), ["a", "b", "c", "d"], n_estimators=3)
    ticks = itertools.count(step=0.5)  # every call to the clock: half a second later
    cost = measure_scoring_cost_us(
        XGBChampion(model.booster, ["a", "b", "c", "d"]),
        X,
        repeats=3,
        min_rows=512,
        clock=lambda: next(ticks),
    )
    assert cost == pytest.approx(0.5 / 512 * 1e6)  # one interval per pass of 512 rows
