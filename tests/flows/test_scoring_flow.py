"""The dataflow on the embedded broker: good events get one decision each, bad ones a DLQ record."""

from __future__ import annotations

import time

import orjson
from prometheus_client import REGISTRY

from fraudstream.demo import malformed_payloads
from fraudstream.flows.run import run_flow
from fraudstream.kafka import consume, produce
from tests.flows.conftest import recent_stream

DAY_MS = 86_400_000


def _dlq_metric(topic: str) -> float:
    """Sum of ``fraudstream_dlq_total`` over reasons for one dead-letter topic."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "fraudstream_dlq_total" and sample.labels.get("topic") == topic:
                total += sample.value
    return total


def test_every_good_event_decided_once_every_bad_one_dead_lettered(
    kafka_settings, topics, flow_config, tmp_path
):
    t = topics(tx_partitions=3)
    sim = recent_stream(seed=11, customers=200, days=3, days_ago=20)
    bad = malformed_payloads(int(time.time() * 1000))
    records = list(sim.transactions)
    for i, payload in enumerate(bad):
        records.insert(i * 37, payload)
    produce(
        kafka_settings,
        t.transactions,
        records,
        key=lambda r: r["account_id"] if isinstance(r, dict) else None,
    )
    produce(kafka_settings, t.labels, [*sim.labels[:50], b"not a label"])
    cfg = flow_config(t, tmp_path / "state", batch_size=200)
    run_flow(cfg, recovery_dir=tmp_path / "recovery", epoch_interval_s=0.5)
    assert _dlq_metric(t.transactions_dlq) == len(bad)
    assert _dlq_metric(t.labels_dlq) == 1

    decisions = consume(kafka_settings, t.decisions)
    ids = [orjson.loads(r.value)["tx_id"] for r in decisions]
    assert sorted(ids) == sorted(tx["tx_id"] for tx in sim.transactions)
    assert len(ids) == len(set(ids))
    first = orjson.loads(decisions[0].value)
    assert len(first["features"]) == len(cfg.feature_set.feature_names)
    assert first["action"] in {"approve", "review", "decline"}
    assert 0.0 <= first["champion"]["score"] <= 1.0
    assert first["feature_set"]["fingerprint"] == cfg.feature_set.fingerprint

    dlq = consume(kafka_settings, t.transactions_dlq)
    assert sorted(r.value for r in dlq) == sorted(bad)
    for rec in dlq:
        headers = dict(rec.headers)
        assert headers["dlq.reason"]
        assert headers["dlq.topic"].decode() == t.transactions
        assert int(headers["dlq.offset"]) >= 0
    label_dlq = consume(kafka_settings, t.labels_dlq)
    assert [r.value for r in label_dlq] == [b"not a label"]


def _entity_records(state_dir) -> dict[bytes, bytes]:
    from fraudstream.state.kernel import ENTITY_PREFIX
    from fraudstream.state.rocksdb import RocksKV

    out: dict[bytes, bytes] = {}
    for path in sorted((state_dir / "entities").iterdir()):
        kv = RocksKV(path)
        try:
            out.update(kv.iter_prefix(ENTITY_PREFIX))
        finally:
            kv.close()
    return out


def test_held_back_state_writes_reach_the_store_when_the_input_ends(
    kafka_settings, topics, flow_config, tmp_path
):
    """Histories are written behind (``state_write_behind_ms``): whatever was held back is
    written by the snapshot that ends the run, so the store ends as writing after every batch
    leaves it."""
    import dataclasses

    from fraudstream.flows.scoring import close_stores

    t = topics(tx_partitions=2)
    sim = recent_stream(seed=5, customers=60, days=2, days_ago=10)
    produce(kafka_settings, t.transactions, sim.transactions, key=lambda r: r["account_id"])
    stores = {}
    for write_behind_ms in (0, 3_600_000):  # every batch; never during the run
        cfg = dataclasses.replace(
            flow_config(t, tmp_path / f"state-{write_behind_ms}", batch_size=50),
            state_write_behind_ms=write_behind_ms,
        )
        run_flow(cfg, recovery_dir=None)
        close_stores()
        stores[write_behind_ms] = _entity_records(cfg.state_dir)
    assert len(stores[0]) >= len({tx["account_id"] for tx in sim.transactions})
    assert stores[3_600_000] == stores[0]
