"""The canary guard: each halt reason, and counters that survive a restart."""

from __future__ import annotations

import orjson

from fraudstream.models.serving import CanaryGuard, CanaryPolicy

THRESHOLDS = {"review": 0.5, "decline": 0.9}


def _guard(version: str = "v0002", **policy: int) -> CanaryGuard:
    return CanaryGuard(version=version, policy=CanaryPolicy(**policy), thresholds=THRESHOLDS)


def test_decline_rate_against_the_champion_on_the_same_traffic() -> None:
    g = _guard(min_decisions=100)
    g.on_decisions(
        ["decline"] * 7 + ["approve"] * 92, ["decline"] * 2 + ["approve"] * 97, [0.1] * 99
    )
    assert g.verdict() is None  # 99 < min_decisions
    g.on_decisions(["approve"], ["approve"], [0.1])
    assert g.verdict() is not None and "decline rate 7.00%" in g.verdict()  # 7 % > 3 x 2 %
    calm = _guard(min_decisions=100)
    calm.on_decisions(
        ["decline"] * 5 + ["approve"] * 95, ["decline"] * 4 + ["approve"] * 96, [0.1] * 100
    )
    assert calm.verdict() is None


def test_false_positive_rate_on_matured_labels() -> None:
    g = _guard(min_labels=200)
    for i in range(200):
        g.on_label(0, 0.6 if i < 5 else 0.1)  # 2.5 % of legitimate ones flagged
        if i == 198:
            assert g.verdict() is None
    assert "false-positive rate 2.50%" in (g.verdict() or "")


def test_counters_survive_a_restart_and_belong_to_their_version() -> None:
    whole, first = _guard(min_decisions=100), _guard(min_decisions=100)
    actions = ["decline"] * 3 + ["approve"] * 57
    for g in (whole, first):
        g.on_decisions(actions, ["approve"] * 60, [0.2] * 60)
        g.on_label(0, 0.7)
    state = orjson.loads(orjson.dumps(first.to_state()))
    resumed = _guard(min_decisions=100)
    resumed.restore(state)
    for g in (whole, resumed):
        g.on_decisions(actions, ["approve"] * 60, [0.2] * 60)
    assert resumed.to_state() == whole.to_state() and resumed.verdict() == whole.verdict()
    assert whole.verdict() is not None  # 6 declines in 120 against none
    other = _guard("v0003", min_decisions=100)
    other.restore(state)
    assert other.decisions == 0 and other.negatives == 0
