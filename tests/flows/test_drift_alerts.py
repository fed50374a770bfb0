"""Drift alerts from the running flow, on the broker: each injected drift is reported, after it
happened and for what changed; a stationary stream raises no distribution alert.

A scenario shares one simulated history: a champion trained on days 38-60 (after the default
set's 38-day horizon, so its drift reference holds warm features), then the flow decides every day
(its state needs the history; the monitor skips the champion's warm-up and in-sample days). The
simulator's drift switches act from day 70 and leave the days before unchanged, so one champion
serves every variant.

``make test`` runs the small scenario (300 customers, 80 days): distribution detectors only, since
on so few customers frauds come in bursts that the ADWIN detectors rightly see as changes of the
mean. ``make soak`` adds the large one (1,500 customers, 90 days), where a stationary stream raises
nothing above ``info`` and each kind of drift, the label drift included, is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from fraudstream.flows.run import run_flow
from fraudstream.flows.scoring import FlowConfig, Topics
from fraudstream.kafka import consume
from fraudstream.replay.training import train_from_streams
from fraudstream.simulate import SimConfig, generate
from fraudstream.state.features import default_feature_set
from tests.flows.conftest import DAY_MS, load_history

pytestmark = pytest.mark.kafka

TRAIN_FROM, TRAIN_TO, DRIFT_AT = 38, 60, 70


@dataclass(frozen=True)
class Scenario:
    customers: int
    days: int
    seed: int = 12

    def sim(self, start_ms: int, kind: str | None) -> Any:
        base = {
            "seed": self.seed,
            "n_customers": self.customers,
            "n_terminals": 2 * self.customers,
            "days": self.days,
            "start_ms": start_ms,
        }
        if kind is None:
            return generate(SimConfig(**base))
        return generate(SimConfig(**base, drift_at_day=DRIFT_AT, drift_kinds=(kind,)))


SMALL = Scenario(customers=300, days=80)
LARGE = Scenario(customers=1500, days=90)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``trained(scenario)``: (first day's start, registry with the scenario's champion)."""
    done: dict[Scenario, tuple[int, Path]] = {}

    def make(scenario: Scenario) -> tuple[int, Path]:
        if scenario not in done:
            start = (int(time.time() * 1000) // DAY_MS - scenario.days - 5) * DAY_MS
            sim = scenario.sim(start, None)
            registry = tmp_path_factory.mktemp("drift-registry")
            fs = default_feature_set()
            assert TRAIN_FROM * DAY_MS >= fs.horizon_ms()
            train_from_streams(
                sim.transactions,
                sim.labels,
                fs,
                registry,
                n_estimators=50,
                train_from_ms=start + TRAIN_FROM * DAY_MS,
                train_to_ms=start + TRAIN_TO * DAY_MS,
            )
            done[scenario] = (start, registry)
        return done[scenario]

    return make


def _alerts(
    kafka_settings: Any, topics: Any, trained: Any, tmp_path: Path, scenario: Scenario, kind: Any
) -> tuple[int, list[dict[str, Any]]]:
    start, registry = trained(scenario)
    sim = scenario.sim(start, kind)
    t: Topics = topics(4)
    load_history(kafka_settings, t, sim)
    cfg = FlowConfig(
        kafka=kafka_settings,
        feature_set=default_feature_set(),
        model_registry=registry,
        state_dir=tmp_path / "state",
        topics=t,
        partitions=4,
        tail=False,
    )
    run_flow(cfg, recovery_dir=None, epoch_interval_s=1.0)
    return start, [orjson.loads(r.value) for r in consume(kafka_settings, t.alerts)]


def _firing(alerts: list[dict[str, Any]], detector: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["detector"] == detector and a["state"] == "firing"]


def _check_distribution_drift(
    start: int, alerts: list[dict[str, Any]], must: set[str], may: tuple[str, ...]
) -> None:
    drift_ms = start + DRIFT_AT * DAY_MS
    features = _firing(alerts, "feature_psi")
    fired = {a["feature"] for a in features}
    assert must <= fired, sorted(fired)
    assert all(any(p in f for p in may) for f in fired), sorted(fired)
    # every period that fired holds events from after the change
    assert all(a["window"]["to_ms"] >= drift_ms for a in features), features
    for a in alerts:
        assert a["kind"] in ("feature_drift", "score_drift", "performance"), a
        assert a["runbook"].startswith("docs/runbook.md#")


# legitimate amounts x1.6: the amount and every amount aggregate
AMOUNT = (
    "amount",
    {"amount", "account_mean_24h", "terminal_sum_1h"},
    ("amount", "_sum_", "_mean_", "_std_", "zscore"),
)
# a new fraud pattern (new devices and countries, bursts on terminals)
NEW_PATTERN = (
    "new-pattern",
    {"account_new_device_id", "account_new_country"},
    ("_new_", "_count_"),
)


def test_a_stationary_stream_raises_no_distribution_alert(
    kafka_settings, topics, trained, tmp_path
) -> None:
    start, alerts = _alerts(kafka_settings, topics, trained, tmp_path, SMALL, None)
    assert _firing(alerts, "feature_psi") == [] and _firing(alerts, "score_psi") == []
    # nothing before the champion's training window ended: in-sample days are not compared
    assert all(a["first_event_ms"] >= start + TRAIN_TO * DAY_MS for a in alerts), alerts


@pytest.mark.parametrize(("kind", "must", "may"), [AMOUNT, NEW_PATTERN])
def test_injected_drift_is_reported_for_what_changed_after_it_happened(
    kafka_settings, topics, trained, tmp_path, kind, must, may
) -> None:
    start, alerts = _alerts(kafka_settings, topics, trained, tmp_path, SMALL, kind)
    _check_distribution_drift(start, alerts, must, may)


@pytest.mark.soak
@pytest.mark.parametrize("kind", [None, "amount", "new-pattern", "label"])
def test_at_scale_each_drift_is_reported_and_a_stationary_stream_only_informs(
    kafka_settings, topics, trained, tmp_path, kind
) -> None:
    start, alerts = _alerts(kafka_settings, topics, trained, tmp_path, LARGE, kind)
    above_info = [a for a in alerts if a["severity"] != "info"]
    if kind is None:
        assert above_info == [], above_info
    elif kind == "label":  # fewer chargebacks, reviews that say fraud: the champion's errors rise
        assert [a["detector"] for a in above_info if a["state"] == "firing"] == ["error_adwin"]
    else:
        must, may = {"amount": AMOUNT[1:], "new-pattern": NEW_PATTERN[1:]}[kind]
        _check_distribution_drift(start, alerts, must, may)
