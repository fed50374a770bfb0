"""The rules and dashboards against real servers: a Prometheus server (Debian package
``prometheus``) on loopback scrapes two ``fraudstream run`` processes on the session's broker, a
healthy one and one whose input topic does not exist, and evaluates deploy/prometheus/alerts.yml
with every ``for:`` shortened to 1 s. Everything waits on a condition read from Prometheus'
HTTP API, with a deadline.

The tests of this module share the sidecars and the server; the last one freezes the healthy
sidecar (SIGSTOP) and thaws it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from uuid import uuid4

import pytest

from fraudstream.kafka import produce
from tests.flows.conftest import recent_stream
from tests.ops.conftest import (
    DASHBOARDS,
    Prometheus,
    Sidecar,
    dashboard_exprs,
    exposition_names,
    grafana_to_promql,
    load_rules,
    metric_names,
    ops_topics,
    shortened_rules,
    start_sidecar,
    stop_sidecar,
    tool,
    wait_until,
)

# Families whose series appear only when their event happens (a labelled counter before its
# first increment, a condition that is not failing): declared on /metrics, maybe without samples.
EVENT_DRIVEN = {
    "fraudstream_dlq_total",
    "fraudstream_model_failures_total",
    "fraudstream_input_offset_resets_total",
    "fraudstream_input_offset_out_of_range",
    "fraudstream_input_errors_total",
    "fraudstream_sink_delivery_errors_total",
    "fraudstream_processing_errors_total",
    "fraudstream_readiness_failing",
    "fraudstream_stalled",
}
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"}


@pytest.fixture(scope="module")
def stream():
    """Transactions that end in the recent past, in two halves (each decided exactly once),
    and the labels of the first half already issued."""
    sim = recent_stream(seed=7, customers=60, days=3, days_ago=12)
    txs = sim.transactions
    half = len(txs) // 2
    first = {tx["tx_id"] for tx in txs[:half]}
    now_ms = int(time.time() * 1000)
    labels = [x for x in sim.labels if x["tx_id"] in first and x["label_time_ms"] < now_ms]
    assert labels
    return txs[:half], txs[half:], labels


def _produce(settings, topic: str, txs) -> None:
    produce(settings, topic, txs, key=lambda tx: tx["account_id"])


@pytest.fixture(scope="module")
def sidecar(kafka_settings, registry, tmp_path_factory, stream) -> Iterator[Sidecar]:
    """A healthy sidecar that has decided the first half of the stream."""
    t = ops_topics(kafka_settings, f"ops-{uuid4().hex[:8]}")
    sidecar = start_sidecar(kafka_settings, registry, tmp_path_factory.mktemp("healthy"), t)
    try:
        _produce(kafka_settings, t.transactions, stream[0])
        produce(kafka_settings, t.labels, stream[2], key=lambda label: label["tx_id"])
        n = len(stream[0])
        wait_until(
            f"the sidecar to decide {n} transactions",
            lambda: _decided(sidecar.metrics()),
            lambda decided: decided >= n,
        )
        yield sidecar
    finally:
        stop_sidecar(sidecar)


@pytest.fixture(scope="module")
def unready(kafka_settings, registry, tmp_path_factory) -> Iterator[Sidecar]:
    """A sidecar whose transactions topic does not exist: it runs, and stays unready."""
    t = ops_topics(kafka_settings, f"ops-{uuid4().hex[:8]}", with_transactions=False)
    sidecar = start_sidecar(kafka_settings, registry, tmp_path_factory.mktemp("unready"), t)
    try:
        yield sidecar
    finally:
        stop_sidecar(sidecar)


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    return tool("prometheus")


@pytest.fixture(scope="module")
def prometheus(prometheus_bin, sidecar, unready, tmp_path_factory) -> Iterator[Prometheus]:
    """Listed first, ``prometheus_bin`` skips (or fails) before the sidecars start."""
    server = Prometheus(
        prometheus_bin,
        tmp_path_factory.mktemp("prometheus"),
        [sidecar.target, unready.target],
        shortened_rules(),
    )
    try:
        yield server
    finally:
        server.stop()


def _decided(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("fraudstream_decisions_total{")
    )


def _sel(sidecar: Sidecar, **labels: str) -> str:
    pairs = {"job": "fraudstream", "instance": sidecar.target, **labels}
    return "{" + ", ".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


# --------------------------------------------------------------------------- the names


def test_every_metric_in_a_rule_or_a_dashboard_is_exported(sidecar):
    rules = load_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    wanted: dict[str, set[str]] = {}
    for rule in rules:
        for name in metric_names(rule["expr"]):
            wanted.setdefault(name, set()).add(rule.get("alert") or rule.get("record"))
    for path in sorted(DASHBOARDS.glob("*.json")):
        for title, expr in dashboard_exprs(path):
            for name in metric_names(expr):
                wanted.setdefault(name, set()).add(f"{path.name}: {title}")
    assert any(n.startswith("fraudstream_") for n in wanted)  # the extraction found names
    declared, _ = exposition_names(sidecar.metrics())
    unknown = {
        name: sorted(where)
        for name, where in wanted.items()
        if name not in declared and name not in recorded and name not in PROMETHEUS_OWN
    }
    assert not unknown, f"named in rules or dashboards, not exported by the sidecar: {unknown}"

    # Beyond the declaration, a sample: once the state has been snapshotted and labels matched.
    families = {n for n in wanted if n in declared}
    expected = {n for n in families if _family(n) not in {_family(e) for e in EVENT_DRIVEN}}

    def silent() -> set[str]:
        return expected - exposition_names(sidecar.metrics())[1]

    wait_until("a sample of every metric the rules and dashboards read", silent, lambda s: not s)


def _family(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        name = name.removesuffix(suffix)
    return name


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_both_sidecars(prometheus, sidecar, unready):
    def targets() -> dict[str, str]:
        active = prometheus.api("targets", state="active")["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active}

    expected = {sidecar.target: "up", unready.target: "up"}
    wait_until("both targets up", targets, lambda seen: seen == expected)


def test_key_series_exist_and_move(prometheus, sidecar, kafka_settings, stream):
    first, second = len(stream[0]), len(stream[1])
    decided = f"sum(fraudstream_decisions_total{_sel(sidecar)})"
    wait_until(
        f"Prometheus to see {first} decisions",
        lambda: prometheus.value(decided),
        lambda seen: seen is not None and seen >= first,
    )
    for expr in (
        f"fraudstream_ready{_sel(sidecar)} == 1",
        f"fraudstream_live{_sel(sidecar)} == 1",
        f"fraudstream_model_info{_sel(sidecar, stage='production')} == 1",
        f"fraudstream_consumer_lag_records{_sel(sidecar, topic=sidecar.topics.transactions)}",
        f"fraudstream_state_keys{_sel(sidecar, family='entities')} > 0",
        f"fraudstream_drift_statistic{_sel(sidecar, name='score_psi')}",
    ):
        assert prometheus.query(expr), f"no series for {expr}"

    _produce(kafka_settings, sidecar.topics.transactions, stream[1])
    total = first + second
    seen = wait_until(
        f"Prometheus to see {total} decisions",
        lambda: prometheus.value(decided),
        lambda seen: seen is not None and seen >= total,
    )
    assert seen == total  # each transaction decided once
    read = f"fraudstream_events_total{_sel(sidecar, topic=sidecar.topics.transactions)}"
    wait_until(f"{total} records read", lambda: prometheus.value(read), lambda v: v == total)
    latencies = f"fraudstream_event_to_decision_seconds_count{_sel(sidecar)}"
    wait_until(f"{total} latencies", lambda: prometheus.value(latencies), lambda v: v == total)
    rate = 'job:fraudstream_decisions:rate5m{job="fraudstream"}'
    wait_until("the recorded decision rate", lambda: prometheus.value(rate), lambda v: v and v > 0)


def test_rules_evaluate_without_errors(prometheus, sidecar):
    def evaluated() -> list[dict]:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        done = all(not r["lastEvaluation"].startswith("0001-") for r in rules)
        return rules if done else []

    rules = wait_until("every rule evaluated once", evaluated)
    assert len(rules) == len(load_rules())
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken


def test_dashboard_queries_run_on_prometheus(prometheus, sidecar):
    failures = {}
    count = 0
    for path in sorted(DASHBOARDS.glob("*.json")):
        for title, expr in dashboard_exprs(path):
            count += 1
            try:
                prometheus.query(grafana_to_promql(expr))
            except AssertionError as exc:
                failures[f"{path.name}: {title}"] = str(exc)
    assert count >= 25
    assert not failures, failures


def test_an_unready_sidecar_fires_not_ready_with_its_reason(prometheus, sidecar, unready):
    missing = f"input:{unready.topics.transactions}"
    alerts = wait_until(
        "FraudstreamNotReady for the sidecar without its input topic",
        lambda: prometheus.firing("FraudstreamNotReady", instance=unready.target),
    )
    assert missing in alerts[0]["annotations"]["description"]
    assert alerts[0]["labels"]["severity"] == "critical"
    assert prometheus.value(f"fraudstream_readiness_failing{_sel(unready, condition=missing)}")
    assert not prometheus.firing("FraudstreamNotReady", instance=sidecar.target)


def test_dead_letters_fire_the_dead_letter_alert(prometheus, sidecar, kafka_settings):
    topic = sidecar.topics.transactions
    garbage = [f"not json {i}".encode() for i in range(30)]
    dlq = f"sum(fraudstream_dlq_total{_sel(sidecar)})"
    before = prometheus.value(dlq) or 0
    produce(kafka_settings, topic, garbage[:10])
    # a counter series first seen at its current value shows no rate: let Prometheus see it
    # once, then send more
    wait_until(
        "the first dead letters",
        lambda: prometheus.value(dlq),
        lambda seen: seen is not None and seen >= before + 10,
    )
    produce(kafka_settings, topic, garbage[10:])
    alerts = wait_until(
        "FraudstreamDeadLetters",
        lambda: prometheus.firing("FraudstreamDeadLetters", job="fraudstream"),
    )
    assert alerts[0]["annotations"]["runbook_url"] == "docs/runbook.md#dead-letters"
    reasons = prometheus.query(f"fraudstream_dlq_total{_sel(sidecar)}")
    assert {r["metric"]["topic"] for r in reasons} == {sidecar.topics.transactions_dlq}


def test_a_frozen_sidecar_fires_the_liveness_alert_and_recovers(prometheus, sidecar):
    """SIGSTOP: the process holds its port and answers nothing, as a deadlocked one would."""
    up = f"up{_sel(sidecar)}"
    wait_until("the sidecar scraped", lambda: prometheus.value(up), lambda v: v == 1)
    os.kill(sidecar.process.pid, signal.SIGSTOP)
    try:
        alerts = wait_until(
            "FraudstreamDown for the frozen sidecar",
            lambda: prometheus.firing("FraudstreamDown", instance=sidecar.target),
        )
        assert alerts[0]["labels"]["severity"] == "critical"
        assert alerts[0]["annotations"]["runbook_url"] == "docs/runbook.md#stuck"
        assert prometheus.value(up) == 0
    finally:
        os.kill(sidecar.process.pid, signal.SIGCONT)
    wait_until("the thawed sidecar scraped again", lambda: prometheus.value(up), lambda v: v == 1)
    wait_until(
        "FraudstreamDown to resolve",
        lambda: prometheus.firing("FraudstreamDown", instance=sidecar.target),
        lambda firing: not firing,
    )
    assert sidecar.process.poll() is None
