"""Kafka I/O helpers, settings rendering and Bytewax's connectors against a real broker."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import orjson
import pytest
from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

from fraudstream.broker import TANSU_BIN_ENV, BrokerError, EmbeddedBroker, probe_metadata
from fraudstream.kafka import (
    KafkaSettings,
    Record,
    consume,
    create_topics,
    end_offsets,
    produce,
)

PASSWORD = "s3cr3t-Pa55word"


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def _events(n: int, accounts: int = 37) -> list[dict[str, object]]:
    return [
        {"account_id": f"acct-{i % accounts}", "seq": i, "amount_cents": i * 7} for i in range(n)
    ]


def _partition_by_key(records: list[Record]) -> dict[bytes | None, set[int]]:
    parts: dict[bytes | None, set[int]] = defaultdict(set)
    for r in records:
        parts[r.key].add(r.partition)
    return parts


# --- against the broker -------------------------------------------------------------------


def test_create_topics_is_idempotent(kafka_settings: KafkaSettings, unique_topic) -> None:
    topic = unique_topic("create")
    create_topics(kafka_settings, {topic: 3})
    create_topics(kafka_settings, {topic: 3})  # "already exists" is not an error
    assert end_offsets(kafka_settings, topic) == {0: 0, 1: 0, 2: 0}


def test_produce_consume_keyed_lz4_roundtrip(kafka_settings: KafkaSettings, unique_topic) -> None:
    topic = unique_topic("roundtrip")
    create_topics(kafka_settings, {topic: 3})
    events = _events(1_000)
    seen_progress: list[int] = []

    sent = produce(
        kafka_settings,
        topic,
        events,
        key=lambda e: e["account_id"],
        compression="lz4",
        progress=seen_progress.append,
    )

    assert sent == 1_000
    assert seen_progress[-1] == 1_000
    # Counts every record of the last batch (Tansu's ListOffsets alone says 1 per batch).
    assert sum(end_offsets(kafka_settings, topic).values()) == 1_000
    records = consume(kafka_settings, topic, timeout_s=30)
    assert sorted(r.json()["seq"] for r in records) == list(range(1_000))
    for r in records:
        assert r.key == r.json()["account_id"].encode()
    by_key = _partition_by_key(records)
    assert all(len(parts) == 1 for parts in by_key.values()), by_key
    assert {r.partition for r in records} == {0, 1, 2}
    for partition in range(3):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == sorted(offsets)


def test_consume_max_records_and_bytes_values(kafka_settings: KafkaSettings, unique_topic) -> None:
    topic = unique_topic("bytes")
    create_topics(kafka_settings, {topic: 1})
    assert produce(kafka_settings, topic, [b"a", b"b", b"c"], compression=None) == 3

    records = consume(kafka_settings, topic, max_records=2, timeout_s=30)

    assert [(r.offset, r.value, r.key) for r in records] == [(0, b"a", None), (1, b"b", None)]
    assert consume(kafka_settings, topic, from_beginning=False, timeout_s=30) == []


def test_rate_limited_produce_is_paced(kafka_settings: KafkaSettings, unique_topic) -> None:
    topic = unique_topic("paced")
    create_topics(kafka_settings, {topic: 1})
    count, rate = 25, 200.0

    started = time.monotonic()
    sent = produce(kafka_settings, topic, _events(count), rate_per_s=rate)
    elapsed = time.monotonic() - started

    assert sent == count
    assert elapsed >= (count - 1) / rate  # record i is not sent before start + i / rate
    assert len(consume(kafka_settings, topic, timeout_s=30)) == count


def test_consume_until_waits_then_times_out(kafka_settings: KafkaSettings, unique_topic) -> None:
    topic = unique_topic("until")
    create_topics(kafka_settings, {topic: 2})
    produce(kafka_settings, topic, _events(3))

    got = consume(kafka_settings, topic, until=lambda rs: len(rs) >= 3, timeout_s=30)
    assert len(got) == 3
    with pytest.raises(TimeoutError, match=r"saw 3 records"):
        consume(kafka_settings, topic, until=lambda rs: len(rs) >= 10, timeout_s=1.0)


def test_bytewax_kafka_source_and_sink(kafka_settings: KafkaSettings, unique_topic) -> None:
    """Bytewax's own connectors read to the end (tail=False), map, and write to the broker."""
    src, dst = unique_topic("bw-in"), unique_topic("bw-out")
    create_topics(kafka_settings, {src: 3, dst: 3})
    events = _events(300)
    produce(kafka_settings, src, events, key=lambda e: e["account_id"])

    def double(msg: KafkaSourceMessage[bytes | None, bytes | None]) -> KafkaSinkMessage:
        assert msg.value is not None
        event = orjson.loads(msg.value)
        event["doubled"] = event["amount_cents"] * 2
        return KafkaSinkMessage(msg.key, orjson.dumps(event))

    brokers = kafka_settings.bootstrap_servers.split(",")
    flow = Dataflow("kafka_io_smoke")
    inp = op.input(
        "in",
        flow,
        KafkaSource(
            brokers,
            [src],
            tail=False,
            add_config=kafka_settings.confluent_config(),
            batch_size=100,
        ),
    )
    out = op.map("double", inp, double)
    op.output(
        "out",
        out,
        KafkaSink(brokers, dst, add_config=kafka_settings.confluent_config(producer=True)),
    )

    # run_main blocks; a watchdog thread turns "tail=False never stops" into a failure.
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_main(flow)
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "bytewax flow with KafkaSource(tail=False) did not stop"
    assert not errors, errors

    records = consume(kafka_settings, dst, timeout_s=30)
    expected = sorted((e["seq"], e["amount_cents"] * 2) for e in events)
    assert sorted((r.json()["seq"], r.json()["doubled"]) for r in records) == expected
    # The murmur2 partitioner in confluent_config(producer=True) keeps aiokafka's placement.
    inputs = _partition_by_key(consume(kafka_settings, src, timeout_s=30))
    assert _partition_by_key(records) == inputs


# --- the embedded broker itself -----------------------------------------------------------


@pytest.mark.kafka
def test_embedded_broker_lifecycle(tmp_path) -> None:
    log_path = tmp_path / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        host, port = broker.bootstrap_servers.split(":")
        assert host == "127.0.0.1"
        assert broker.is_running()
        assert broker.startup_s is not None and broker.startup_s < 30
        assert probe_metadata(host, int(port))
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port=int(port)).start()
    assert not broker.is_running()
    assert not probe_metadata(host, int(port))
    assert log_path.read_text()  # broker output went to the file


def test_embedded_broker_bad_binary_override(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(TANSU_BIN_ENV, str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerError, match=TANSU_BIN_ENV):
        EmbeddedBroker().start()


@pytest.mark.kafka
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_DEATHSIG is Linux-only")
def test_embedded_broker_dies_with_its_parent() -> None:
    script = (
        "from fraudstream.broker import EmbeddedBroker\n"
        "import sys\n"
        "b = EmbeddedBroker().start()\n"
        "print(b.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        broker_pid = int(parent.stdout.readline())
        assert os.path.exists(f"/proc/{broker_pid}")
    finally:
        parent.kill()  # SIGKILL: no atexit, no finally in the parent
        parent.wait()

    def gone() -> bool:
        try:
            with open(f"/proc/{broker_pid}/stat") as f:
                return f.read().split(") ")[1].startswith("Z")  # zombie until reaped
        except FileNotFoundError:
            return True

    _wait_until(gone, 10, f"broker pid {broker_pid} to exit after its parent was killed")


# --- settings, no broker ------------------------------------------------------------------


def _sasl_ssl() -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="scorer",
        sasl_password=PASSWORD,
        ssl_cafile="/etc/kafka/ca.pem",
    )


def test_settings_never_show_the_password() -> None:
    settings = _sasl_ssl()
    for text in (repr(settings), str(settings), repr(settings.redacted()), f"{settings}"):
        assert PASSWORD not in text
        assert "***" in text
    assert settings.redacted()["sasl_username"] == "scorer"


def test_confluent_config_for_sasl_ssl() -> None:
    assert _sasl_ssl().confluent_config() == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "client.id": "fraudstream",
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "scorer",
        "sasl.password": PASSWORD,
        "ssl.ca.location": "/etc/kafka/ca.pem",
    }
    assert _sasl_ssl().confluent_config(producer=True)["partitioner"] == "murmur2_random"


def test_aiokafka_kwargs_for_sasl_ssl() -> None:
    # No cafile: create_ssl_context would read it; the system trust store is used instead.
    settings = KafkaSettings(
        bootstrap_servers="b1:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="scorer",
        sasl_password=PASSWORD,
    )
    kwargs = settings.aiokafka_kwargs()
    context = kwargs.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert kwargs == {
        "bootstrap_servers": "b1:9093",
        "client_id": "fraudstream",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "scorer",
        "sasl_plain_password": PASSWORD,
    }
    assert "ssl_context" not in KafkaSettings(bootstrap_servers="x:1").aiokafka_kwargs()


def test_settings_from_env() -> None:
    env = {
        "FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS": "b1:9093",
        "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "FRAUDSTREAM_KAFKA_SASL_MECHANISM": "scram-sha-256",
        "FRAUDSTREAM_KAFKA_SASL_USERNAME": "scorer",
        "FRAUDSTREAM_KAFKA_SASL_PASSWORD": PASSWORD,
        "FRAUDSTREAM_KAFKA_SSL_CAFILE": "",
    }
    assert KafkaSettings.from_env(environ=env) == KafkaSettings(
        bootstrap_servers="b1:9093",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="scorer",
        sasl_password=PASSWORD,
    )
    with pytest.raises(ValueError, match="BOOTSTRAP_SERVERS"):
        KafkaSettings.from_env(environ={})


@pytest.mark.parametrize(
    "overrides",
    [
        {"security_protocol": "TLS"},
        {"security_protocol": "SASL_SSL"},  # no mechanism or credentials
        {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI"},
        {"sasl_username": "scorer"},  # SASL field without a SASL protocol
        {"ssl_cafile": "/ca.pem"},  # SSL file without an SSL protocol
        {"bootstrap_servers": " "},
    ],
)
def test_settings_reject_inconsistent_config(overrides: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        KafkaSettings(**{"bootstrap_servers": "b1:9092", **overrides})
